"""What every command shares: the parser that says how to get help, the settings (checked before any work), the
JSON line for machines and the tables for people."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from roleforge.ops.errors import RoleforgeError


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def emit(payload: Any, as_json: bool) -> None:
    """With --json, the last stdout line is one JSON object."""
    if as_json:
        sys.stdout.flush()
        print(json.dumps(payload, default=str), flush=True)


def command_settings(args: argparse.Namespace | None = None) -> Any:
    """The configuration, checked before any work; a command's `--role`, given by name or alias in any case, becomes
    the role's configured name in `args`."""
    import tomllib

    from pydantic import ValidationError

    from roleforge.config.settings import load_settings
    from roleforge.data_contracts.feedback import describe_error
    from roleforge.runtime import prepare_environment

    try:
        settings = load_settings()
    except ValidationError as error:
        raise RoleforgeError(f"bad configuration: {describe_error(error)}") from None
    except tomllib.TOMLDecodeError as error:
        raise RoleforgeError(f"bad configuration file {os.environ.get('ROLEFORGE_CONFIG', 'roleforge.toml')}: {error}") from None
    check_writable(settings.home)
    prepare_environment(settings.home)
    if getattr(args, "role", None):
        args.role = settings.role_name(args.role)
    return settings


def check_writable(home: Path) -> None:
    """ROLEFORGE_HOME must exist or be creatable, and take a file: else one line naming it, before any work."""
    import tempfile

    try:
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=home):
            pass
    except OSError as error:
        raise RoleforgeError(f"ROLEFORGE_HOME {home} is not writable: {error.strerror or error}") from None


def rich_console(width: int = 160) -> Any:
    """A console `width` columns wide, or as wide as the terminal where that is narrower."""
    import shutil

    from rich.console import Console

    if sys.stdout.isatty():
        width = min(width, shutil.get_terminal_size((width, 24)).columns)
    return Console(stderr=False, width=width)


# What the tables people read (run's outcomes, status) fit into.
TABLE_WIDTH = 100


def compact_table(title: str, rows: list[dict[str, Any]], caption: str | None = None) -> Any:
    """A rich table of short values (dicts with the same keys), columns two spaces apart and no frame, so that a
    role's row stays on one line of TABLE_WIDTH."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True,
                  title_justify="left", caption_justify="left")
    for column in (rows[0] if rows else {}):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row.values()))
    return table


def render_table(title: str, rows: list[dict[str, Any]]) -> Any:
    """A rich table of rows (dicts with the same keys), one column per key."""
    from rich.table import Table

    table = Table(title=title)
    for column in (rows[0] if rows else {}):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    return table


def role_names(settings: Any, names: str | None) -> list[str] | None:
    if not names:
        return None
    return [settings.role_name(name.strip()) for name in names.split(",") if name.strip()]
