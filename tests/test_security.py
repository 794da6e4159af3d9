"""Security: only safetensors and no remote code are loaded, servers listen on loopback, secrets stay out of every
log, database and artifact, and one role's data never reaches another role."""

from __future__ import annotations

import json
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from roleforge.ops.errors import RoleforgeError
from tests.conftest import SAMPLE

SOURCE_DIRS = ["tasks", "flows", "roleforge", "deployments", "data_contracts"]
ROOT = Path(__file__).resolve().parents[1]


def source_files() -> list[Path]:
    return [path for folder in SOURCE_DIRS for path in (ROOT / folder).rglob("*.py")]


@pytest.mark.parametrize("pattern", [r"pickle\.loads?\(", r"torch\.load\(", r"read_pickle\(", r"joblib\.load\(",
                                     r"trust_remote_code\s*=\s*True", r"weights_only\s*=\s*False", r"yaml\.load\(",
                                     r"use_safetensors\s*=\s*False", r"safe_serialization\s*=\s*False"])
def test_no_unsafe_loading_in_the_source(pattern):
    offenders = [f"{path.relative_to(ROOT)}:{number}" for path in source_files()
                 for number, line in enumerate(path.read_text().splitlines(), start=1) if re.search(pattern, line)]
    assert not offenders, f"{pattern} in {offenders}"


def test_a_pickled_adapter_is_refused_without_being_unpickled(tmp_path, tiny_model_dir, monkeypatch):
    import torch

    from roleforge.models.base import attach_adapter, load_model

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "target_modules": ["q_proj"]}))
    torch.save({}, adapter / "adapter_model.bin")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("an adapter was unpickled"))
    with pytest.raises(RoleforgeError, match="holds no adapter_model.safetensors"):
        attach_adapter(load_model(tiny_model_dir), adapter)


def test_a_base_model_with_only_pickled_weights_is_refused(tmp_path, tiny_model_dir, monkeypatch):
    import torch

    from roleforge.models.base import load_model

    model_dir = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, model_dir)
    from safetensors.torch import load_file

    torch.save(load_file(model_dir / "model.safetensors"), model_dir / "pytorch_model.bin")
    (model_dir / "model.safetensors").unlink()
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("model weights were unpickled"))
    with pytest.raises(OSError, match="safetensors"):
        load_model(model_dir)


