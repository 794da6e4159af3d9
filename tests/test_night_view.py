"""What people read of a night: the live lines while it runs, the outcome table after it, and `roleforge status`, each
within 100 columns and in readable values."""

import argparse
import json
import io
import threading

from rich.console import Console

from roleforge.cli.night_view import LiveLines, PlainLines, print_outcomes
from roleforge.ops.progress import END, OUTCOME, START, STEP, ProgressEvent
from roleforge.tasks.report import RoleOutcome

LONG_REASON = ("guardrail broken: output contract followed in 3 of 16 held-out answers against the opponent's 11 "
               "(McNemar p=0.0039); first miss: no line starting with 'Decision:'; drifted 0.812 nats/token from the "
               "base model on general prompts (limit 0.500)")


def night_outcomes() -> dict[str, RoleOutcome]:
    return {
        "ceo": RoleOutcome(role="ceo", pairs=312, trained=True, promoted=True, version="3", champion_version="3",
                           opponent="champion", preference_accuracy=0.625, opponent_preference_accuracy=0.5,
                           accuracy_gain=0.125, accuracy_gain_low=-0.047, accuracy_gain_high=0.297, win_rate=0.55,
                           win_rate_low=0.4, win_rate_high=0.69, seconds=148.2,
                           reason="accuracy gain +0.125 over champion (95% interval -0.047 to +0.297)"),
        "cfo": RoleOutcome(role="cfo", pairs=290, trained=True, version="4", preference_accuracy=0.41,
                           opponent_preference_accuracy=0.5, accuracy_gain=-0.09, seconds=131, reason=LONG_REASON),
        "coo": RoleOutcome(role="coo", pairs=12, seconds=2.5,
                           reason="only 4 new training pairs since the last training (needs 16)"),
        "tool-agent": RoleOutcome(role="tool-agent", pairs=540, trained=True, promoted=True, version="12",
                                  preference_accuracy=0.875, opponent_preference_accuracy=0.5, accuracy_gain=0.375,
                                  accuracy_gain_low=0.25, accuracy_gain_high=0.5, seconds=212.4, reason="accuracy gain",
                                  task_metrics={"candidate": {"full_compliance_rate": 0.8},
                                                "opponent": {"full_compliance_rate": 0.4}}),
    }


def rendered(print_to) -> list[str]:
    buffer = io.StringIO()
    print_to(Console(file=buffer, width=100, color_system=None))
    return buffer.getvalue().splitlines()


def test_the_outcome_table_fits_100_columns_one_line_per_role_with_the_reasons_below():
    outcomes = night_outcomes()
    lines = rendered(lambda console: print_outcomes(console, outcomes))
    assert max(len(line) for line in lines) <= 100
    rows = {role: [i for i, line in enumerate(lines) if line.lstrip().startswith((f"{role} ", f"{role}:"))]
            for role in outcomes}
    assert all(len(found) == 2 for found in rows.values()), "one table row and one reason line per role"
    table_row = {role: lines[found[0]] for role, found in rows.items()}
    assert "promoted v3" in table_row["ceo"] and "+0.12 [-0.05,+0.30]" in table_row["ceo"] and "0.62/0.50" in table_row["ceo"]
    assert "not promoted" in table_row["cfo"] and "not trained" in table_row["coo"]
    assert "0.80/0.40" in table_row["tool-agent"] and "promoted v12" in table_row["tool-agent"]
    last_row = max(found[0] for found in rows.values())
    assert min(found[1] for found in rows.values()) > last_row, "the reasons come after the table"
    below = " ".join(line.strip() for line in lines[last_row + 1:])
    assert "drifted 0.812 nats/token" in below and "(needs 16)" in below


def test_status_shows_readable_values_and_keeps_paths_to_json(home, capsys):
    from roleforge.cli.status import cmd_status
    from roleforge.ops.status import write_training_status

    adapter = str(home / "adapters" / "ceo" / "0123456789abcdef0123456789abcdef")
    write_training_status(home, "ceo", "ready", adapter_path=adapter, steps=24, mlflow_run_id="0123456789abcdef",
                          metrics={"train_loss": 0.61234, "train_runtime": 40.2044, "train_samples_per_second": 2.39})
    write_training_status(home, "cfo", "failed", error="role cfo: 3 training pairs in snapshot 1a2b, fewer than the 8 it needs")
    assert cmd_status(argparse.Namespace(json=True, disk=False)) == 0
    out = capsys.readouterr().out.splitlines()
    table, payload = out[:-1], out[-1]
    assert max(len(line) for line in table) <= 100 and "{" not in "".join(table) and adapter not in "\n".join(table)
    ceo = next(line for line in table if line.lstrip().startswith("ceo "))
    assert all(value in ceo.split() for value in ("ready", "40", "0.612", "-")), ceo
    assert any(line.startswith("cfo: training failed: role cfo: 3 training pairs") for line in table)
    assert adapter in payload, "--json keeps the paths"
    assert set(json.loads(payload)) == {"ceo", "cfo", "coo", "tool-agent"}, "--json is keyed by role alone"
    assert any(line.startswith("disk: ") for line in table)
    assert cmd_status(argparse.Namespace(json=True, disk=True)) == 0
    disk = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert disk["total"] > 0 and "store" in disk


def test_live_lines_follow_every_role_from_several_threads():
    view = LiveLines(["ceo", "cfo", "tool-agent"])

    def role_night(role: str) -> None:
        view(ProgressEvent(role, "train", START))
        for step in range(1, 21):
            view(ProgressEvent(role, "train", STEP, f"loss {1 / step:.3f}", step, 40))
        if role == "tool-agent":
            view(ProgressEvent(role, "train", END, seconds=12.0))
            view(ProgressEvent(role, "done", OUTCOME, "promoted v2"))

    threads = [threading.Thread(target=role_night, args=(role,)) for role in ("ceo", "cfo", "tool-agent")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = rendered(lambda console: console.print(view.render()))
    assert len(lines) == 3 and max(len(line) for line in lines) <= 100, "the night's own line shows once it starts"
    by_role = {line.split()[0]: line for line in lines}
    assert "train" in by_role["ceo"] and "20/40" in by_role["ceo"] and "loss 0.050" in by_role["ceo"]
    assert "done" in by_role["tool-agent"] and "promoted v2" in by_role["tool-agent"]


def test_plain_lines_print_every_stage_and_a_role_s_steps_now_and_then():
    stream = io.StringIO()
    plain = PlainLines(stream)
    plain(ProgressEvent(None, "ingest", START))
    for step in range(1, 11):
        plain(ProgressEvent("ceo", "train", STEP, "loss 0.5", step, 10))
    plain(ProgressEvent("ceo", "train", END, seconds=30.4))
    lines = [line.split(" ", 1)[1] for line in stream.getvalue().splitlines()]
    assert lines == ["ingest: started", "ceo train: loss 0.5, 1/10", "ceo train: loss 0.5, 10/10", "ceo train: done in 30.4 s"]
