"""The stages' heavy imports: one thread at a time, and every name the stages take from the lazy libraries."""

import re
import threading
from pathlib import Path

from roleforge import runtime

ROOT = Path(__file__).resolve().parent.parent
# The stages, and the building blocks they call.
STAGE_CODE = (ROOT / "tasks", ROOT / "roleforge")


def test_every_name_the_stages_take_from_transformers_peft_and_trl_is_imported_ahead():
    """A name missing from STAGE_IMPORTS would be imported lazily by whichever thread asks first, outside the lock."""
    taken: dict[str, set[str]] = {}
    for path in (path for folder in STAGE_CODE for path in folder.rglob("*.py")):
        for module, names in re.findall(r"^\s*from (transformers|peft|trl) import ([\w, ]+)$", path.read_text(), re.M):
            taken.setdefault(module, set()).update(name.strip() for name in names.split(","))
    assert taken["trl"] and taken["transformers"]
    assert {module: names - set(runtime.STAGE_IMPORTS[module]) for module, names in taken.items()} == {
        module: set() for module in taken}


def test_a_stage_waits_while_another_thread_imports():
    finished = threading.Event()
    with runtime._IMPORTING:  # the warm-up thread, importing
        stage = threading.Thread(target=lambda: (runtime.import_for_stages(("pandas",)), finished.set()))
        stage.start()
        assert not finished.wait(0.5)
    assert finished.wait(30)
    stage.join()
