"""The `roleforge` command. Heavy libraries are imported inside each command, so that --help answers at once."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from roleforge.ops.errors import Preempted, RoleforgeError, database_error


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def emit(payload: Any, as_json: bool) -> None:
    """With --json, the last stdout line is one JSON object."""
    if as_json:
        sys.stdout.flush()
        print(json.dumps(payload, default=str), flush=True)


def _settings() -> Any:
    from pydantic import ValidationError

    from roleforge.data_contracts.feedback import describe_error
    from roleforge.runtime import prepare_environment
    from roleforge.config.settings import load_settings

    import tomllib

    try:
        settings = load_settings()
    except ValidationError as error:
        raise RoleforgeError(f"bad configuration: {describe_error(error)}") from None
    except tomllib.TOMLDecodeError as error:
        raise RoleforgeError(f"bad configuration file {os.environ.get('ROLEFORGE_CONFIG', 'roleforge.toml')}: {error}") from None
    check_writable(settings.home)
    prepare_environment(settings.home)
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


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=False, width=160)


def render_table(title: str, rows: list[dict[str, Any]]) -> Any:
    """A rich table of rows (dicts with the same keys), one column per key."""
    from rich.table import Table

    table = Table(title=title)
    for column in (rows[0] if rows else {}):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    return table


def cmd_ingest(args: argparse.Namespace) -> int:
    settings = _settings()
    from roleforge.tasks.ingest import ingest_configured

    report = ingest_configured(settings, list(args.paths))
    if not args.json:
        print(f"ingested {report.ingested}, duplicates {report.duplicates}, quarantined {report.quarantined}, "
              f"blank {report.blank}" + (f" -> {report.quarantine_path}" if report.quarantine_path else "")
              + (f"; {report.archived} inbox file(s) archived" if report.archived else ""))
    emit(report.model_dump(), args.json)
    return 0


def _roles(settings: Any, names: str | None) -> list[str] | None:
    if not names:
        return None
    roles = [name.strip() for name in names.split(",") if name.strip()]
    for role in roles:
        settings.role(role)
    return roles


def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings()
    roles = _roles(settings, args.roles)
    feedback = list(args.feedback)
    if args.sample:
        from roleforge.sample import SAMPLE_FEEDBACK

        feedback.append(str(SAMPLE_FEEDBACK))
    from roleforge.flows.params import SelfLearningRun
    from roleforge.flows.self_learning import self_learning
    from roleforge.models.base import ensure_base_model
    from roleforge.tasks.report import outcome_rows

    from roleforge.runtime import start_warm_up
    from roleforge.ops.timing import STAGES

    ensure_base_model(settings.resolved_base_model, is_default=settings.base_model is None)
    started = time.monotonic()
    if not args.no_warm_up:
        start_warm_up(settings.resolved_tracking_uri, settings.path("mlartifacts"))
    outcomes = self_learning(SelfLearningRun(feedback=feedback, roles=roles, profile=args.profile or settings.profile))
    timing = STAGES.report(started, time.monotonic())
    (settings.path("runs") / "last-run-timing.json").write_text(json.dumps(timing, indent=2) + "\n")
    _console().print(render_table("roleforge run", outcome_rows(outcomes)))
    print(f"pipeline: {timing['wall_seconds']} s wall, stages {timing['stage_seconds']} s "
          f"({', '.join(f'{k} {v}' for k, v in timing['stages'].items())}), orchestration overhead "
          f"{timing['overhead_seconds']} s ({timing['overhead_share']:.1%}) -> {settings.path('runs') / 'last-run-timing.json'}")
    emit({role: outcome.model_dump() for role, outcome in outcomes.items()}, args.json)
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    settings = _settings()
    roles = _roles(settings, args.roles) or list(settings.roles)
    from roleforge.tasks.label import label_stored, labeling_row

    results = {}
    for role in roles:
        dataset, (pair_contract, guard) = label_stored(role, settings)
        results[role] = {**labeling_row(dataset), "pair_contract": pair_contract.failure_summary or "passed",
                         "shift_guard": guard.failure_summary or "passed"}
    _console().print(render_table("roleforge label", list(results.values())))
    emit(results, args.json)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    settings = _settings()
    from roleforge.ops.status import role_status

    status = role_status(settings)
    console = _console()
    below = ("last_decision", "tuned_recipe")  # a sentence each, too long for a column, and only some roles have one
    console.print(render_table("roleforge status", [{"role": role, **{k: v for k, v in row.items() if k not in below}}
                                                    for role, row in status.items()]))
    for role, row in status.items():
        if row["last_decision"]:
            console.print(f"{role}: {decision_line(row['last_decision'])}", highlight=False, soft_wrap=True)
        if row.get("tuned_recipe"):
            console.print(f"{role}: {tuned_line(row['tuned_recipe'])}", highlight=False, soft_wrap=True)
    emit(status, args.json)
    return 0


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


def cmd_tune(args: argparse.Namespace) -> int:
    settings = _settings()
    settings.role(args.role)
    if args.trials < 1 or args.seed < 0:
        raise RoleforgeError("--trials must be at least 1 and --seed at least 0")
    from roleforge.flows.params import TuneRun
    from roleforge.flows.tune import tune_role
    from roleforge.models.base import ensure_base_model

    ensure_base_model(settings.resolved_base_model, is_default=settings.base_model is None)
    result = tune_role(TuneRun(role=args.role, trials=args.trials, profile=args.profile or settings.profile, seed=args.seed))
    if not args.json:
        best = (f"best trial {result.best_trial} (objective {result.best_objective:+.3f}) -> {result.saved_to}"
                if result.saved_to else "nothing saved")
        print(f"{result.role}: {result.trials} trial(s) of study {result.study}, {result.passed} passed the gate; {best}")
        for reason in result.reasons:
            print(f"  {reason}")
    emit(result.model_dump(), args.json)
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    settings = _settings()
    settings.role(args.role)
    from roleforge.tasks.promote import rollback
    from roleforge.registry.tracking import mlflow_client

    champion, previous = rollback(mlflow_client(settings.resolved_tracking_uri), settings.registered_model_name(args.role))
    if not args.json:
        print(f"{args.role}: champion is now version {champion}" + (f", previous {previous}" if previous else ""))
    emit({"role": args.role, "champion_version": champion, "previous_version": previous}, args.json)
    return 0


def cmd_train_job(args: argparse.Namespace) -> int:
    """One role's training on a prepared snapshot, writing into --output: the entry point of an Azure ML job
    (or any batch system). Checkpoints go under --output too, so a restarted job resumes."""
    settings = _settings()
    config = settings.role(args.role)
    import shutil

    import pyarrow.parquet as pq

    from roleforge.storage.snapshots import PreferenceDataset
    from roleforge.models.base import ensure_base_model
    from roleforge.config.recipes import role_recipe
    from roleforge.registry.tracking import experiment_id, mlflow_client
    from roleforge.training.local import train_adapter

    snapshot, output = Path(args.snapshot), Path(args.output)
    if not (snapshot / "train.parquet").exists():
        raise RoleforgeError(f"{snapshot} is not a dataset snapshot (no train.parquet)")
    rows = {split: pq.ParquetFile(snapshot / f"{split}.parquet").metadata.num_rows for split in ("train", "held_out")}
    dataset = PreferenceDataset(role=args.role, snapshot_hash=args.snapshot_hash or snapshot.name, path=str(snapshot),
                                train_pairs=rows["train"], held_out_pairs=rows["held_out"], by_source={}, conflicts=0)
    base_model = ensure_base_model(settings.resolved_base_model, is_default=settings.base_model is None)
    client = mlflow_client(settings.resolved_tracking_uri)
    candidate = train_adapter(
        dataset, config.system_prompt, role_recipe(args.profile or settings.profile, settings.role_training(args.role), args.role), base_model,
        output / "checkpoints", settings.path("adapters"), client, experiment_id(client, settings.path("mlartifacts")),
        {"roleforge.entry_point": "train-job"}, base_adapter=config.base_adapter, min_pairs=config.min_pairs)
    shutil.copytree(candidate.adapter_path, output / "adapter", dirs_exist_ok=True)
    staging = output / ".candidate.json.partial"
    staging.write_text(candidate.model_dump_json())
    staging.replace(output / "candidate.json")  # written last: its presence means the adapter is complete
    if not args.json:
        print(f"{args.role}: {candidate.steps} steps -> {output / 'adapter'}")
    emit(candidate.model_dump(), args.json)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    settings = _settings()
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


def _bench_done(report: dict[str, Any], out: Path, summary: str, args: argparse.Namespace,
                shown: dict[str, Any] | None = None) -> int:
    """A benchmark's end: the whole report written to `out`, a summary for people, the JSON line for machines. The
    report's `machine` has the speed probe read before the benchmark (by main) and now."""
    from roleforge.bench import machine, speed_probe, write_report

    report.update(machine={**machine(), "speed_probe_s": {"before": args.speed_before, "after": speed_probe()}})
    as_json = args.json
    if shown is not None:
        shown.update(machine=report["machine"])
    write_report(report, out)
    if not as_json:
        print(summary)
        print(f"written to {out}")
    emit(report if shown is None else shown, as_json)
    return 0


