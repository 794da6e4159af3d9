"""status and audit: what each role holds and what was decided, and the audit log."""

from __future__ import annotations

import argparse
from typing import Any

from roleforge.cli.common import TABLE_WIDTH, command_settings, compact_table, emit, rich_console


def cmd_status(args: argparse.Namespace) -> int:
    settings = command_settings()
    from roleforge.ops.status import disk_status, role_status

    status = role_status(settings)
    disk = disk_status(settings)
    console = rich_console(TABLE_WIDTH)
    console.print(compact_table("roleforge status", status_rows(status),
                                caption="train s, loss: the last training's; accuracy: the champion's; paths: --json"))
    # A sentence each, too long for a column, and only some roles have one.
    for role, row in status.items():
        if row.get("training_error"):
            console.print(f"{role}: training {row['training']}: {row['training_error']}", highlight=False, markup=False)
        if row["last_decision"]:
            console.print(f"{role}: {decision_line(row['last_decision'])}", highlight=False, markup=False)
        if row.get("tuned_recipe"):
            console.print(f"{role}: {tuned_line(row['tuned_recipe'])}", highlight=False, markup=False)
    console.print(disk_line(disk), highlight=False)
    # --json stays role -> row, as scripts read it; the disk breakdown is its own document.
    emit(disk if args.disk else status, args.json)
    return 0


def status_rows(status: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per role, its status in short values a person reads: counts, the training's state, seconds and loss, the
    champion's version and accuracy, and when the training status last changed."""
    def number(value: float | None, spec: str) -> str:
        return "" if value is None else format(value, spec)

    rows = []
    for role, row in status.items():
        metrics, champion = row.get("training_metrics") or {}, row.get("champion_metrics") or {}
        rows.append({"role": role, "feedback": row["feedback"], "pairs": row["pairs"], "training": row["training"],
                     "train s": number(metrics.get("train_runtime"), ".0f"), "loss": number(metrics.get("train_loss"), ".3f"),
                     "champion": f"v{row['champion_version']}" if row.get("champion_version") else "-",
                     "accuracy": number(champion.get("preference_accuracy"), ".2f"),
                     "updated": minutes(row.get("training_updated"))})
    return rows


def minutes(timestamp: str | None) -> str:
    """An ISO time to the minute, as people read it: '2026-11-23 16:49'."""
    return str(timestamp or "")[:16].replace("T", " ")


def disk_line(disk: dict[str, int | None]) -> str:
    """Disk use in one line: 'disk: 1.2 GB (store 3.1 MB, checkpoints 40.2 MB, ...)', and the bound when it is over."""
    from roleforge.ops.disk import DISK_KINDS, human_bytes

    parts = ", ".join(f"{kind.replace('_', ' ')} {human_bytes(disk[kind] or 0)}" for kind in DISK_KINDS if disk[kind])
    bound = disk["max_home_bytes"]
    over = f"; over retention.max_home_gb ({human_bytes(bound)}): run `roleforge gc`" if bound and (disk["total"] or 0) > bound else ""
    return f"disk: {human_bytes(disk['total'] or 0)}" + (f" ({parts})" if parts else "") + over


def decision_line(decision: dict[str, Any]) -> str:
    """A role's last decision in words: 'promoted version 3 (2026-11-23 16:49 UTC): accuracy gain ...' (the audit
    log's times are UTC)."""
    verb = {"promote": "promoted", "hold": "held back", "rollback": "rolled back to"}[decision["action"]]
    when = f" ({minutes(decision['time'])} UTC)" if decision.get("time") else ""
    reason = f": {decision['reason']}" if decision.get("reason") else ""
    return f"{verb} version {decision['version']}{when}{reason}"


def tuned_line(tuned: dict[str, Any]) -> str:
    """A role's saved tuned recipe in words: 'recipe: tuned (trial 3, objective 0.41, study ceo-default, ...)'."""
    if "error" in tuned:
        return f"recipe: tuned recipe unreadable: {tuned['error']}"
    return (f"recipe: tuned (trial {tuned.get('trial')}, objective {tuned.get('objective', float('nan')):.2f}, "
            f"study {tuned.get('study')}, {minutes(tuned.get('tuned_at'))} UTC)")


def cmd_audit(args: argparse.Namespace) -> int:
    settings = command_settings()
    from roleforge.ops import audit

    entries = audit.read(settings.home)[-args.last:] if args.last else audit.read(settings.home)
    broken = audit.verify(settings.home)
    if not args.json:
        for entry in entries:
            details = ", ".join(f"{k}={v}" for k, v in entry.items() if k not in ("time", "actor", "action", "prev"))
            print(f"{entry['time']} {entry['actor']} {entry['action']}: {details}")
        print(f"{audit.audit_path(settings.home)}: " + ("chain intact" if broken is None else f"chain broken at entry {broken}"))
    emit({"path": str(audit.audit_path(settings.home)), "entries": entries, "chain_intact": broken is None,
          "broken_at": broken}, args.json)
    return 0 if broken is None else 1
