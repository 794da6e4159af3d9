"""Feedback lines -> stored rows: the row contract, the PII scrub and the content hash (hashing.py), and bad lines
with their reasons (quarantine.py). Light to import (no Prefect, no MLflow): ingest's parse workers run it in their own
processes."""

from __future__ import annotations

import collections
import hashlib
import io
import itertools
import json
import operator
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from roleforge.data_contracts.feedback import (FeedbackRecord, FeedbackRow, decode_record, describe_error, fast_fields,
                                               record_of, role_spellings)
from roleforge.ingest import pii
from roleforge.ingest.hashing import HASHED_FIELDS, canonical_json, content_keys
from roleforge.ingest.quarantine import Quarantined, quarantine_lines
from roleforge.ingest.readers import UTF8_BOM
from roleforge.storage.staging import Staging, copy_csv, stage_columns


SCRUBBED_FIELDS = ("prompt", "response", "response_a", "response_b", "rater")

# The roles a row may name: their names, or their spellings (data_contracts.feedback.role_spellings).
Roles = Iterable[str]


@dataclass
class ParsedBatch:
    rows: list[dict[str, Any]] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    blank: int = 0


def to_stored_row(fields: dict[str, Any], source: str, line: int) -> dict[str, Any]:
    """The store's row from a contract-checked row's fields: every text scrubbed of PII before it is hashed or
    written."""
    return rows_of(stored_columns([record_of(fields)], [line], source))[0]


PLAIN_FIELDS = ("agent_role", "rating", "preference", "event_id", "confidence", "metadata", "timestamp")
PLAIN_VALUES = operator.attrgetter(*PLAIN_FIELDS)
SCRUBBED_VALUES = operator.attrgetter(*SCRUBBED_FIELDS)


def stored_columns(records: list[FeedbackRecord], lines: list[int], source: str) -> dict[str, list[Any]]:
    """The store's rows, a list of values per column (every column an insert gives, schema.FEEDBACK_COLUMNS), from
    contract-checked records and their line numbers: every text scrubbed of PII (all of them in one pass) before it
    is hashed or written. Built by column, the way they are staged: no dict per row."""
    texts = pii.scrub_all(list(itertools.chain.from_iterable(map(SCRUBBED_VALUES, records))))
    columns = {name: texts[offset::len(SCRUBBED_FIELDS)] for offset, name in enumerate(SCRUBBED_FIELDS)}
    columns.update(zip(PLAIN_FIELDS, map(list, zip(*map(PLAIN_VALUES, records))) if records else [[]] * len(PLAIN_FIELDS)))
    columns["kind"] = ["rating" if rating is not None else "ab" for rating in columns["rating"]]
    columns["metadata"] = [json.loads(pii.scrub(json.dumps(value))) if value else None for value in columns["metadata"]]
    columns["timestamp"] = [value.isoformat() if value else None for value in columns["timestamp"]]
    columns["source"] = [source] * len(records)
    columns["source_line"] = lines
    hashed = zip(*(columns[name] for name in HASHED_FIELDS))
    sha256, dumps = hashlib.sha256, orjson.dumps
    try:  # canonical_json, inlined for the common case
        hashes = [sha256(dumps(values)).hexdigest() for values in hashed]
    except TypeError:
        hashes = [sha256(canonical_json(values)).hexdigest() for values in zip(*(columns[name] for name in HASHED_FIELDS))]
    columns["content_hash"], columns["content_key"] = hashes, content_keys(hashes)
    return columns


