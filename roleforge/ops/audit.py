"""The audit log: one JSON line per ingest, promotion decision and rollback (who, what, when, counts), appended
under ROLEFORGE_HOME/audit/ and never rewritten. Each entry carries the SHA-256 of the line before it, so an
edited or deleted line breaks the chain that `verify` checks."""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from roleforge.ops.errors import RoleforgeError

GENESIS = "0" * 64


def audit_path(home: Path) -> Path:
    return home / "audit" / "audit.jsonl"


def actor() -> str:
    """Who acted: ROLEFORGE_ACTOR when set (a CI job, a deployment), else the OS user on this host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return os.environ.get("ROLEFORGE_ACTOR") or f"{user}@{socket.gethostname()}"


def record(home: Path, action: str, **details: Any) -> dict[str, Any]:
    """Append one entry; concurrent writers (processes) are serialized by a lock on the log file."""
    path = audit_path(home)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            last = b""
            for line in handle:
                last = line if line.strip() else last
            entry = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "actor": actor(), "action": action,
                     **details, "prev": hashlib.sha256(last.rstrip(b"\n")).hexdigest() if last else GENESIS}
            handle.write(json.dumps(entry, default=str, ensure_ascii=False).encode("utf-8") + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise RoleforgeError(f"cannot write the audit log {path}: {error.strerror or error}") from None
    return entry


def read(home: Path) -> list[dict[str, Any]]:
    path = audit_path(home)
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] if path.exists() else []


def verify(home: Path) -> int | None:
    """The 1-based number of the first entry whose `prev` does not match the line before it; None when intact."""
    path = audit_path(home)
    previous = GENESIS
    lines = path.read_bytes().splitlines() if path.exists() else []
    for number, line in enumerate(lines, 1):
        try:
            if json.loads(line)["prev"] != previous:
                return number
        except (ValueError, KeyError):
            return number
        previous = hashlib.sha256(line).hexdigest()
    return None
