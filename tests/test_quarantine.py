"""Quarantine you can act on: a summary by reason and file, and a replay that stores exactly the lines that pass now,
once, keeps the others with their current reason, and is audited; an ingest appending meanwhile loses nothing."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from roleforge.config.settings import load_settings
from roleforge.ingest.quarantine import (UNREADABLE, QuarantineFile, locked_quarantine, quarantine_files,
                                         quarantine_summary)
from roleforge.ingest.quarantine_replay import replay_configured
from roleforge.ops import audit
from roleforge.ops.files import write_atomic
from roleforge.storage.schema import engine_for, feedback_for_role
from roleforge.tasks.ingest import ingest_configured

LINES = [
    {"agent_role": "ceo", "prompt": "Expand?", "response": "Decision: go.", "rating": 5},
    {"agent_role": "chief-executive", "prompt": "Merge?", "response": "Decision: no.", "rating": 4},
    {"agent_role": "chief-executive", "prompt": "Hire?", "response_a": "Decision: yes.", "response_b": "Hm.",
     "preference": "a", "rater": "u1"},
    {"agent_role": "ceo", "prompt": "Price?", "response": "Decision: up.", "rating": 9},
    {"agent_role": "cmo", "prompt": "Launch?", "response": "Audience: all.", "rating": 0},
]
UNKNOWN = "unknown role 'chief-executive'"


def write_feedback(tmp_path):
    path = tmp_path / "platform.jsonl"
    path.write_bytes(b"".join(json.dumps(row).encode() + b"\n" for row in LINES) + b'{"agent_role": "ceo", "prompt"\n')
    return path


def add_config(text):
    with open(os.environ["ROLEFORGE_CONFIG"], "a", encoding="utf-8") as config:
        config.write(text)


def test_replay_stores_exactly_what_passes_now_once(home, tmp_path):
    feedback = write_feedback(tmp_path)
    assert ingest_configured(load_settings(), [str(feedback)]).quarantined == 5
    summary = quarantine_summary(load_settings().path("quarantine"))
    assert summary["total"] == 5 and summary["by_file"] == {str(feedback): 5}
    assert sum(count for reason, count in summary["by_reason"].items() if UNKNOWN in reason) == 2

    add_config('\n[roles.ceo]\naliases = ["chief-executive"]\n[roles.cmo]\nsystem_prompt = "You are the CMO."\n')
    settings = load_settings()
    first = replay_configured(settings)
    assert first.model_dump() == {"replayed": 5, "ingested": 2, "duplicates": 0, "quarantined": 3}
    stored = {row["prompt"]: row for row in feedback_for_role(engine_for(settings.resolved_store_url), "ceo")}
    assert set(stored) == {"Expand?", "Merge?", "Hire?"}
    assert (stored["Merge?"]["source"], stored["Merge?"]["source_line"], stored["Hire?"]["source_line"]) == (
        str(feedback), 2, 3)

    reasons = quarantine_summary(settings.path("quarantine"))["by_reason"]
    assert sum(reasons.values()) == 3 and not any(UNKNOWN in reason for reason in reasons)
    # cmo is configured now: its line stays for the reason it fails for today, the rating
    assert any(reason.startswith("rating:") and "(+1 more)" not in reason for reason in reasons)
    assert not any("unknown role 'cmo'" in reason for reason in reasons)

    second = replay_configured(settings)
    assert second.model_dump() == {"replayed": 3, "ingested": 0, "duplicates": 0, "quarantined": 3}
    assert len(feedback_for_role(engine_for(settings.resolved_store_url), "ceo")) == 3
    replays = [entry for entry in audit.read(settings.home) if entry["action"] == "quarantine-replay"]
    assert [(entry["replayed"], entry["ingested"]) for entry in replays] == [(5, 2), (3, 0)]
    assert audit.verify(settings.home) is None


def test_a_line_quarantined_twice_is_stored_once_and_reason_filters(home, tmp_path):
    feedback = write_feedback(tmp_path)
    ingest_configured(load_settings(), [str(feedback)])
    ingest_configured(load_settings(), [str(feedback)])
    settings = load_settings()
    assert len(quarantine_files(settings.path("quarantine"))) == 2
    add_config('\n[roles.ceo]\naliases = ["chief-executive"]\n')
    report = replay_configured(load_settings(), reason=UNKNOWN)
    assert report.model_dump() == {"replayed": 4, "ingested": 2, "duplicates": 2, "quarantined": 0}
    assert quarantine_summary(settings.path("quarantine"))["total"] == 6, "lines the filter left out stay untouched"


def test_a_line_that_is_no_entry_is_kept_and_an_emptied_file_removed(home, tmp_path):
    feedback = tmp_path / "one.jsonl"
    feedback.write_text(json.dumps(LINES[1]) + "\n")
    settings = load_settings()
    path = ingest_configured(settings, [str(feedback)]).quarantine_path
    add_config('\n[roles.ceo]\naliases = ["chief-executive"]\n')
    assert replay_configured(load_settings()).ingested == 1
    assert quarantine_files(settings.path("quarantine")) == []

    ingest_configured(load_settings(), [str(tmp_path / "one.jsonl")])  # a duplicate now: no quarantine file
    with open(path, "ab") as torn:
        torn.write(b'{"source": "x", "li')
    assert quarantine_summary(settings.path("quarantine"))["by_reason"] == {UNREADABLE: 1}
    assert replay_configured(load_settings()).replayed == 0
    assert Path(path).read_bytes() == b'{"source": "x", "li'


def test_an_append_waiting_on_a_replay_goes_to_the_file_that_replaced_it(tmp_path):
    quarantine = QuarantineFile(tmp_path)
    quarantine.append(b'{"source": "a", "line": 1, "reason": "r", "raw": "x"}\n')
    late = b'{"source": "a", "line": 2, "reason": "r", "raw": "y"}\n'
    with locked_quarantine(quarantine.path, "rb") as handle:
        appending = threading.Thread(target=quarantine.append, args=(late,))
        appending.start()
        time.sleep(0.3)
        assert appending.is_alive(), "the append waits for the replay's lock"
        handle.read()
        write_atomic(quarantine.path, b"")  # the replay stored the first line and rewrote the file without it
    appending.join(timeout=10)
    assert quarantine.path.read_bytes() == late


def test_quarantine_commands_print_json(home, tmp_path):
    feedback = write_feedback(tmp_path)
    ingest_configured(load_settings(), [str(feedback)])

    def roleforge(*args):
        result = subprocess.run([sys.executable, "-m", "roleforge.cli", *args], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout.strip().splitlines()[-1])

    summary = roleforge("quarantine", "--json")
    assert (summary["total"], summary["by_file"]) == (5, {str(feedback): 5})
    add_config('\n[roles.ceo]\naliases = ["chief-executive"]\n')
    assert roleforge("quarantine", "replay", "--reason", "chief", "--json") == {
        "replayed": 2, "ingested": 2, "duplicates": 0, "quarantined": 0}