def cmd_bench_dpo(args: argparse.Namespace) -> int:
    settings = _settings()
    import tempfile

    from roleforge.bench import dpo_benchmark, random_model
    from roleforge.models.base import ensure_base_model

    if args.pairs < 1 or args.held_out < 1 or args.repeats < 1 or args.epochs <= 0 or (args.batch_size is not None and args.batch_size < 1):
        raise RoleforgeError("--pairs, --held-out, --repeats and --batch-size must be at least 1, --epochs above 0")
    base_model = Path(args.model) if args.model else ensure_base_model(settings.resolved_base_model, settings.base_model is None)
    pairs_file = Path(args.pairs_file) if args.pairs_file else None
    if pairs_file is not None and not pairs_file.is_file():
        raise RoleforgeError(f"--pairs-file {pairs_file}: no such file (write one with `roleforge bench pairs --out FILE`)")
    with tempfile.TemporaryDirectory(prefix="bench-dpo-", dir=settings.path("bench")) as work:
        if args.model_shape:
            base_model = random_model(args.model_shape, base_model, Path(work) / args.model_shape)
        report = dpo_benchmark(base_model, args.pairs, args.epochs, args.repeats, args.held_out, Path(work), pairs_file,
                               args.batch_size)
    return _bench_done(
        report, Path(args.out) if args.out else settings.path("bench") / "dpo.json",
        f"TRL {report['trl_pairs_per_s']} pairs/s, roleforge {report['roleforge_pairs_per_s']} pairs/s: {report['speedup']}x; "
        f"held-out accuracy {report['trl_heldout_accuracy']} vs {report['roleforge_heldout_accuracy']}; peak RSS "
        f"{report['trl_peak_rss_mb']} vs {report['roleforge_peak_rss_mb']} MB; MFU {report['mfu']}",
        args, {k: v for k, v in report.items() if k != "runs"})


