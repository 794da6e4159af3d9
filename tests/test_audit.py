"""The audit log: every ingest, promotion decision and rollback is one appended line, and tampering shows."""

import json
import threading

import pytest

from roleforge.ops import audit
from roleforge.ops.errors import RoleforgeError


def test_entries_chain_and_an_edited_line_breaks_the_chain(tmp_path, monkeypatch):
    monkeypatch.setenv("ROLEFORGE_ACTOR", "nightly-ci")
    audit.record(tmp_path, "ingest", ingested=3)
    audit.record(tmp_path, "promote", role="ceo", version="2")
    audit.record(tmp_path, "rollback", role="ceo", champion_version="1")
    entries = audit.read(tmp_path)
    assert [e["action"] for e in entries] == ["ingest", "promote", "rollback"] and entries[0]["actor"] == "nightly-ci"
    assert entries[0]["prev"] == audit.GENESIS and audit.verify(tmp_path) is None
    path = audit.audit_path(tmp_path)
    lines = path.read_text().splitlines()
    lines[1] = json.dumps({**json.loads(lines[1]), "version": "9"})
    path.write_text("\n".join(lines) + "\n")
    assert audit.verify(tmp_path) == 3  # the entry after the edited one no longer matches
    path.write_text("\n".join([lines[0], lines[2]]) + "\n")
    assert audit.verify(tmp_path) == 2  # a deleted entry shows too


def test_concurrent_writers_keep_one_chain(tmp_path):
    threads = [threading.Thread(target=lambda n=n: [audit.record(tmp_path, "ingest", n=n, i=i) for i in range(20)]) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(audit.read(tmp_path)) == 80 and audit.verify(tmp_path) is None


def test_an_unwritable_log_is_a_clear_error(tmp_path):
    (tmp_path / "audit").write_text("a file where the folder should be")
    with pytest.raises(RoleforgeError, match="cannot write the audit log"):
        audit.record(tmp_path, "ingest")


def test_cli_ingest_is_audited(home):
    from tests.conftest import SAMPLE
    from tests.test_cli import last_json, roleforge

    roleforge("ingest", str(SAMPLE / "ceo.jsonl"))
    shown = last_json(roleforge("audit", "--json"))
    assert shown["chain_intact"] and [e["action"] for e in shown["entries"]] == ["ingest"]
    assert shown["entries"][0]["ingested"] == 330 and shown["entries"][0]["paths"] == [str(SAMPLE / "ceo.jsonl")]


def test_status_names_each_roles_latest_promotion_hold_or_rollback(tmp_path):
    from roleforge.cli.status import decision_line
    from roleforge.ops.status import last_decisions

    assert last_decisions(tmp_path) == {}
    audit.record(tmp_path, "ingest", ingested=3)
    audit.record(tmp_path, "promote", role="ceo", version="1", reason="accuracy gain +0.2")
    audit.record(tmp_path, "hold", role="ceo", version="2", reason="guardrail broken: lost 2 of 9")
    audit.record(tmp_path, "promote", role="cfo", version="1", reason="accuracy gain +0.1")
    audit.record(tmp_path, "promote", role="cfo", version="2", reason="accuracy gain +0.3")
    audit.record(tmp_path, "rollback", role="cfo", champion_version="1", previous_version=None)

    decisions = last_decisions(tmp_path)
    assert set(decisions) == {"ceo", "cfo"}
    assert {k: decisions["ceo"][k] for k in ("action", "version", "reason")} == {
        "action": "hold", "version": "2", "reason": "guardrail broken: lost 2 of 9"}
    assert (decisions["cfo"]["action"], decisions["cfo"]["version"], decisions["cfo"]["reason"]) == ("rollback", "1", None)
    line = decision_line(decisions["ceo"])
    assert line.startswith("held back version 2 (") and line.endswith(" UTC): guardrail broken: lost 2 of 9")
    assert decision_line(decisions["cfo"]).startswith("rolled back to version 1 (")

    with audit.audit_path(tmp_path).open("a") as log:
        log.write("7\n")
    assert last_decisions(tmp_path) == decisions, "an entry that is no object is no decision"
    with audit.audit_path(tmp_path).open("a") as log:
        log.write("{not json\n")
    assert last_decisions(tmp_path) == {}, "an unreadable log gives no decisions (roleforge audit says what is wrong)"
