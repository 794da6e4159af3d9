"""The `roleforge` command, one module per group of commands. Heavy libraries are imported inside each command, so
that --help answers at once."""

from roleforge.cli.parser import build_parser, main

__all__ = ["build_parser", "main"]
