"""What the server answered: every response id with its role, prompt, answer(s) and model version, kept in SQLite
under ROLEFORGE_HOME so that feedback can refer to it after a restart; and feedback on it turned into the rows
the nightly flow ingests."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SCHEMA = """
create table if not exists responses (
    id text primary key,
    created real not null,
    role text not null,
    prompt text not null,
    system_prompt text not null,
    history text,
    answers text not null
)
"""


@dataclass(frozen=True)
class Served:
    """One served response: a single answer, or two (A then B, as shown) for an A/B request."""

    id: str
    role: str
    prompt: str
    system_prompt: str
    history: list[dict[str, str]]
    answers: list[dict[str, Any]]  # each: text, version (None: the base model), slot

    @property
    def is_ab(self) -> bool:
        return len(self.answers) == 2


class Ledger:
    def __init__(self, path: Path, keep_days: int = 30) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("pragma journal_mode=wal")
        self._db.execute(SCHEMA)
        self._keep_s = keep_days * 86400
        self._pruned = 0.0
        self._prune()

    def _prune(self) -> None:
        """Forget answers older than keep_days: at start and then hourly, so a server that runs for months stays bounded."""
        self._pruned = time.time()
        self._db.execute("delete from responses where created < ?", (self._pruned - self._keep_s,))

    def record(self, served: Served) -> None:
        """Kept before the answer leaves the server: any id a client holds can be rated."""
        with self._lock:
            if time.time() - self._pruned > 3600:
                self._prune()
            self._db.execute("insert into responses values (?, ?, ?, ?, ?, ?, ?)",
                             (served.id, time.time(), served.role, served.prompt, served.system_prompt,
                              json.dumps(served.history) if served.history else None, json.dumps(served.answers)))

    def get(self, response_id: str) -> Served | None:
        with self._lock:
            row = self._db.execute("select id, role, prompt, system_prompt, history, answers from responses where id = ?",
                                   (response_id,)).fetchone()
        if row is None:
            return None
        return Served(row[0], row[1], row[2], row[3], json.loads(row[4]) if row[4] else [], json.loads(row[5]))

    def close(self) -> None:
        with self._lock:
            self._db.close()


class FeedbackError(ValueError):
    """Feedback that does not fit the response it names: the caller answers 422 with the message."""


def feedback_row(served: Served, rating: int | None, preference: str | None, rater: str | None, comment: str | None,
                 default_system_prompt: str) -> dict[str, Any]:
    """The feedback contract's row for a rating of a single answer, or the choice between an A/B response's two."""
    if (rating is None) == (preference is None):
        raise FeedbackError("give either rating (1-5) or preference (a or b)")
    if served.is_ab and rating is not None:
        raise FeedbackError(f"response {served.id} showed two answers: send preference 'a' or 'b'")
    if not served.is_ab and preference is not None:
        raise FeedbackError(f"response {served.id} showed one answer: send a rating from 1 to 5")
    versions = [answer["version"] or "base" for answer in served.answers]
    metadata: dict[str, Any] = {"response_id": served.id, "model_version": versions[0], "source": "api"}
    if comment:
        metadata["comment"] = comment
    if served.history:
        metadata["history"] = served.history  # the earlier turns of the conversation, for whoever reads it later
    if served.system_prompt != default_system_prompt:
        metadata["system_prompt"] = served.system_prompt
    row: dict[str, Any] = {"agent_role": served.role, "prompt": served.prompt, "event_id": f"api-{uuid.uuid4().hex}",
                           "rater": rater, "timestamp": datetime.now(timezone.utc).isoformat(), "metadata": metadata}
    if rating is not None:
        return {**row, "response": served.answers[0]["text"], "rating": rating}
    if served.answers[0]["text"] == served.answers[1]["text"]:
        raise FeedbackError(f"response {served.id}'s two answers are identical: nothing to choose between")
    metadata["model_version"] = versions[1 if served.answers[1]["slot"] == "champion" else 0]
    metadata["ab"] = {"a": {"version": versions[0], "slot": served.answers[0]["slot"]},
                      "b": {"version": versions[1], "slot": served.answers[1]["slot"]}}
    return {**row, "response_a": served.answers[0]["text"], "response_b": served.answers[1]["text"], "preference": preference}


def write_inbox_row(inbox: Path, row: dict[str, Any]) -> Path:
    """One feedback row as its own inbox file, written atomically and durably (ingest skips the dot-named staging
    file), so that a killed server has either lost the request (never acknowledged) or left the whole row."""
    from roleforge.ops.files import write_atomic

    name = f"api-{time.strftime('%Y%m%dT%H%M%S')}-{row['event_id'].removeprefix('api-')}.jsonl"
    return write_atomic(inbox / name, json.dumps(row, ensure_ascii=False) + "\n", durable=True)
