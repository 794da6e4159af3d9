"""The parse workers' protocol. Workers talk in frames: an 8-byte big-endian length, then that many bytes. A
request is a JSON header frame (source, first_line, roles, staging) and a frame of raw lines; an answer is one JSON
frame, and then, where its "copy" is true, a frame with the chunk's COPY text. No pickle: nothing that crosses the
pipe can run code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from roleforge.data_contracts.feedback import RoleSpellings
from roleforge.ingest.rows import ParsedChunk
from roleforge.storage.staging import Staging

FRAME_LENGTH = 8  # bytes of the big-endian length in front of every frame


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


def encode_request(source: str, first_line: int, lines: int, data: bytes | tuple[str, int, int],
                   roles: RoleSpellings, staging: Staging | None) -> bytes:
    """A request to parse `lines` lines of `source` starting at line `first_line`: their bytes, or (path, offset,
    length) of them in a local file, for the worker to read itself (nothing then goes through the pipe)."""
    header = {"source": source, "first_line": first_line, "lines": lines, "roles": roles,
              "staging": None if staging is None else [staging.directory and str(staging.directory), staging.layout,
                                                       staging.target], "span": None}
    if isinstance(data, tuple):
        header["span"], data = data, b""
    encoded = orjson.dumps(header)
    return b"".join((len(encoded).to_bytes(FRAME_LENGTH, "big"), encoded, len(data).to_bytes(FRAME_LENGTH, "big"), data))


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
