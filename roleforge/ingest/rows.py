"""Feedback lines -> stored rows: the row contract, the PII scrub and the content hash, and bad lines with their
reasons. Light to import (no Prefect, no MLflow): ingest's parse workers run it in their own processes."""

from __future__ import annotations

import base64
import collections
import csv
import hashlib
import io
import itertools
import json
import operator
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from roleforge.data_contracts.feedback import (FeedbackRecord, FeedbackRow, decode_record, describe_error, fast_fields,
                                               record_of)
from roleforge.ingest import pii
from roleforge.storage.staging import Staging, copy_csv, stage_columns

HASHED_FIELDS = ("agent_role", "prompt", "response", "rating", "response_a", "response_b", "preference", "rater")
SCRUBBED_FIELDS = ("prompt", "response", "response_a", "response_b", "rater")


@dataclass
class Quarantined:
    source: str
    line: int
    reason: str
    raw: bytes | str

    def as_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"source": self.source, "line": self.line, "reason": self.reason}
        if isinstance(self.raw, str):
            record["raw"] = self.raw
            return record
        try:
            record["raw"] = self.raw.decode("utf-8")
        except UnicodeDecodeError:
            # Keep the exact bytes too: the readable form alone would lose them.
            record["raw"] = self.raw.decode("utf-8", errors="backslashreplace")
            record["raw_base64"] = base64.b64encode(self.raw).decode("ascii")
        return record


def quarantine_lines(entries: Iterable[Quarantined]) -> bytes:
    """The quarantine file's lines for these entries: one JSON object per line (a line end inside a text is escaped),
    UTF-8, non-ASCII text kept as is."""
    return b"".join(map(_quarantine_line, entries))


def _quarantine_line(entry: Quarantined) -> bytes:
    record = entry.as_record()
    try:
        return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:  # a lone surrogate, which orjson refuses: JSON escapes keep the line valid UTF-8
        return json.dumps(record).encode("ascii") + b"\n"


@dataclass
class ParsedBatch:
    rows: list[dict[str, Any]] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    blank: int = 0


def read_records(path: str) -> Iterator[tuple[int, bytes | dict[str, Any]]]:
    """(line number, raw line or record) for each row of a JSONL, CSV or Parquet file, local or fsspec URL."""
    import fsspec

    with fsspec.open(path, "rb") as handle:
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq

            for index, record in enumerate(pq.read_table(handle).to_pylist(), start=1):
                yield index, {k: v for k, v in record.items() if v is not None}
        elif path.endswith(".csv"):
            reader = csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8", newline=""))
            for record in reader:
                yield reader.line_num, {k: v for k, v in record.items() if v not in ("", None)}
        else:
            for index, line in enumerate(handle, start=1):
                yield index, line