def rows_of(columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The rows of stored_columns, one dict each."""
    names = list(columns)
    return [dict(zip(names, values)) for values in zip(*columns.values())]


def check_records(source: str, records: Iterable[tuple[int, bytes | dict[str, Any]]], roles: Roles,
                  batch: ParsedBatch) -> tuple[list[FeedbackRecord], list[int]]:
    """Each record checked against the row contract: the good ones, under their roles' configured names, and their
    line numbers; a bad one goes to batch.quarantined with its reason (never dropped), a blank line to batch.blank. A
    JSON line is decoded by the contract's bulk path (decode_record) and, when that refuses it, by orjson and the
    model, for the reason."""
    roles = role_spellings(roles)
    context = {"roles": roles}
    checked: list[FeedbackRecord] = []
    lines: list[int] = []
    for line, raw in records:
        if isinstance(raw, bytes):
            if line == 1 and raw.startswith(UTF8_BOM):  # a byte-order mark from an editor: not part of the row
                raw = raw[len(UTF8_BOM):]
            record = decode_record(raw, roles)
            if record is not None:
                checked.append(record)
                lines.append(line)
                continue
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError as error:  # a blank line is no JSON document either
                if raw.strip():
                    batch.quarantined.append(Quarantined(source, line, _undecodable(raw, error), raw))
                else:
                    batch.blank += 1
                continue
        else:
            value = raw
        if not isinstance(value, dict):
            batch.quarantined.append(Quarantined(source, line, f"not a JSON object but {type(value).__name__}", raw))
            continue
        fields = fast_fields(value, roles)
        if fields is None:
            try:
                fields = FeedbackRow.model_validate(value, context=context).__dict__
            except ValidationError as error:
                text = raw if isinstance(raw, bytes) else json.dumps(raw, ensure_ascii=False, default=str)
                batch.quarantined.append(Quarantined(source, line, describe_error(error), text))
                continue
        checked.append(record_of(fields))
        lines.append(line)
    return checked, lines


def parse_records(source: str, records: Iterable[tuple[int, bytes | dict[str, Any]]], roles: Roles) -> ParsedBatch:
    """Check each record against the row contract; a bad one is quarantined with its reason, never dropped."""
    batch = ParsedBatch()
    batch.rows = rows_of(stored_columns(*check_records(source, records, roles, batch), source))
    return batch


@dataclass
class ParsedChunk:
    """One chunk of a file, parsed: its good rows (in memory, written to a staging file beside the store, or as the
    text of a PostgreSQL COPY), its quarantined lines (as the quarantine file's lines, one entry each: encoded where
    they were found, in a parse worker, and written as they are) and its blank lines."""

    source: str
    rows: list[dict[str, Any]]
    staged: Path | None
    good: int
    quarantine: bytes
    blank: int
    by_role: dict[str, int]
    copy: bytes | None = None

    @property
    def bulk(self) -> bool:
        """Whether its rows are staged (a file, or a COPY's text) rather than in memory."""
        return self.staged is not None or self.copy is not None


def parse_chunk(source: str, records: Iterable[tuple[int, bytes | dict[str, Any]]], roles: Roles,
                staging: Staging | None = None, owner: int | None = None) -> ParsedChunk:
    """parse_records, counted by role; with `staging` (inserts.staging_for) the good rows go to a staging file beside
    a sqlite store, ready for inserts.insert_staged, or become the text of a PostgreSQL COPY, for
    inserts.insert_copied."""
    import gc

    # A chunk allocates millions of short-lived objects, all freed by their reference counts; the cyclic collector,
    # triggered by allocation counts, would walk them again and again (docs/perf-notes.md), so it waits,
    # staging included (the columns' lists hold a million and a half references for it to visit).
    collecting = gc.isenabled()
    gc.disable()
    try:
        batch = ParsedBatch()
        columns = stored_columns(*check_records(source, records, roles, batch), source)
        good = len(columns["agent_role"])
        by_role = dict(collections.Counter(columns["agent_role"]))
        staged = copy = None
        if staging is not None and good:
            if staging.target == "copy":
                copy = copy_csv(columns, staging.layout)
            else:
                staged = stage_columns(columns, staging, owner)
        return ParsedChunk(source, [] if staged or copy else rows_of(columns), staged, good,
                           quarantine_lines(batch.quarantined), batch.blank, by_role, copy)
    finally:
        if collecting:
            gc.enable()


def parse_lines(source: str, first_line: int, data: bytes, roles: Roles, staging: Staging | None,
                owner: int | None = None) -> ParsedChunk:
    """parse_chunk on consecutive JSON lines of a file, the first one numbered `first_line`: a parse worker's unit of
    work (the lines' bytes, which the worker read from the file or got through its pipe, and a staging file's name
    comes back)."""
    lines = io.BytesIO(data).readlines()  # split as iterating over the file splits it: line ends kept
    return parse_chunk(source, enumerate(lines, start=first_line), roles, staging, owner)


def _undecodable(raw: bytes, error: orjson.JSONDecodeError) -> str:
    """Why a line is not a JSON document, in the words of Python's own decoder where it agrees."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"not UTF-8: {bad.reason} at byte {bad.start}"
    try:
        json.loads(text)
    except json.JSONDecodeError as decoded:
        return f"malformed JSON: {decoded.msg} (column {decoded.colno})"
    return f"malformed JSON: {error}"  # valid to Python but not to RFC 8259 (NaN, lone surrogates, huge numbers)
