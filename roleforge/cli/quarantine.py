"""quarantine: what ingest could not store, by reason and file, and its replay once the cause is fixed."""

from __future__ import annotations

import argparse

from roleforge.cli.common import command_settings, emit, render_table, rich_console


def cmd_quarantine(args: argparse.Namespace) -> int:
    settings = command_settings()
    from roleforge.ingest.quarantine import quarantine_summary

    directory = settings.path("quarantine")
    summary = quarantine_summary(directory)
    if not args.json:
        console = rich_console()
        for title, counts in (("by reason", summary["by_reason"]), ("by file", summary["by_file"])):
            if counts:
                key = title.removeprefix("by ")
                console.print(render_table(f"quarantine {title}", [{key: k, "lines": v} for k, v in counts.items()]))
        print(f"{summary['total']} quarantined line(s) in {directory}"
              + ("; `roleforge quarantine replay` stores those that pass now" if summary["total"] else ""))
    emit(summary, args.json)
    return 0


def cmd_quarantine_replay(args: argparse.Namespace) -> int:
    settings = command_settings()
    from roleforge.ingest.quarantine_replay import replay_configured

    report = replay_configured(settings, args.reason)
    if not args.json:
        print(f"replayed {report.replayed}: ingested {report.ingested}, duplicates {report.duplicates}, "
              f"still quarantined {report.quarantined}")
    emit(report.model_dump(), args.json)
    return 0
