"""gc: prune ROLEFORGE_HOME as [retention] says, keeping whatever a registered version points at."""

from __future__ import annotations

import argparse
import sys

from roleforge.cli.common import command_settings, emit, render_table, rich_console


def cmd_gc(args: argparse.Namespace) -> int:
    settings = command_settings()
    from roleforge.ops.disk import human_bytes
    from roleforge.ops.retention import audited_gc

    report = audited_gc(settings, dry_run=args.dry_run)
    if not args.json:
        kinds = sorted(set(report.removed) | set(report.kept))
        rich_console().print(render_table("roleforge gc" + (" (dry run)" if args.dry_run else ""), [
            {"kind": kind, "removed": report.removed.get(kind, 0), "kept": report.kept.get(kind, 0)} for kind in kinds]))
        bound = f" of {human_bytes(report.max_home_bytes)} allowed" if report.max_home_bytes else ""
        print(f"{'would free' if args.dry_run else 'freed'} {human_bytes(report.freed_bytes)}; "
              f"ROLEFORGE_HOME now holds {human_bytes(report.home_bytes)}{bound}")
    for problem in report.errors + (["ROLEFORGE_HOME is over retention.max_home_gb"] if report.over_bound else []):
        print(f"roleforge gc: {problem}", file=sys.stderr)
    emit(report.model_dump(), args.json)
    return 1 if report.errors else 0
