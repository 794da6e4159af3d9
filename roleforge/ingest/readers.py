"""Reading feedback files: the records of a JSONL, JSON, CSV or Parquet file (local or fsspec URL, compressed or not),
and a JSON-lines file cut into spans of whole lines for the parse workers, found without Python work per line."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from roleforge.data_contracts.feedback_spellings import EXTRA_CELLS, field_key
from roleforge.ops.errors import RoleforgeError

# The byte-order mark some editors and spreadsheets put at the start of a UTF-8 file.
UTF8_BOM = b"\xef\xbb\xbf"
# What JSON allows between documents; raw_decode takes none before one.
JSON_BLANKS = re.compile(r"[ \t\n\r]*")


def read_records(path: str) -> Iterator[tuple[int, bytes | dict[str, Any]]]:
    """(line number, raw line or record) for each row of a JSONL, JSON, CSV or Parquet file (file_format), local or
    fsspec URL, compressed or not."""
    import fsspec

    kind = file_format(path)
    with fsspec.open(path, "rb", compression="infer") as handle:
        if kind == "parquet":
            import pyarrow.parquet as pq

            for index, record in enumerate(pq.read_table(handle).to_pylist(), start=1):
                yield index, {k: v for k, v in record.items() if v is not None}
        elif kind == "csv":
            # utf-8-sig: a spreadsheet's CSV export starts with a byte-order mark, which would be part of the first
            # column's name.
            reader = csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8-sig", newline=""), restkey=EXTRA_CELLS)
            names = [column_name(name) for name in reader.fieldnames or ()]
            if len(set(names)) == len(names):  # two headers that name one field stay as written: each row is refused
                reader.fieldnames = names
            for record in reader:
                yield reader.line_num, {k: v for k, v in record.items() if v not in ("", None)}
        elif kind == "json" and (items := json_document(handle)) is not None:
            # One JSON document (an export): an array of rows, or one row over several lines; each row numbered as a line.
            for index, item in enumerate(items, start=1):
                yield index, orjson.dumps(item)
        else:
            for index, line in enumerate(handle, start=1):
                yield index, line


def column_name(header: str) -> str:
    """A CSV header as written in a spreadsheet ("Agent Role", "Rating ") -> the row field it names; a header that
    names none is kept as written (the contract reads it as an alias, or keeps its cells in the row's metadata)."""
    from roleforge.data_contracts.feedback import FIELDS

    field = field_key(header)
    return field if field in FIELDS else header


def json_document(handle: Any) -> list[Any] | None:
    """The rows of a `.json` file written as JSON documents rather than JSON lines, read whole: an array's items, or
    objects written over several lines (one, or one after another as `jq` prints them); None for JSON lines (many
    `.json` files are) or for documents that do not parse, whose lines are then checked one by one. The handle is
    left at its start."""
    if not is_json_document(handle):
        return None
    data = handle.read()
    handle.seek(0)
    try:
        text = data.removeprefix(UTF8_BOM).decode("utf-8")
        decoder, rows, at = json.JSONDecoder(parse_constant=_no_constant), [], 0
        while (at := JSON_BLANKS.match(text, at).end()) < len(text):
            value, at = decoder.raw_decode(text, at)
            rows.extend(value if isinstance(value, list) else [value])
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    return rows


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def is_json_document(handle: Any) -> bool:
    """Whether a file's first line opens a JSON document rather than being a JSON line: `[`, or a `{` that does not
    close on its line. The handle is left at its start."""
    first = handle.readline().removeprefix(UTF8_BOM)
    while first and not first.strip():
        first = handle.readline()
    handle.seek(0)
    first = first.strip()
    if first.startswith(b"["):
        return True
    if not first.startswith(b"{"):
        return False
    try:
        orjson.loads(first)
    except orjson.JSONDecodeError:
        return True
    return False


def whole_json_document(path: str) -> bool:
    """Whether a feedback file is read whole as one JSON document (never cut into spans of lines)."""
    import fsspec

    if file_format(path) != "json":
        return False
    with fsspec.open(path, "rb", compression="infer") as handle:
        return is_json_document(handle)


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


FEEDBACK_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
# Compressed feedback files, read through fsspec's decompression: an export is often gzipped.
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz")


def compressed(path: str) -> bool:
    return path.lower().endswith(COMPRESSION_SUFFIXES)


def _uncompressed_name(path: str) -> str:
    name = path.lower()
    return next((name.removesuffix(suffix) for suffix in COMPRESSION_SUFFIXES if name.endswith(suffix)), name)


def file_format(path: str) -> str:
    """How a feedback file is read, from its name in any case, under a compression suffix: parquet, csv, json, or
    JSON lines for any other name."""
    name = _uncompressed_name(path)
    return next((suffix[1:] for suffix in (".parquet", ".csv", ".json") if name.endswith(suffix)), "jsonl")


def is_feedback_file(name: str) -> bool:
    """A directory entry ingest reads: a feedback suffix in any case, compressed or not; a dot-name is a file still
    being written (producers write it so, then rename it into place)."""
    return _uncompressed_name(name).endswith(FEEDBACK_SUFFIXES) and not name.rsplit("/", 1)[-1].startswith(".")


def expand_paths(paths: Iterable[str]) -> list[str]:
    """Files to read: each path as given, a directory's feedback files in name order; a missing path is an error."""
    import fsspec

    found: list[str] = []
    for path in paths:
        filesystem, _, (resolved,) = fsspec.get_fs_token_paths(path)
        if not filesystem.exists(resolved):
            raise RoleforgeError(f"no such feedback file or directory: {path}")
        if filesystem.isdir(resolved):
            names = sorted(n for n in filesystem.ls(resolved, detail=False) if is_feedback_file(n))
            found.extend(filesystem.unstrip_protocol(n) if "://" in path else n for n in names)
        else:
            found.append(path)
    return found
