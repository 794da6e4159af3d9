"""Quarantine replay: quarantined lines checked again against the row contract as it is configured now (a role or an
alias added, a contract fixed). A line that passes is stored once, as ingest stores it, and leaves the quarantine; a
line that still fails stays, with the reason it fails for now."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from roleforge.data_contracts.feedback import role_spellings
from roleforge.ingest.quarantine import (Quarantined, collision_entry, entry_bytes, locked_quarantine, quarantine_entries,
                                         quarantine_files, quarantine_lines)
from roleforge.ingest.rows import ParsedBatch, Roles, check_records, rows_of, stored_columns
from roleforge.ops.errors import storage_error


class ReplayReport(BaseModel):
    """What one replay did: every replayed line was stored now, was stored before (a duplicate), or stays quarantined."""

    replayed: int
    ingested: int
    duplicates: int
    quarantined: int


def replay_quarantine(directory: Path, roles: Roles, store_url: str, reason: str | None = None) -> ReplayReport:
    """Replay the quarantined lines under `directory` (those whose reason contains `reason`, when given) into the store.

    Each quarantine file is replayed under its lock: its lines that pass are stored in one transaction, then the file
    is rewritten without them (or removed, once empty). A crash between the two leaves them quarantined and already
    stored, so the next replay counts them as duplicates and removes them: nothing is lost, nothing stored twice."""
    from roleforge.storage.schema import engine_for
    from roleforge.storage.urls import describe_url

    spellings = role_spellings(roles)
    totals = dict.fromkeys(("replayed", "ingested", "quarantined"), 0)
    try:
        engine = engine_for(store_url)
        for path in quarantine_files(directory):
            with locked_quarantine(path, "rb") as handle:
                if handle is not None:
                    for key, count in _replay_file(path, handle.read(), spellings, engine, reason).items():
                        totals[key] += count
    except Exception as error:
        problem = storage_error(error, describe_url(store_url))
        if problem is None:
            raise
        raise problem from error
    return ReplayReport(**totals, duplicates=totals["replayed"] - totals["ingested"] - totals["quarantined"])


def _replay_file(path: Path, data: bytes, roles: Roles, engine: Any, reason: str | None) -> dict[str, int]:
    """Replay the chosen entries of one quarantine file (its bytes `data`, read under its lock) and rewrite it."""
    from roleforge.ops.files import write_atomic

    lines = quarantine_entries(data)
    chosen = [index for index, (_, record) in enumerate(lines)
              if record is not None and (reason is None or reason in record["reason"])]
    if not chosen:
        return {}
    records = [lines[index][1] for index in chosen]
    reasons, inserted = _replay_records(records, roles, engine)
    kept = dict(zip(chosen, reasons))
    rewritten = []
    for index, (line, record) in enumerate(lines):
        if index not in kept:
            rewritten.append(line)
        elif kept[index] == record["reason"]:
            rewritten.append(line if line.endswith(b"\n") else line + b"\n")
        elif kept[index] is not None:
            rewritten.append(quarantine_lines([Quarantined(record["source"], record["line"], kept[index],
                                                           entry_bytes(record))]))
    if any(line.strip() for line in rewritten):
        write_atomic(path, b"".join(rewritten))
    else:
        path.unlink()
    return {"replayed": len(chosen), "ingested": inserted, "quarantined": sum(r is not None for r in reasons)}


def _replay_records(records: list[dict[str, Any]], roles: Roles, engine: Any) -> tuple[list[str | None], int]:
    """Each entry's reason after the replay (None: its row is stored, now or before) and how many rows were new."""
    from roleforge.storage.inserts import insert_new_feedback

    reasons: list[str | None] = [record["reason"] for record in records]
    by_source: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        by_source[record["source"]].append(index)
    rows: list[dict[str, Any]] = []
    row_entries: list[int] = []
    for source, indices in by_source.items():
        # Numbered by entry, so that a verdict finds its entry; the stored rows keep the source's own line numbers.
        batch = ParsedBatch()
        checked, entries = check_records(source, ((index, entry_bytes(records[index])) for index in indices), roles,
                                         batch)
        for refused in batch.quarantined:
            reasons[refused.line] = refused.reason
        rows += rows_of(stored_columns(checked, [records[index].get("line") for index in entries], source))
        row_entries += entries
    stored = insert_new_feedback(engine, rows)
    collided = {row["content_hash"]: collision_entry(row, holder).reason for row, holder in stored.collided}
    for row, index in zip(rows, row_entries):
        reasons[index] = collided.get(row["content_hash"])
    return reasons, stored.inserted


def replay_configured(settings: Any, reason: str | None = None) -> ReplayReport:
    """Replay the quarantine with the settings' roles and store, as every command configures them; audited."""
    from roleforge.ops import audit

    report = replay_quarantine(settings.path("quarantine"), settings.role_spellings(), settings.resolved_store_url,
                               reason)
    audit.record(settings.home, "quarantine-replay", reason_filter=reason, **report.model_dump())
    return report