def cmd_bench_pairs(args: argparse.Namespace) -> int:
    _settings()
    from roleforge.bench import save_pairs

    counts = save_pairs(Path(args.out))
    if not args.json:
        print(f"{counts['train']} training and {counts['held_out']} held-out pairs -> {args.out}")
    emit({"path": args.out, **counts}, args.json)
    return 0


def cmd_bench_ingest(args: argparse.Namespace) -> int:
    settings = _settings()
    import tempfile

    from roleforge.bench import ingest_benchmark

    if args.rows < 1 or not 0 <= args.bad_share < 1 or args.repeats < 1:
        raise RoleforgeError("--rows and --repeats must be at least 1 and --bad-share in [0, 1)")
    with tempfile.TemporaryDirectory(prefix="bench-ingest-", dir=settings.path("bench")) as work:
        report = ingest_benchmark(args.rows, args.bad_share, Path(work), args.repeats, args.server)
    median = f" (median of {args.repeats})" if args.repeats > 1 else ""
    return _bench_done(report, Path(args.out) if args.out else settings.path("bench") / "ingest.json",
                       f"roleforge ingest {report['events_per_s']:.0f} events/s, pandas read_json + to_sql "
                       f"{report['pandas_events_per_s']:.0f} events/s{median} ({report['rows']} rows, "
                       f"{report['quarantined']} quarantined)", args)


