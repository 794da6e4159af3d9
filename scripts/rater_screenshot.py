"""Screenshot of the rater page (GET / of `roleforge api`) with an answer and its rating buttons, for the README.

    .venv/bin/python -m scripts.rater_screenshot --out docs/images/rater.png [--role ceo] [--prompt "..."]

Serves the default model with the environment's settings (ROLEFORGE_HOME, `.roleforge` by default, which holds the
converted model) in this process on 127.0.0.1, asks the role through the page in headless Chromium (Debian's
`chromium`, driven by Playwright) and saves what the page shows. It sends no feedback: the inbox stays as it was.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from roleforge.cli.common import command_settings
from roleforge.serving.app import create_app
from roleforge.serving.runner import server_thread
from roleforge.serving.service import Service

ANSWER_TIMEOUT_MS = 300_000


def screenshot(url: str, out: Path, role: str, prompt: str, max_tokens: int) -> None:
    """Pick the role, ask, wait for the streamed answer to finish, and save the page."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("rater_screenshot: chromium is not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 760}, device_scale_factor=1)
        page.goto(url)
        page.locator(f'[data-testid="role"][data-role="{role}"]').click()
        page.get_by_test_id("rater").fill("Ada")
        page.get_by_test_id("max-tokens").fill(str(max_tokens))
        page.get_by_test_id("prompt").fill(prompt)
        page.get_by_test_id("send").click()
        page.get_by_test_id("feedback").wait_for(timeout=ANSWER_TIMEOUT_MS)
        page.get_by_test_id("comment").fill("Weigh the factors and end with a recommendation.")
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--role", default="ceo")
    parser.add_argument("--prompt", default="Should we raise prices for the enterprise tier next quarter?")
    parser.add_argument("--max-tokens", type=int, default=120)
    args = parser.parse_args()
    service = Service(command_settings())  # as `roleforge api` reads them: tools' state under ROLEFORGE_HOME
    with server_thread(create_app(service)) as url:
        service.wait_ready(timeout_s=300)
        screenshot(url, args.out, args.role, args.prompt, args.max_tokens)
    print(f"screenshot: {args.out}")


if __name__ == "__main__":
    main()