def canonical_json(values: list[Any] | tuple[Any, ...]) -> bytes:
    """The hashed form: compact JSON, non-ASCII kept as UTF-8 (orjson writes exactly what json.dumps would)."""
    try:
        return orjson.dumps(values)
    except TypeError:  # e.g. a lone surrogate, which orjson refuses
        return json.dumps(values, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


def content_hash(row: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json([row.get(name) for name in HASHED_FIELDS])).hexdigest()


def to_stored_row(fields: dict[str, Any], source: str, line: int) -> dict[str, Any]:
    """The store's row from a contract-checked row's fields: every text scrubbed of PII before it is hashed or
    written."""
    return rows_of(stored_columns([record_of(fields)], [line], source))[0]


PLAIN_FIELDS = ("agent_role", "rating", "preference", "event_id", "confidence", "metadata", "timestamp")
PLAIN_VALUES = operator.attrgetter(*PLAIN_FIELDS)
SCRUBBED_VALUES = operator.attrgetter(*SCRUBBED_FIELDS)


def stored_columns(records: list[FeedbackRecord], lines: list[int], source: str) -> dict[str, list[Any]]:
    """The store's rows, a list of values per column (every column an insert gives, store.FEEDBACK_COLUMNS), from
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


def content_keys(hashes: list[str]) -> list[int]:
    """[store.content_key(h) for h in hashes], by numpy: each hash's first 16 hex digits as a signed big-endian
    64-bit integer."""
    import numpy as np

    return np.frombuffer(bytes.fromhex("".join([hash_[:16] for hash_ in hashes])), dtype=">i8").tolist()


def rows_of(columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The rows of stored_columns, one dict each."""
    names = list(columns)
    return [dict(zip(names, values)) for values in zip(*columns.values())]


def check_records(source: str, records: Iterable[tuple[int, bytes | dict[str, Any]]], roles: set[str],
                  batch: ParsedBatch) -> tuple[list[FeedbackRecord], list[int]]:
    """Each record checked against the row contract: the good ones and their line numbers; a bad one goes to
    batch.quarantined with its reason (never dropped), a blank line to batch.blank. A JSON line is decoded by the
    contract's bulk path (decode_record) and, when that refuses it, by orjson and the model, for the reason."""
    roles = frozenset(roles)
    context = {"roles": roles}
    checked: list[FeedbackRecord] = []
    lines: list[int] = []
    for line, raw in records:
        if isinstance(raw, bytes):
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


def parse_records(source: str, records: Iterable[tuple[int, bytes | dict[str, Any]]], roles: set[str]) -> ParsedBatch:
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


def parse_chunk(source: str, records: Iterable[tuple[int, bytes | dict[str, Any]]], roles: set[str],
                staging: Staging | None = None, owner: int | None = None) -> ParsedChunk:
    """parse_records, counted by role; with `staging` (store.staging_for) the good rows go to a staging file beside
    a sqlite store, ready for store.insert_staged, or become the text of a PostgreSQL COPY, for store.insert_copied."""
    import gc

    # A chunk allocates millions of short-lived objects, all freed by their reference counts; the cyclic collector,
    # triggered by allocation counts, would walk them again and again (a fifth of the chunk's time), so it waits,
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


def parse_lines(source: str, first_line: int, data: bytes, roles: set[str], staging: Staging | None,
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




# Parse workers talk in frames: an 8-byte big-endian length, then that many bytes. A request is a JSON header frame
# (source, first_line, roles, staging) and a frame of raw lines; an answer is one JSON frame, and then, where its
# "copy" is true, a frame with the chunk's COPY text. No pickle: nothing that crosses the pipe can run code.
FRAME_LENGTH = 8


def write_frame(stream: Any, payload: bytes) -> None:
    stream.write(len(payload).to_bytes(FRAME_LENGTH, "big"))
    stream.write(payload)


def read_frame(stream: Any) -> bytes | None:
    """The next frame; None at a clean end of the stream."""
    header = stream.read(FRAME_LENGTH)
    if not header:
        return None
    size = int.from_bytes(header, "big")
    payload = stream.read(size)
    if len(header) != FRAME_LENGTH or len(payload) != size:
        raise EOFError("a parse worker's stream ended inside a frame")
    return payload


def encode_request(source: str, first_line: int, lines: int, data: bytes | tuple[str, int, int], roles: set[str],
                   staging: Staging | None) -> bytes:
    """A request to parse `lines` lines of `source` starting at line `first_line`: their bytes, or (path, offset,
    length) of them in a local file, for the worker to read itself (nothing then goes through the pipe)."""
    header = {"source": source, "first_line": first_line, "lines": lines, "roles": sorted(roles),
              "staging": None if staging is None else [staging.directory and str(staging.directory), staging.layout,
                                                       staging.target], "span": None}
    if isinstance(data, tuple):
        header["span"], data = data, b""
    encoded = orjson.dumps(header)
    return b"".join((len(encoded).to_bytes(FRAME_LENGTH, "big"), encoded, len(data).to_bytes(FRAME_LENGTH, "big"), data))


def read_span(path: str, offset: int, length: int) -> bytes:
    """`length` bytes of a local file from `offset`; an error if the file is shorter (it changed under the ingest)."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read(length)
    if len(data) != length:
        raise EOFError("the file is shorter than when it was split into chunks (it changed during the ingest)")
    return data


def shared_path(handle: Any) -> str | None:
    """A path by which a child process opens the very file behind this process's open `handle`, even once another
    ingest has moved it to the archive (Linux's /proc/<pid>/fd/<fd>); None where there is no such path."""
    path = f"/proc/{os.getpid()}/fd/{handle.fileno()}"
    try:
        return path if os.path.samestat(os.stat(path), os.fstat(handle.fileno())) else None
    except OSError:
        return None


LINE_END = 10  # b"\n"
# Into how many pieces tapered_spans cuts each of a file's last spans.
TAPER_PARTS = 4


def line_spans(handle: Any, lines: int, block_size: int = 8 * 2**20) -> Iterator[tuple[int, int, int]]:
    """(offset, length, line count) of consecutive spans of a binary file, `lines` lines each but the last, lines
    split as iterating over the file splits them (a last line without its line end counts). Lines are counted by
    bytes.count, and numpy finds a span's last line end: no Python work per line."""
    import numpy as np

    start = offset = counted = 0  # where the open span starts, where the block starts, whole lines in the span
    last = b""
    while block := handle.read(block_size):
        ends = block.count(b"\n")
        if counted + ends >= lines:
            positions = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == LINE_END)
            used = 0
            while counted + ends - used >= lines:
                used += lines - counted
                end = offset + int(positions[used - 1]) + 1
                yield start, end - start, lines
                start, counted = end, 0
            counted = ends - used
        else:
            counted += ends
        offset += len(block)
        last = block[-1:]
    if offset > start:
        yield start, offset - start, counted + (last != b"\n")


def tapered_spans(spans: Iterable[tuple[int, int, int]], read_at: Any, size: int, last: int,
                  parts: int = TAPER_PARTS) -> Iterator[tuple[int, int, int]]:
    """`spans` (line_spans' of a file of `size` bytes) with each of the file's last `last` spans cut into `parts`
    spans of as many lines (the last one fewer), found in the span's bytes, `read_at(offset, length)`. Ingest gives
    its `last` workers the file's end in small pieces: the serial writer then stores the last rows as they come in
    small transactions, instead of taking the last large chunks alone with a core idle."""
    import numpy as np

    for offset, length, lines in spans:
        # Among the last `last`: fewer bytes after it than `last` - 1 spans of its size, and half a span to spare.
        if parts < 2 or lines < parts or size - offset - length >= (last - 0.5) * length:
            yield offset, length, lines
            continue
        ends = np.flatnonzero(np.frombuffer(read_at(offset, length), dtype=np.uint8) == LINE_END) + 1
        step, start = -(-lines // parts), 0
        cuts = range(step, lines, step)
        for cut in cuts:
            end = int(ends[cut - 1])
            yield offset + start, end - start, step
            start = end
        yield offset + start, length - start, lines - step * len(cuts)


def encode_chunk(chunk: ParsedChunk) -> bytes:
    """A worker's answer frame (the COPY text, if any, goes in a frame of its own after it)."""
    return orjson.dumps({
        "status": "ok", "source": chunk.source, "rows": chunk.rows,
        "staged": None if chunk.staged is None else str(chunk.staged), "good": chunk.good, "blank": chunk.blank,
        "by_role": chunk.by_role, "quarantine": chunk.quarantine.decode("utf-8"), "copy": chunk.copy is not None,
    })


def decode_chunk(payload: bytes, copy: Any = None) -> ParsedChunk:
    """A worker's answer; `copy()` reads the frame of its COPY text where it has one. A worker's error is raised as a
    RuntimeError naming the file and lines."""
    answer = orjson.loads(payload)
    if answer["status"] != "ok":
        raise RuntimeError(f"an ingest parse worker failed: {answer['error']}")
    text = None
    if answer.get("copy"):
        text = copy() if copy is not None else None
        if text is None:
            raise RuntimeError("an ingest parse worker's answer ended before its COPY text")
    return ParsedChunk(answer["source"], answer["rows"], None if answer["staged"] is None else Path(answer["staged"]),
                       answer["good"], answer["quarantine"].encode("utf-8"), answer["blank"], answer["by_role"], text)


class _WithoutPandas:
    """An import hook that finds no pandas (see light_worker)."""

    @staticmethod
    def find_spec(name: str, *_: Any) -> None:
        if name.partition(".")[0] == "pandas":
            raise ModuleNotFoundError("a parse worker does not import pandas", name=name)


def light_worker() -> None:
    """Keep pandas out of this process, which never uses it: pyarrow imports it (0.4 s of a worker's start) only to
    check whether the lists it converts are pandas objects, and takes it as not installed when the import fails."""
    import sys

    if "pandas" not in sys.modules and _WithoutPandas not in sys.meta_path:
        sys.meta_path.insert(0, _WithoutPandas)


def serve_parse_requests() -> None:
    """A parse worker: parse_lines on each request read from stdin, its ParsedChunk (or the error) written to
    stdout, until stdin closes (the ingest finished, or died). Anything else printed goes to stderr."""
    import sys
    import traceback

    light_worker()
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    while (header := read_frame(requests)) is not None:
        request, data = orjson.loads(header), read_frame(requests)
        try:
            if request["span"] is not None:
                data = read_span(*request["span"])
            staging = None
            if request["staging"] is not None:
                directory, layout, target = request["staging"]
                staging = Staging(directory and Path(directory), tuple(map(tuple, layout)), target)
            # The staging file belongs to the ingest that inserts it, not to this worker.
            chunk = parse_lines(request["source"], request["first_line"], data or b"", set(request["roles"]), staging,
                                os.getppid())
            frames = [encode_chunk(chunk)] + ([] if chunk.copy is None else [chunk.copy])
        except Exception as error:  # the ingest raises it as one line; the traceback goes to stderr
            traceback.print_exc()
            last = request["first_line"] + request["lines"] - 1
            message = " ".join(f"{type(error).__name__}: {error}".split())
            frames = [orjson.dumps({
                "status": "error", "error": f"{request['source']} lines {request['first_line']}-{last}: {message}"})]
        for frame in frames:
            write_frame(answers, frame)
        answers.flush()


if __name__ == "__main__":
    serve_parse_requests()
    # Every answer is flushed and every staging file closed: leave without the interpreter's teardown, which frees a
    # worker's millions of objects one by one (a tenth of a second and more) while the ingest waits for it to exit,
    # as multiprocessing's own children do.
    import sys

    sys.stderr.flush()
    os._exit(0)
