"""The tree shows the DAG: tasks/ holds the stages, roleforge/ the building blocks, and no module grows past a size a
reader can hold."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = {"ingest", "validate", "label", "train", "evaluate", "promote", "tune", "report"}


def test_tasks_holds_the_stages_only_and_none_imports_deployments():
    tasks = ROOT / "tasks"
    assert {path.stem for path in tasks.glob("*.py")} - {"__init__"} == STAGES
    assert [path.name for path in tasks.rglob("*.py") if "roleforge.deployments" in path.read_text()] == []


def test_the_building_blocks_never_import_a_stage():
    """roleforge/ is what the stages use; only the command line and the benchmarks, which run stages, import them."""
    callers = {"cli", "bench"}
    blocks = [path for path in (ROOT / "roleforge").rglob("*.py") if path.relative_to(ROOT / "roleforge").parts[0] not in callers]
    assert [str(path.relative_to(ROOT)) for path in blocks if "roleforge.tasks" in path.read_text()] == []


def test_no_module_outside_the_tests_is_longer_than_a_reader_can_hold():
    folders = ("roleforge", "tasks", "flows", "deployments", "data_contracts")
    lengths = {str(path.relative_to(ROOT)): len(path.read_text().splitlines())
               for folder in folders for path in (ROOT / folder).rglob("*.py")}
    assert {path: lines for path, lines in lengths.items() if lines > 450} == {}


def test_sqlite_urls_are_parsed_in_one_place(tmp_path: Path):
    from roleforge.storage.urls import describe_url, sqlite_file

    assert sqlite_file(f"sqlite:///{tmp_path / 'store.db'}") == tmp_path / "store.db"
    assert sqlite_file("sqlite:///relative.db?timeout=5") == Path("relative.db")
    assert [sqlite_file(url) for url in ("sqlite://", "sqlite:///:memory:", "postgresql+psycopg://u@host/db")] == [None] * 3
    assert describe_url(f"sqlite:///{tmp_path / 'store.db'}") == str(tmp_path / "store.db")
    assert describe_url("postgresql+psycopg://user:secret@host/db") == "postgresql+psycopg://user:***@host/db"
