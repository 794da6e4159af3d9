"""The `roleforge` command line: its arguments, and `main`, which turns errors a user can fix into one line."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from roleforge.cli.bench import (cmd_bench_cli, cmd_bench_dpo, cmd_bench_generate, cmd_bench_ingest, cmd_bench_label,
                                 cmd_bench_night, cmd_bench_pairs, cmd_bench_serve)
from roleforge.cli.common import Parser
from roleforge.cli.export import cmd_export_vllm
from roleforge.cli.generation import cmd_chat, cmd_evaluate_role, cmd_evaluate_tool_use, cmd_generate
from roleforge.cli.maintenance import cmd_gc
from roleforge.cli.pipeline import (cmd_ingest, cmd_label, cmd_rollback, cmd_run, cmd_serve, cmd_setup_model, cmd_train_job,
                                    cmd_tune)
from roleforge.cli.quarantine import cmd_quarantine, cmd_quarantine_replay
from roleforge.cli.serving import cmd_api
from roleforge.cli.status import cmd_audit, cmd_status
from roleforge.ops.errors import Preempted, RoleforgeError, database_error


def build_parser() -> Parser:
    from roleforge.bench.dpo import MODEL_SHAPES

    parser = Parser(prog="roleforge", description="Self-learning pipeline for role-playing LLM agents.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    ingest = commands.add_parser("ingest", help="ingest feedback files (JSONL, JSON, CSV, Parquet, also gzipped; paths or fsspec URLs)")
    ingest.add_argument("paths", nargs="*", help="feedback files or directories (default: the inbox, $ROLEFORGE_HOME/inbox; "
                        "its files move to $ROLEFORGE_HOME/archive once stored)")
    ingest.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    ingest.set_defaults(handler=cmd_ingest)

    run = commands.add_parser("run", help="run the self-learning flow locally")
    run.add_argument("feedback", nargs="*", help="feedback files or directories to ingest first")
    run.add_argument("--sample", action="store_true", help="ingest the bundled sample feedback first")
    run.add_argument("--roles", help="comma-separated roles (default: all configured)")
    run.add_argument("--profile", choices=["quick", "default"], help="training profile (default: settings.profile)")
    run.add_argument("--force", action="store_true",
                     help="train every role even with fewer new pairs than its min_new_pairs (to debug a role)")
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
    status.add_argument("--disk", action="store_true", help="with --json: disk use per kind (bytes) instead of the roles")
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

    quarantine = commands.add_parser("quarantine", help="quarantined feedback lines by reason and file (replay: store "
                                                        "those that pass the contract now)")
    quarantine.add_argument("--json", action="store_true")
    quarantine.set_defaults(handler=cmd_quarantine)
    replay = quarantine.add_subparsers(dest="quarantine_action", parser_class=Parser).add_parser(
        "replay", help="re-ingest quarantined lines with the current configuration: those that pass are stored once "
                       "and leave the quarantine, the others stay with their current reason")
    replay.add_argument("--reason", help="only lines whose reason contains this text")
    replay.add_argument("--json", action="store_true", help="print the replay's counts as JSON on the last line")
    replay.set_defaults(handler=cmd_quarantine_replay)

    audit = commands.add_parser("audit", help="the audit log of ingests, promotion decisions and rollbacks")
    audit.add_argument("--last", type=int, default=20, help="entries to show (0: all; default 20); the chain is always checked whole")
    audit.add_argument("--json", action="store_true")
    audit.set_defaults(handler=cmd_audit)

    gc = commands.add_parser("gc", help="prune old checkpoints, snapshots, archived feedback and caches as [retention] "
                                        "says; never what a registered model version points at")
    gc.add_argument("--dry-run", action="store_true", help="count what would be removed, remove nothing")
    gc.add_argument("--json", action="store_true", help="print the summary as JSON on the last line")
    gc.set_defaults(handler=cmd_gc)

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

    bench_serve = bench.add_parser("serve", help="the HTTP API under mixed-role traffic: batched across roles vs one request at a time")
    bench_serve.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    bench_serve.add_argument("--requests", type=int, default=32, help="requests in all, over four roles (default 32)")
    bench_serve.add_argument("--max-tokens", type=int, default=48, help="longest answer (default 48)")
    bench_serve.add_argument("--max-batch", type=int, default=8, help="batch size of the batched run (default 8)")
    bench_serve.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], help="weights' dtype (default: serving.dtype)")
    bench_serve.add_argument("--json", action="store_true")
    bench_serve.set_defaults(handler=cmd_bench_serve)

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

    bench_night = bench.add_parser("night", help="the sample night (roleforge run --sample) on a fresh home: wall time, "
                                                 "stage and role seconds, peak RSS, promotions and task metrics")
    bench_night.add_argument("--profile", choices=["quick", "default"], help="training profile (default: settings.profile)")
    bench_night.add_argument("--roles", help="comma-separated roles (default: all configured)")
    bench_night.add_argument("--nights", type=int, default=1,
                             help="nights on the same home: the first, then each after it with a day of new sample feedback")
    bench_night.add_argument("--out", help="JSON file to write (default $ROLEFORGE_HOME/bench/night.json)")
    bench_night.add_argument("--json", action="store_true")
    bench_night.set_defaults(handler=cmd_bench_night)

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
    role_eval.add_argument("--prompts", help="JSONL with `prompt` (or `request`) and optionally `role`, or one prompt "
                                             "per line (default: the bundled evaluation set for the role)")
    role_eval.add_argument("--adapter", help="an adapter directory to evaluate instead of the champion")
    role_eval.add_argument("--answers", help="also write each prompt with both answers to this JSONL file")
    role_eval.add_argument("--json", action="store_true")
    role_eval.set_defaults(handler=cmd_evaluate_role)

    export = commands.add_parser("export", help="the champions, packed for another server").add_subparsers(
        dest="export_target", required=True, parser_class=Parser)
    export_vllm = export.add_parser("vllm", help="every role's champion LoRA adapter and serve.sh, which serves the same "
                                                 "roles with vLLM on a GPU server")
    export_vllm.add_argument("--out", required=True, help="directory to write (new or empty)")
    export_vllm.add_argument("--roles", help="comma-separated roles (default: all configured)")
    export_vllm.add_argument("--base-model", help="the base model as the server names it: a path there or a Hugging Face "
                                                  "repo id (default: this machine's base model directory)")
    export_vllm.add_argument("--force", action="store_true", help="export into a non-empty --out, replacing an export there")
    export_vllm.add_argument("--json", action="store_true", help="print the export's summary as JSON on the last line")
    export_vllm.set_defaults(handler=cmd_export_vllm)

    api = commands.add_parser("api", help="serve every role's champion over HTTP (OpenAI-compatible), with the rater page "
                                          "and feedback into the inbox")
    api.add_argument("--host", help="address to bind (default: serving.host, 127.0.0.1); others need ROLEFORGE_API_KEYS")
    api.add_argument("--port", type=int, help="port (default: serving.port, 8000)")
    api.set_defaults(handler=cmd_api)

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
        from roleforge.bench.common import speed_probe

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