def cmd_bench_generate(args: argparse.Namespace) -> int:
    settings = _settings()
    from roleforge.bench import generate_benchmark
    from roleforge.models.base import ensure_base_model

    if args.prompts < 1 or args.max_new_tokens < 1 or args.batch_size < 2:
        raise RoleforgeError("--prompts and --max-new-tokens must be at least 1, --batch-size at least 2")
    base_model = Path(args.model) if args.model else ensure_base_model(settings.resolved_base_model,
                                                                        is_default=settings.base_model is None)
    report = generate_benchmark(base_model, args.prompts, args.max_new_tokens, args.batch_size)
    return _bench_done(report, settings.path("bench") / "generate.json",
                       f"batched {report['batched_new_tokens_per_s']:.1f} new tokens/s vs one prompt at a time "
                       f"{report['single_new_tokens_per_s']:.1f} ({report['speedup']}x)", args)


def cmd_bench_label(args: argparse.Namespace) -> int:
    settings = _settings()
    from roleforge.bench import label_benchmark
    from roleforge.models.base import ensure_base_model

    base_model = ensure_base_model(settings.resolved_base_model, settings.base_model is None) if args.judge_pairs else None
    report = label_benchmark(args.rows, args.judge_pairs, base_model)
    return _bench_done(report, Path(args.out) if args.out else settings.path("bench") / "label.json",
                       json.dumps(report, indent=2), args)


def cmd_bench_cli(args: argparse.Namespace) -> int:
    settings = _settings()
    from roleforge.bench import cli_benchmark

    if args.repeats < 1:
        raise RoleforgeError("--repeats must be at least 1")
    report = cli_benchmark(args.repeats)
    return _bench_done(report, settings.path("bench") / "cli.json",
                       f"roleforge --help {report['help_seconds']} s, roleforge status {report['status_seconds']} s "
                       f"(median of {args.repeats})", args)


def cmd_serve(args: argparse.Namespace) -> int:
    _settings()
    from roleforge.deployments.serve import serve_all

    serve_all(limit=args.limit, with_schedules=not args.no_schedules)
    return 0


def _router(settings: Any, role: str, model: str) -> tuple[Any, str | None]:
    """A router serving the role's champion (model="champion") or the base model (model="base")."""
    settings.role(role)
    from roleforge.models.generation import RoleRouter, champion_adapters
    from roleforge.models.base import ensure_base_model

    base_model = ensure_base_model(settings.resolved_base_model, is_default=settings.base_model is None)
    found = champion_adapters(settings, [role]) if model == "champion" else {}
    if model == "champion" and role not in found:
        raise RoleforgeError(f"role {role} has no champion yet: run `roleforge run` first, or use --model base")
    router = RoleRouter(base_model, {r: path for r, (path, _) in found.items()})
    return router, found[role][1] if role in found else None


