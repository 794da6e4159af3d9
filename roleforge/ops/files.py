"""Files that a killed process never leaves half-written."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, text: str | bytes, durable: bool = False) -> Path:
    """Write `text` (UTF-8, or bytes as they are) to a dot-named sibling, fsync it, then rename it over `path`: readers
    see the old file or the whole new one. `durable` also fsyncs the directory, so that the rename itself survives a
    power loss (what an acknowledged write promises)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # The process id keeps two writers of the same file (threads of one flow excepted) off each other's staging file.
    staging = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with (staging.open("wb") if isinstance(text, bytes) else staging.open("w", encoding="utf-8")) as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    staging.replace(path)
    if durable:
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    return path
