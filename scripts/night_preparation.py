"""What a role's training does before its first step, on a first night and on a later one: the replayed answers,
their distillation targets and every pair's reference log-probs, under the default recipe. Prints a JSON line a night.

    python -m scripts.night_preparation --work /tmp/prep [--role ceo] [--first 150] [--second 162] [--overlap 120]

Night 1 trains on `--first` of the role's sample A/B choices as pairs, night 2 on `--second`, of which `--overlap`
were night 1's; both share one work directory (the replay answers' cache and the reference store), as nights on one
home do. Run it from outside the repository to measure code installed elsewhere (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def role_pairs(role: str, first: int, count: int) -> list[dict[str, str]]:
    """`count` pairs from the role's sample A/B choices starting at `first`, repeating the file with a case number
    when it runs out, so that each pair is its own."""
    from roleforge.sample import SAMPLE_FEEDBACK

    rows = [json.loads(line) for line in (SAMPLE_FEEDBACK / f"{role}.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()]
    rows = [row for row in rows
            if row.get("preference") in ("a", "b") and {"prompt", "response_a", "response_b"} <= row.keys()]
    pairs = []
    for number in range(first, first + count):
        row = rows[number % len(rows)]
        chosen, rejected = (row["response_a"], row["response_b"])[:: 1 if row["preference"] == "a" else -1]
        pairs.append({"prompt": f"{row['prompt']} (case {number})", "chosen": chosen, "rejected": rejected,
                      "pair_id": f"pair-{number:05d}"})
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="a directory for both nights' caches")
    parser.add_argument("--role", default="ceo")
    parser.add_argument("--first", type=int, default=150, help="role pairs on night 1")
    parser.add_argument("--second", type=int, default=162, help="role pairs on night 2")
    parser.add_argument("--overlap", type=int, default=120, help="of night 2's pairs, how many were night 1's")
    args = parser.parse_args()

    import roleforge
    from roleforge.bench.common import machine, speed_probe
    from roleforge.cli.common import command_settings
    from roleforge.config.recipes import build_configs, role_recipe
    from roleforge.models.base import BASE_MODELS, compute_dtype, load_tokenizer
    from roleforge.training.engines import roleforge_trainer
    from roleforge.training.local import replayed_base_answers
    from roleforge.training.reference_store import ReferenceStore

    settings = command_settings()
    base_model = settings.base_model_dir()
    tokenizer = load_tokenizer(base_model)
    system_prompt = settings.roles[args.role].system_prompt
    recipe = role_recipe("default", {}, args.role)
    store = ReferenceStore(args.work / "kept.db")
    nights = [(0, args.first), (args.first - args.overlap, args.second)]
    with BASE_MODELS.lend(base_model, 1, compute_dtype()) as base:
        for night, (first, count) in enumerate(nights, start=1):
            dpo_config, lora_config = build_configs(recipe, str(args.work / f"night-{night}"))
            pairs = role_pairs(args.role, first, count)
            started = time.monotonic()
            replay = replayed_base_answers(base, tokenizer, system_prompt, pairs, recipe["data"], base_model, None,
                                           args.work / "replay-answers")
            answered = time.monotonic()
            trainer = roleforge_trainer(base, dpo_config, lora_config, None, tokenizer, pairs + replay, system_prompt, [],
                                        args.work / f"night-{night}" / "reference.json", store,
                                        replay_top_k=int(recipe["data"].get("replay_distill_top_k", 0)))
            prepared = time.monotonic()
            trainer.model.unload()
            print(json.dumps({"night": night, "role_pairs": len(pairs), "replay_pairs": len(replay),
                              "reference_pairs_computed": trainer.reference_pairs_computed,
                              "replay_answers_s": round(answered - started, 1),
                              "distillation_and_reference_s": round(prepared - answered, 1),
                              **machine(), "speed_probe_s": speed_probe(), "dtype": compute_dtype(),
                              "roleforge": roleforge.__file__}), flush=True)


if __name__ == "__main__":
    main()
