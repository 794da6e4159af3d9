"""The bench commands: each runs a benchmark of roleforge/bench/ and writes its report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from roleforge.cli.common import command_settings, emit, role_names
from roleforge.ops.errors import RoleforgeError


def _bench_done(report: dict[str, Any], out: Path, summary: str, args: argparse.Namespace,
                shown: dict[str, Any] | None = None) -> int:
    """A benchmark's end: the whole report written to `out`, a summary for people, the JSON line for machines. The
    report's `machine` has the speed probe read before the benchmark (by main) and now."""
    from roleforge.bench.common import machine, speed_probe, write_report

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
    settings = command_settings()
    import tempfile

    from roleforge.bench.dpo import dpo_benchmark, random_model

    if args.pairs < 1 or args.held_out < 1 or args.repeats < 1 or args.epochs <= 0 or (args.batch_size is not None and args.batch_size < 1):
        raise RoleforgeError("--pairs, --held-out, --repeats and --batch-size must be at least 1, --epochs above 0")
    base_model = Path(args.model) if args.model else settings.base_model_dir()
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
    command_settings()
    from roleforge.bench.dpo import save_pairs

    counts = save_pairs(Path(args.out))
    if not args.json:
        print(f"{counts['train']} training and {counts['held_out']} held-out pairs -> {args.out}")
    emit({"path": args.out, **counts}, args.json)
    return 0


def cmd_bench_ingest(args: argparse.Namespace) -> int:
    settings = command_settings()
    import tempfile

    from roleforge.bench.ingest import ingest_benchmark

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
    settings = command_settings()
    from roleforge.bench.generate import generate_benchmark

    if args.prompts < 1 or args.max_new_tokens < 1 or args.batch_size < 2:
        raise RoleforgeError("--prompts and --max-new-tokens must be at least 1, --batch-size at least 2")
    base_model = Path(args.model) if args.model else settings.base_model_dir()
    report = generate_benchmark(base_model, args.prompts, args.max_new_tokens, args.batch_size)
    return _bench_done(report, settings.path("bench") / "generate.json",
                       f"batched {report['batched_new_tokens_per_s']:.1f} new tokens/s vs one prompt at a time "
                       f"{report['single_new_tokens_per_s']:.1f} ({report['speedup']}x)", args)


def cmd_bench_label(args: argparse.Namespace) -> int:
    settings = command_settings()
    from roleforge.bench.label import label_benchmark

    base_model = settings.base_model_dir() if args.judge_pairs else None
    report = label_benchmark(args.rows, args.judge_pairs, base_model)
    return _bench_done(report, Path(args.out) if args.out else settings.path("bench") / "label.json",
                       json.dumps(report, indent=2), args)


def cmd_bench_cli(args: argparse.Namespace) -> int:
    settings = command_settings()
    from roleforge.bench.startup import cli_benchmark

    if args.repeats < 1:
        raise RoleforgeError("--repeats must be at least 1")
    report = cli_benchmark(args.repeats)
    return _bench_done(report, settings.path("bench") / "cli.json",
                       f"roleforge --help {report['help_seconds']} s, roleforge status {report['status_seconds']} s "
                       f"(median of {args.repeats})", args)


def cmd_bench_serve(args: argparse.Namespace) -> int:
    settings = command_settings()
    from roleforge.bench.serve import serve_benchmark

    if args.clients < 1 or args.requests < 1 or args.max_tokens < 1 or args.max_batch < 2:
        raise RoleforgeError("--clients, --requests and --max-tokens must be at least 1, --max-batch at least 2")
    report = serve_benchmark(settings, args.clients, args.requests, args.max_tokens, args.max_batch, dtype=args.dtype)
    return _bench_done(report, settings.path("bench") / "serve.json",
                       f"batched {report['requests_per_s']} requests/s (p95 {report['p95_ms']} ms) vs one at a time "
                       f"{report['sequential']['requests_per_s']} (p95 {report['sequential']['p95_ms']} ms): {report['speedup']}x", args)


def cmd_bench_night(args: argparse.Namespace) -> int:
    settings = command_settings()
    import tempfile

    from roleforge.bench.night import night_benchmark, night_summary

    if args.nights < 1:
        raise RoleforgeError(f"--nights {args.nights}: at least 1")
    roles = role_names(settings, args.roles)
    base_model = settings.base_model_dir()  # converted here once if needed; the night reuses the directory
    with tempfile.TemporaryDirectory(prefix="bench-night-", dir=settings.path("bench")) as work:
        report = night_benchmark(base_model, Path(work), args.profile or settings.profile, roles, args.nights)
    return _bench_done(report, Path(args.out) if args.out else settings.path("bench") / "night.json",
                       night_summary(report), args)