def test_remote_code_in_a_model_directory_never_runs(tmp_path, tiny_model_dir):
    from roleforge.models.base import load_model, load_tokenizer

    model_dir = tmp_path / "remote-code"
    shutil.copytree(tiny_model_dir, model_dir)
    marker = tmp_path / "code-ran"
    (model_dir / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                       "from transformers import LlamaForCausalLM as EvilForCausalLM\n")
    config = json.loads((model_dir / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "evil.EvilForCausalLM", "AutoConfig": "evil.EvilConfig"}
    (model_dir / "config.json").write_text(json.dumps(config))
    try:
        load_model(model_dir)
        load_tokenizer(model_dir)
    except (OSError, ValueError):
        pass  # refusing is as good as loading the built-in class: what matters is that evil.py never ran
    assert not marker.exists()


def listening(pid: int) -> set[str]:
    """The IP addresses a process and its children listen on."""
    import psutil

    process = psutil.Process(pid)
    addresses = set()
    for member in [process, *process.children(recursive=True)]:
        try:
            addresses |= {c.laddr.ip for c in member.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
        except psutil.NoSuchProcess:
            continue
    return addresses


@pytest.mark.slow
def test_prefect_servers_started_by_roleforge_listen_on_loopback_only(tmp_path):
    import os

    from prefect.server.api.server import SubprocessASGIServer

    from tests.support.local_server import free_port, prefect_server, wait_until

    with prefect_server(tmp_path / "prefect", tmp_path / "server.log") as api_url:
        import psutil

        port = api_url.rsplit(":", 1)[1].split("/")[0]
        (server,) = [p for p in psutil.Process(os.getpid()).children() if {"start", port} <= set(p.cmdline())]
        assert wait_until(lambda: listening(server.pid), 60, "the server to listen") == {"127.0.0.1"}
    ephemeral = SubprocessASGIServer(port=free_port())  # what `roleforge run` starts when no PREFECT_API_URL is set
    ephemeral.start(timeout=180)
    try:
        assert listening(ephemeral.server_process.pid) == {"127.0.0.1"}
    finally:
        ephemeral.stop()


TEACHER_KEY = "sk-roleforge-secret-7f3a9c1d"
AZURE_SECRET = "azure-client-secret-5e8b2a44"


class Teacher(BaseHTTPRequestHandler):
    """An OpenAI-compatible judge that records the bearer keys it was sent and prefers the longer answer."""

    keys: list[str] = []

    def do_POST(self):  # noqa: N802 - the http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Teacher.keys.append(self.headers.get("Authorization", ""))
        message = body["messages"][0]["content"]
        a = message.split("Answer A:\n", 1)[1].split("\n\nAnswer B:", 1)[0]
        b = message.split("\n\nAnswer B:\n", 1)[1]
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": "A" if len(a) >= len(b) else "B"}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload.encode())

    def log_message(self, *args):
        pass


def files_containing(folder: Path, secrets: list[str]) -> list[str]:
    found = []
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path} has {s[:8]}..." for s in secrets if s.encode() in data]
    return found


@pytest.mark.slow
def test_secrets_never_reach_logs_databases_params_or_artifacts(home, prefect_harness, tmp_path, monkeypatch, capfd, caplog):
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL

    from roleforge.config.settings import load_settings
    from roleforge.flows.params import SelfLearningRun
    from roleforge.flows.self_learning import self_learning
    from roleforge.registry.tracking import mlflow_client

    server = ThreadingHTTPServer(("127.0.0.1", 0), Teacher)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("ROLEFORGE_TEACHER__KIND", "http")
    monkeypatch.setenv("ROLEFORGE_TEACHER__URL", f"http://127.0.0.1:{server.server_address[1]}/v1")
    monkeypatch.setenv("ROLEFORGE_TEACHER__API_KEY", TEACHER_KEY)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", AZURE_SECRET)
    (tmp_path / "roleforge.toml").write_text((tmp_path / "roleforge.toml").read_text()
                                             + "\n[roles.ceo.gate]\nmin_accuracy_gain = -1.0\nmin_reward_accuracy = 0.0\n")
    try:
        outcomes = self_learning(SelfLearningRun(feedback=[str(SAMPLE / "ceo.jsonl")], roles=["ceo"], profile="quick"))
    finally:
        server.shutdown()
        server.server_close()
    assert outcomes["ceo"].trained
    assert Teacher.keys and set(Teacher.keys) == {f"Bearer {TEACHER_KEY}"}, "the teacher was not asked with the key"

    secrets = [TEACHER_KEY, AZURE_SECRET]
    assert files_containing(home, secrets) == []
    database = Path(PREFECT_API_DATABASE_CONNECTION_URL.value().split("///", 1)[1])
    assert files_containing(database.parent, secrets) == []
    client = mlflow_client(load_settings().resolved_tracking_uri)
    run = client.get_run(outcomes["ceo"].mlflow_run_id)
    assert not [v for v in [*run.data.params.values(), *run.data.tags.values()] if any(s in v for s in secrets)]
    out, err = capfd.readouterr()
    assert not [s for s in secrets if s in out + err + caplog.text]


def test_one_roles_feedback_never_reaches_another_roles_dataset(home):
    import pandas as pd

    from roleforge.cli import main
    from roleforge.config.settings import load_settings
    from roleforge.storage.schema import engine_for, feedback_for_role
    from roleforge.tasks.label import label_stored

    assert main(["ingest", str(SAMPLE)]) == 0
    settings = load_settings()
    engine = engine_for(settings.resolved_store_url)
    prompts = {}
    for role in settings.roles:
        rows = feedback_for_role(engine, role)
        assert rows and {row["agent_role"] for row in rows} == {role}
        prompts[role] = {row["prompt"] for row in rows}
        dataset, _ = label_stored(role, settings)
        frame = pd.concat([pd.read_parquet(Path(dataset.path) / f"{s}.parquet") for s in ("train", "held_out")])
        assert set(frame["role"]) == {role} and set(frame["prompt"]) <= prompts[role]
        used = {int(i) for ids in frame["feedback_ids"] for i in ids}
        assert used <= {row["id"] for row in rows}, f"{role}'s dataset uses another role's feedback"
