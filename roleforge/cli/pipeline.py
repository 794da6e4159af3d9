"""The pipeline's commands: ingest, run, label, tune, rollback, train-job, setup-model and serve."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from roleforge.cli.common import TABLE_WIDTH, command_settings, emit, render_table, rich_console, role_names
from roleforge.ops.errors import RoleforgeError


def cmd_ingest(args: argparse.Namespace) -> int:
    settings = command_settings()
    from roleforge.tasks.ingest import ingest_configured

    report = ingest_configured(settings, list(args.paths))
    if not args.json:
        print(f"ingested {report.ingested}, duplicates {report.duplicates}, quarantined {report.quarantined}, "
              f"blank {report.blank}" + (f" -> {report.quarantine_path}" if report.quarantine_path else "")
              + (f"; {report.archived} inbox file(s) archived" if report.archived else ""))
    emit(report.model_dump(), args.json)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    settings = command_settings()
    roles = role_names(settings, args.roles)
    feedback = list(args.feedback)
    if args.sample:
        from roleforge.sample import SAMPLE_FEEDBACK

        feedback.append(str(SAMPLE_FEEDBACK))
    from roleforge.cli.night_view import print_outcomes, watching
    from roleforge.flows.params import SelfLearningRun
    from roleforge.flows.self_learning import self_learning
    from roleforge.ops.timing import STAGES
    from roleforge.runtime import start_warm_up

    settings.base_model_dir()
    from roleforge.config.recipes import check_recipes

    # The flow checks them too (a run started from the UI); here a bad one is one line instead of a flow's traceback.
    check_recipes(settings, roles or list(settings.roles), args.profile or settings.profile)
    started = time.monotonic()
    if not args.no_warm_up:
        start_warm_up(settings.resolved_tracking_uri, settings.path("mlartifacts"))
    console = rich_console(TABLE_WIDTH)
    with watching(roles or list(settings.roles), console):
        outcomes = self_learning(SelfLearningRun(feedback=feedback, roles=roles, profile=args.profile or settings.profile,
                                                 force=args.force))
    timing = STAGES.report(started, time.monotonic())
    (settings.path("runs") / "last-run-timing.json").write_text(json.dumps(timing, indent=2) + "\n")
    print_outcomes(console, outcomes)
    print(f"pipeline: {timing['wall_seconds']} s wall, {timing['stage_seconds']} s in stages, orchestration overhead "
          f"{timing['overhead_seconds']} s ({timing['overhead_share']:.1%})")
    print(f"stages: {', '.join(f'{k} {v} s' for k, v in timing['stages'].items())} -> {settings.path('runs') / 'last-run-timing.json'}")
    emit({role: outcome.model_dump() for role, outcome in outcomes.items()}, args.json)
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    settings = command_settings()
    roles = role_names(settings, args.roles) or list(settings.roles)
    from roleforge.tasks.label import label_stored, labeling_row

    results = {}
    for role in roles:
        dataset, (pair_contract, guard) = label_stored(role, settings)
        results[role] = {**labeling_row(dataset), "pair_contract": pair_contract.failure_summary or "passed",
                         "shift_guard": guard.failure_summary or "passed"}
    rich_console().print(render_table("roleforge label", list(results.values())))
    emit(results, args.json)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    settings = command_settings(args)
    settings.role(args.role)
    if args.trials < 1 or args.seed < 0:
        raise RoleforgeError("--trials must be at least 1 and --seed at least 0")
    from roleforge.flows.params import TuneRun
    from roleforge.flows.tune import tune_role

    settings.base_model_dir()
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
    settings = command_settings(args)
    settings.role(args.role)
    from roleforge.registry.tracking import mlflow_client
    from roleforge.tasks.promote import rollback

    champion, previous = rollback(mlflow_client(settings.resolved_tracking_uri), settings.registered_model_name(args.role))
    if not args.json:
        print(f"{args.role}: champion is now version {champion}" + (f", previous {previous}" if previous else ""))
    emit({"role": args.role, "champion_version": champion, "previous_version": previous}, args.json)
    return 0


def cmd_train_job(args: argparse.Namespace) -> int:
    """One role's training on a prepared snapshot, writing into --output: the entry point of an Azure ML job
    (or any batch system). Checkpoints go under --output too, so a restarted job resumes."""
    settings = command_settings(args)
    config = settings.role(args.role)
    import shutil

    import pyarrow.parquet as pq

    from roleforge.config.recipes import role_recipe
    from roleforge.registry.tracking import experiment_id, mlflow_client
    from roleforge.storage.snapshots import PreferenceDataset
    from roleforge.training.local import train_adapter

    snapshot, output = Path(args.snapshot), Path(args.output)
    if not (snapshot / "train.parquet").exists():
        raise RoleforgeError(f"{snapshot} is not a dataset snapshot (no train.parquet)")
    rows = {split: pq.ParquetFile(snapshot / f"{split}.parquet").metadata.num_rows for split in ("train", "held_out")}
    dataset = PreferenceDataset(role=args.role, snapshot_hash=args.snapshot_hash or snapshot.name, path=str(snapshot),
                                train_pairs=rows["train"], held_out_pairs=rows["held_out"], by_source={}, conflicts=0)
    base_model = settings.base_model_dir()
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


def cmd_serve(args: argparse.Namespace) -> int:
    command_settings()
    from roleforge.deployments.serve import serve_all

    serve_all(limit=args.limit, with_schedules=not args.no_schedules)
    return 0


def cmd_setup_model(args: argparse.Namespace) -> int:
    settings = command_settings()

    path = settings.base_model_dir()
    print(f"base model ready: {path}")
    return 0
