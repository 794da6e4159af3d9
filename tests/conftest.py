"""Shared fixtures: an isolated ROLEFORGE_HOME per test and a tiny random Llama built on the fly."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Prefect, MLflow and Hugging Face read their environment at import: isolate them before anything imports them.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="roleforge-tests-"))
from roleforge.runtime import prepare_environment  # noqa: E402

prepare_environment(_SESSION_DIR)
os.environ["PREFECT_LOGGING_LEVEL"] = "ERROR"

from tests.support.tiny_model import build_tiny_model  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "roleforge" / "sample" / "feedback"


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """A 2-layer random Llama and a BPE tokenizer trained on the sample data, saved like a real model."""
    return build_tiny_model(_SESSION_DIR / "tiny-llama", SAMPLE)


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path) -> Iterator[Path]:
    """A fresh ROLEFORGE_HOME whose base model is the tiny one, and a fast recipe for every role."""
    home = tmp_path / "home"
    config = tmp_path / "roleforge.toml"
    config.write_text(FAST_RECIPE)
    monkeypatch.setenv("ROLEFORGE_HOME", str(home))
    monkeypatch.setenv("ROLEFORGE_BASE_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("ROLEFORGE_CONFIG", str(config))
    yield home


FAST_RECIPE = "\n".join(
    f"""
[roles.{role}.training.dpo]
num_train_epochs = 1
per_device_train_batch_size = 4
gradient_accumulation_steps = 1
learning_rate = 0.01
save_steps = 2
[roles.{role}.training.data]
max_train_pairs = 16
max_eval_pairs = 16
replay_pairs = 4
""" for role in ("ceo", "cfo", "coo", '"tool-agent"'))


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL server (tests/support/postgres_server.py) for the whole session: the URL of its `postgres`
    database. Skipped where the machine has no PostgreSQL, unless ROLEFORGE_TEST_POSTGRES=required (CI), which makes
    that a failure."""
    from tests.support.postgres_server import NO_SERVER, server_binaries, throwaway_server

    if server_binaries() is None:
        if os.environ.get("ROLEFORGE_TEST_POSTGRES") == "required":
            pytest.fail(f"{NO_SERVER}, and ROLEFORGE_TEST_POSTGRES=required")
        pytest.skip(NO_SERVER)
    with throwaway_server() as url:
        yield url


@pytest.fixture()
def postgres_url(postgres_server: str, tmp_path: Path) -> Iterator[str]:
    """A new, empty database on the throwaway server, for one test (dropped after it)."""
    from roleforge.bench.ingest import scratch_database

    with scratch_database(postgres_server, tmp_path / "unused.db") as url:
        yield url