def cmd_generate(args: argparse.Namespace) -> int:
    settings = _settings()
    from roleforge.models.generation import read_prompts

    rows = read_prompts(args.prompts, "prompt")
    router, version = _router(settings, args.role, args.model)
    answers = router.generate(args.role, settings.role(args.role).system_prompt, [r["prompt"] for r in rows],
                              max_new_tokens=args.max_new_tokens)
    for row, answer in zip(rows, answers):
        print(json.dumps({"role": args.role, "model": args.model, "version": version, "prompt": row["prompt"], "response": answer}))
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    settings = _settings()
    router, version = _router(settings, args.role, args.model)
    print(f"{args.role} ({args.model}{' v' + version if version else ''}); an empty line or Ctrl-D ends the chat.")
    while True:
        try:
            prompt = input("you> ").strip()
        except EOFError:
            break
        if not prompt:
            break
        print(f"{args.role}> {router.generate(args.role, settings.role(args.role).system_prompt, [prompt])[0]}", flush=True)
    return 0


def cmd_evaluate_tool_use(args: argparse.Namespace) -> int:
    settings = _settings()
    from roleforge.models.generation import read_tool_use_prompts

    rows = read_tool_use_prompts(args.prompts)
    router, version = _router(settings, args.role, args.model)
    from roleforge.models.generation import tool_use_rates

    answers = router.generate(args.role, settings.role(args.role).system_prompt, [r["request"] for r in rows])
    report = {"role": args.role, "model": args.model, "version": version, **tool_use_rates(answers, rows)}
    if args.answers:
        from roleforge.evaluation.tool_use import check_tool_use

        with open(args.answers, "w", encoding="utf-8") as out:
            for row, answer in zip(rows, answers):
                check = check_tool_use(answer)
                out.write(json.dumps({"request": row["request"], "tool": row["tool"], "answer": answer, "called": check.tool,
                                      "compliant": check.compliant(row["tool"]), "args": check.args,
                                      "args_valid": check.args_valid(row)}) + "\n")
    if not args.json:
        args_valid = f"{report['args_valid_rate']:.3f} of {report['args_checked']}" if report["args_checked"] else "n/a (no row states a right call)"
        print(f"{args.role} {args.model}{' v' + version if version else ''}: n={report['n']} "
              f"thought={report['thought_rate']:.3f} json_valid={report['json_valid_rate']:.3f} "
              f"full_compliance={report['full_compliance_rate']:.3f} args_valid={args_valid}")
    emit(report, args.json)
    return 0


def cmd_evaluate_role(args: argparse.Namespace) -> int:
    settings = _settings()
    from roleforge.evaluation.role_report import role_prompts, role_report
    from roleforge.models.generation import champion_adapters
    from roleforge.models.base import ensure_base_model

    config = settings.role(args.role)
    rows = role_prompts(args.role, Path(args.prompts) if args.prompts else None, config.output)
    adapter, version = (Path(args.adapter), None) if args.adapter else champion_adapters(settings, [args.role]).get(args.role, (None, None))
    base_model = ensure_base_model(settings.resolved_base_model, is_default=settings.base_model is None)
    report = role_report(base_model, adapter, config.system_prompt, config.output, rows,
                         config.evaluation.max_new_tokens, config.evaluation.capability_max_new_tokens, config.gate.confidence,
                         config.evaluation.capability_checks)
    answers = report.pop("answers")
    report = {"role": args.role, "adapter_path": str(adapter) if adapter else None, "version": version, **report}
    if args.answers:
        Path(args.answers).write_text("".join(json.dumps(a) + "\n" for a in answers), encoding="utf-8")
    if not args.json:
        for side in ("base", "adapter"):
            if side in report:
                kept = report[side].get("contract")
                print(f"{args.role} {side}: capability {report[side]['capability_passed']}/{report['capability_questions']}"
                      + (f", contract {kept['compliant']}/{kept['answers']} [{kept['low']:.2f}, {kept['high']:.2f}]" if kept else "")
                      + "".join(f", {k} {v:.3f}" for k, v in report[side].get("tool_use", {}).items() if k.endswith("rate")))
    emit(report, args.json)
    return 0


def cmd_setup_model(args: argparse.Namespace) -> int:
    settings = _settings()
    from roleforge.models.base import ensure_base_model

    path = ensure_base_model(settings.resolved_base_model, is_default=settings.base_model is None)
    print(f"base model ready: {path}")
    return 0


