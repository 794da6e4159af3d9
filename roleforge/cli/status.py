"""status and audit: what each role holds and what was decided, and the audit log."""

from __future__ import annotations

import argparse
from typing import Any

from roleforge.cli.common import command_settings, emit, render_table, rich_console


def cmd_status(args: argparse.Namespace) -> int:
    settings = command_settings()
    from roleforge.ops.status import disk_status, role_status

    status = role_status(settings)
    disk = disk_status(settings)
    console = rich_console()
    below = ("last_decision", "tuned_recipe")  # a sentence each, too long for a column, and only some roles have one
    console.print(render_table("roleforge status", [{"role": role, **{k: v for k, v in row.items() if k not in below}}
                                                    for role, row in status.items()]))
    for role, row in status.items():
        if row["last_decision"]:
            console.print(f"{role}: {decision_line(row['last_decision'])}", highlight=False, soft_wrap=True)
        if row.get("tuned_recipe"):
            console.print(f"{role}: {tuned_line(row['tuned_recipe'])}", highlight=False, soft_wrap=True)
    console.print(disk_line(disk), highlight=False, soft_wrap=True)
    emit({**status, "disk": disk}, args.json)
    return 0


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
    when = f" ({decision['time'][:16].replace('T', ' ')} UTC)" if decision.get("time") else ""
    reason = f": {decision['reason']}" if decision.get("reason") else ""
    return f"{verb} version {decision['version']}{when}{reason}"


def tuned_line(tuned: dict[str, Any]) -> str:
    """A role's saved tuned recipe in words: 'recipe: tuned (trial 3, objective 0.41, study ceo-default, ...)'."""
    if "error" in tuned:
        return f"recipe: tuned recipe unreadable: {tuned['error']}"
    return (f"recipe: tuned (trial {tuned.get('trial')}, objective {tuned.get('objective', float('nan')):.2f}, "
            f"study {tuned.get('study')}, {str(tuned.get('tuned_at', ''))[:16].replace('T', ' ')} UTC)")


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
