"""The inbox: feedback files that land in $ROLEFORGE_HOME/inbox are ingested, then moved to the archive."""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path


def inbox_file(path: str, inbox: Path | None) -> Path | None:
    """The local file behind path when it lies in the inbox (and so moves to the archive once stored), else None."""
    if inbox is None or "://" in path:
        return None
    resolved = Path(path).resolve()
    return resolved if resolved.is_relative_to(inbox.resolve()) else None


def archive_file(path: Path, inbox: Path, archive: Path) -> Path | None:
    """Move a stored inbox file to archive/<date>/ under its inbox-relative name; returns where it went, or None when
    another ingest of the same inbox archived it first. An archived file is never replaced, and two ingests racing
    over one file leave exactly one copy."""
    target = archive / time.strftime("%Y-%m-%d") / path.relative_to(inbox.resolve())
    target.parent.mkdir(parents=True, exist_ok=True)
    for attempt in itertools.count(1):
        try:
            os.link(path, target)  # fails if target exists: nothing in the archive is ever overwritten
            break
        except FileExistsError:
            target = target.with_name(f"{path.stem}-{attempt}{path.suffix}")
        except FileNotFoundError:
            return None
    try:
        path.unlink()
    except FileNotFoundError:  # the other ingest linked its copy and removed the inbox name first: keep only its copy
        target.unlink()
        return None
    return target
