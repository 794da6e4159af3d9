"""Screenshot of the Prefect UI's flow-run page after a run started like the UI's "Run" button, for the README.

    python -m scripts.ui_screenshot docs/prefect-flow-run.png [--role ceo]   (from the repository root)

Starts a Prefect server on 127.0.0.1 and `roleforge serve`, ingests the sample feedback of the role, presses Run on
the `train-role/on-demand` deployment through the API, waits for the run to finish, and lets headless Chromium
(Debian's `chromium` package) take the picture. Every process it starts, it ends.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.local_server import deployment, prefect_server, press_run, roleforge_serve, wait_for_run
from roleforge.sample import SAMPLE_FEEDBACK


def screenshot(url: str, out: Path, profile_dir: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("ui_screenshot: chromium is not installed (apt-get install chromium)")
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={profile_dir}", "--hide-scrollbars", "--window-size=1440,1000",
                    "--virtual-time-budget=15000", f"--screenshot={out}", url], check=True, capture_output=True, timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--role", default="ceo")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="roleforge-ui-"))
    subprocess.run([sys.executable, "-m", "roleforge.cli", "ingest", str(SAMPLE_FEEDBACK / f"{args.role}.jsonl")], check=True)
    with prefect_server(work / "prefect", work / "server.log") as api_url, roleforge_serve(api_url, work / "serve.log"):
        on_demand = deployment(api_url, "train-role/on-demand")
        run = press_run(api_url, on_demand["id"], {"run": {"role": args.role, "profile": "quick", "force": True}})
        finished = wait_for_run(api_url, run["id"], timeout_s=1200)
        print(f"flow run {run['name']}: {finished['state']['type']}")
        time.sleep(2)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        screenshot(api_url.removesuffix("/api") + f"/runs/flow-run/{run['id']}", args.out.resolve(), work / "chromium")
    print(f"screenshot: {args.out}")


if __name__ == "__main__":
    main()
