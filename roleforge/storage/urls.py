"""Database URLs, parsed in one place (by SQLAlchemy): the file behind a SQLite URL (the store's, MLflow's, a tune's
study), and what an error message names."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def sqlite_file(url: Any) -> Path | None:
    """The database file of a SQLite URL (a string or a SQLAlchemy URL); None for another database, an in-memory one,
    or a `file:` URI."""
    import sqlalchemy as sa

    parsed = sa.engine.make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or database in (None, "", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def ensure_sqlite_parent(url: Any) -> None:
    """SQLite creates its file but not the directory it lives in."""
    path = sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


def describe_url(url: str) -> str:
    """The database's file for SQLite, else the URL without its password: what an error message names."""
    import sqlalchemy as sa

    path = sqlite_file(url)
    return str(path) if path is not None else sa.engine.make_url(url).render_as_string(hide_password=True)