def build_parser() -> Parser:
    from roleforge.bench import MODEL_SHAPES

    parser = Parser(prog="roleforge", description="Self-learning pipeline for role-playing LLM agents.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    ingest = commands.add_parser("ingest", help="ingest feedback files (JSONL, CSV, Parquet; paths or fsspec URLs)")
    ingest.add_argument("paths", nargs="*", help="feedback files or directories (default: the inbox, $ROLEFORGE_HOME/inbox; "
                        "its files move to $ROLEFORGE_HOME/archive once stored)")
    ingest.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    ingest.set_defaults(handler=cmd_ingest)

    run = commands.add_parser("run", help="run the self-learning flow locally")
    run.add_argument("feedback", nargs="*", help="feedback files or directories to ingest first")
    run.add_argument("--sample", action="store_true", help="ingest the bundled sample feedback first")
    run.add_argument("--roles", help="comma-separated roles (default: all configured)")
    run.add_argument("--profile", choices=["quick", "default"], help="training profile (default: settings.profile)")
    run.add_argument("--json", action="store_true", help="print per-role outcomes as JSON on the last line")
    run.add_argument("--no-warm-up", action="store_true",
                     help="do not prepare MLflow and the stages' imports while Prefect starts (to measure what that saves)")
    run.set_defaults(handler=cmd_run)

    label = commands.add_parser("label", help="label what the store holds into preference pairs, per role")
    label.add_argument("--roles", help="comma-separated roles (default: all configured)")
    label.add_argument("--json", action="store_true", help="print per-role counts as JSON on the last line")
    label.set_defaults(handler=cmd_label)

    status = commands.add_parser("status", help="per-role feedback, pairs and champion")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=cmd_status)

    tune = commands.add_parser("tune", help="search a role's training recipe under its promotion gate (Optuna); the "
                                            "best passing recipe is saved for the role's trainings")
    tune.add_argument("--role", required=True)
    tune.add_argument("--trials", type=int, default=8, help="trials to run now (default 8); a later tune adds to the study")
    tune.add_argument("--profile", choices=["quick", "default"], help="recipe profile the trials start from (default: settings.profile)")
    tune.add_argument("--seed", type=int, default=0, help="seed of the sampler (default 0)")
    tune.add_argument("--json", action="store_true", help="print the tune's result as JSON on the last line")
    tune.set_defaults(handler=cmd_tune)

    rollback = commands.add_parser("rollback", help="move a role's champion back to the previous version")
    rollback.add_argument("--role", required=True)
    rollback.add_argument("--json", action="store_true")
    rollback.set_defaults(handler=cmd_rollback)

    audit = commands.add_parser("audit", help="the audit log of ingests, promotion decisions and rollbacks")
    audit.add_argument("--last", type=int, default=20, help="entries to show (0: all; default 20); the chain is always checked whole")
    audit.add_argument("--json", action="store_true")
    audit.set_defaults(handler=cmd_audit)

    bench = commands.add_parser("bench", help="benchmarks that print JSON").add_subparsers(
        dest="benchmark", required=True, parser_class=Parser)
    bench_dpo = bench.add_parser("dpo", help="DPO training: stock TRL vs roleforge's path, same model, pairs and epochs")
    bench_dpo.add_argument("--pairs", type=int, default=64, help="training pairs from the sample tool-agent data (default 64)")
    bench_dpo.add_argument("--epochs", type=float, default=1.0)
    bench_dpo.add_argument("--repeats", type=int, default=1, help="runs of each path, alternating which goes first")
    bench_dpo.add_argument("--held-out", type=int, default=64, help="held-out pairs both adapters are scored on")
    bench_dpo.add_argument("--batch-size", type=int, help="pairs per step for both paths (default: the TRL recipe's 4)")
    bench_dpo.add_argument("--model", help="base model directory (default: the configured base model)")
    bench_dpo.add_argument("--model-shape", choices=sorted(MODEL_SHAPES),
                           help="train a model of this architecture with random weights and --model's tokenizer "
                                "(throughput and memory only)")
    bench_dpo.add_argument("--pairs-file", help="JSONL pairs (prompt, chosen, rejected, split) instead of labeling the "
                                                "sample data; see `bench pairs`")
    bench_dpo.add_argument("--out", help="JSON file to write (default $ROLEFORGE_HOME/bench/dpo.json)")
    bench_dpo.add_argument("--json", action="store_true")
    bench_dpo.set_defaults(handler=cmd_bench_dpo)

    bench_pairs = bench.add_parser("pairs", help="write the labeled sample tool-agent pairs that `bench dpo` trains on")
    bench_pairs.add_argument("--out", required=True, help="JSONL file to write")
    bench_pairs.add_argument("--json", action="store_true")
    bench_pairs.set_defaults(handler=cmd_bench_pairs)

    bench_ingest = bench.add_parser("ingest", help="ingest throughput on generated rows vs a plain pandas read + to_sql")
    bench_ingest.add_argument("--rows", type=int, default=1_000_000, help="feedback rows to generate (default 1000000)")
    bench_ingest.add_argument("--bad-share", type=float, default=0.02, help="share of rows that break the contract (default 0.02)")
    bench_ingest.add_argument("--repeats", type=int, default=1,
                              help="runs of each, alternating which goes first; the report gives their medians")
    bench_ingest.add_argument("--server", metavar="URL",
                              help="a PostgreSQL server, by the SQLAlchemy URL of any database on it: each run stores "
                                   "into a database created there for it and dropped after (default: SQLite files)")
    bench_ingest.add_argument("--out", help="JSON file to write (default $ROLEFORGE_HOME/bench/ingest.json)")
    bench_ingest.add_argument("--json", action="store_true")
    bench_ingest.set_defaults(handler=cmd_bench_ingest)

    bench_generate = bench.add_parser("generate", help="greedy generation: batched vs one prompt at a time, new tokens/s")
    bench_generate.add_argument("--prompts", type=int, default=32, help="held-out-style prompts (default 32)")
    bench_generate.add_argument("--max-new-tokens", type=int, default=64, help="longest answer (default 64)")
    bench_generate.add_argument("--batch-size", type=int, default=32, help="prompts per batched call (default 32)")
    bench_generate.add_argument("--model", help="a model directory (default: the base model)")
    bench_generate.add_argument("--json", action="store_true")
    bench_generate.set_defaults(handler=cmd_bench_generate)

    bench_label = bench.add_parser("label", help="heuristic labeling throughput; local judge batched vs one at a time")
    bench_label.add_argument("--rows", type=int, default=100_000, help="feedback rows to label (default 100000)")
    bench_label.add_argument("--judge-pairs", type=int, default=16, help="pairs for the local-judge comparison (0: skip)")
    bench_label.add_argument("--out", help="JSON file to write (default $ROLEFORGE_HOME/bench/label.json)")
    bench_label.add_argument("--json", action="store_true")
    bench_label.set_defaults(handler=cmd_bench_label)

    bench_cli = bench.add_parser("cli", help="start-up latency: roleforge --help and roleforge status, fresh processes")
    bench_cli.add_argument("--repeats", type=int, default=5, help="timed runs of each (default 5)")
    bench_cli.add_argument("--json", action="store_true")
    bench_cli.set_defaults(handler=cmd_bench_cli)

    generate = commands.add_parser("generate", help="answer prompts as a role's champion (or the base model)")
    generate.add_argument("--role", required=True)
    generate.add_argument("--prompts", required=True, help="JSONL with `prompt`, or one prompt per line")
    generate.add_argument("--model", choices=["champion", "base"], default="champion")
    generate.add_argument("--max-new-tokens", type=int, default=160)
    generate.set_defaults(handler=cmd_generate)

    chat = commands.add_parser("chat", help="talk to a role's champion (or the base model)")
    chat.add_argument("--role", required=True)
    chat.add_argument("--model", choices=["champion", "base"], default="champion")
    chat.set_defaults(handler=cmd_chat)

    evaluate = commands.add_parser("evaluate", help="task evaluations").add_subparsers(
        dest="evaluation", required=True, parser_class=Parser)
    tool_use = evaluate.add_parser("tool-use", help="Thought / JSON / full-compliance / right-arguments rates on tool-use requests")
    tool_use.add_argument("--prompts", required=True, help="JSONL with `request`, `tool` (the tool that should be called) and optionally what a right call does (`answer`, `query_terms`, calendar `action`/`title`/`date`/`time`)")
    tool_use.add_argument("--model", choices=["base", "champion"], default="champion")
    tool_use.add_argument("--role", default="tool-agent")
    tool_use.add_argument("--answers", help="also write each request, answer and verdict to this JSONL file")
    tool_use.add_argument("--json", action="store_true")
    tool_use.set_defaults(handler=cmd_evaluate_tool_use)

    role_eval = evaluate.add_parser("role", help="base model vs the role's champion (or --adapter) on prompts it was not "
                                                 "trained on: output contract, retained capability, tool calls")
    role_eval.add_argument("--role", required=True)
    role_eval.add_argument("--prompts", help="JSONL with `prompt` (or `request`) and optionally `role` (default: the "
                                             "bundled evaluation set for the role)")
    role_eval.add_argument("--adapter", help="an adapter directory to evaluate instead of the champion")
    role_eval.add_argument("--answers", help="also write each prompt with both answers to this JSONL file")
    role_eval.add_argument("--json", action="store_true")
    role_eval.set_defaults(handler=cmd_evaluate_role)

    serve = commands.add_parser("serve", help="serve the deployments of prefect.yaml (with schedules) from this process")
    serve.add_argument("--limit", type=int, default=1, help="flow runs at once (default 1: one CPU-heavy run at a time)")
    serve.add_argument("--no-schedules", action="store_true", help="serve for manual runs only")
    serve.set_defaults(handler=cmd_serve)

    train_job = commands.add_parser("train-job", help="train one role on a dataset snapshot into a folder (the Azure ML job entry point)")
    train_job.add_argument("--role", required=True)
    train_job.add_argument("--snapshot", required=True, help="a snapshot folder (train.parquet, held_out.parquet)")
    train_job.add_argument("--snapshot-hash", help="its content hash (default: the folder name)")
    train_job.add_argument("--output", required=True, help="where checkpoints, the adapter and candidate.json go")
    train_job.add_argument("--profile", choices=["quick", "default"])
    train_job.add_argument("--json", action="store_true")
    train_job.set_defaults(handler=cmd_train_job)

    setup_model = commands.add_parser("setup-model", help="convert the default base model once (make setup runs it)")
    setup_model.set_defaults(handler=cmd_setup_model)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM (a scheduler, a spot eviction) unwinds like Ctrl-C, so the local Prefect server we started stops too;
    # a training in progress first writes a checkpoint (roleforge/training/preemption.py).
    from roleforge.training.preemption import install_handler

    install_handler()
    if getattr(args, "benchmark", "pairs") != "pairs":  # a benchmark that measures: how fast the machine runs first
        from roleforge.bench import speed_probe

        args.speed_before = speed_probe()
    try:
        return args.handler(args)
    except RoleforgeError as error:
        print(f"roleforge: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("roleforge: interrupted", file=sys.stderr)
        return 130
    except Preempted as error:
        print(f"roleforge: preempted: {error}", file=sys.stderr)
        return 143
    except OSError as error:
        if os.environ.get("ROLEFORGE_DEBUG"):
            raise
        where = f": {error.filename}" if error.filename else ""
        print(f"roleforge: error: {error.strerror or error}{where}", file=sys.stderr)
        return 1
    except Exception as error:
        problem = database_error(error)
        if problem is None or os.environ.get("ROLEFORGE_DEBUG"):
            raise
        print(f"roleforge: error: {problem}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
