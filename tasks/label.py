"""Label: stored feedback -> preference pairs with provenance -> a content-hashed dataset snapshot per role."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import defaultdict
from collections.abc import Iterable
from itertools import combinations
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from pydantic import BaseModel

from roleforge.data_contracts.preference import SOURCE_PRIORITY, PreferencePair, Split
from roleforge.tasks.errors import retry_transient
from roleforge.tasks.settings import load_settings
from roleforge.tasks.validate import ContractResult


class PreferenceDataset(BaseModel):
    """A role's labeled pairs, split and frozen as a snapshot; the snapshot hash names it in every run."""

    role: str
    snapshot_hash: str
    path: str
    train_pairs: int
    held_out_pairs: int
    by_source: dict[str, int]
    conflicts: int
    skip_reason: str | None = None

    @property
    def ready(self) -> bool:
        return self.skip_reason is None


def human_choice_pairs(rows: Iterable[dict[str, Any]]) -> list[PreferencePair]:
    """A/B rows: the response the user preferred is chosen."""
    pairs = []
    for row in rows:
        if row["kind"] != "ab":
            continue
        chosen, rejected = (row["response_a"], row["response_b"]) if row["preference"] == "a" else (row["response_b"], row["response_a"])
        pairs.append(PreferencePair(
            role=row["agent_role"], prompt=row["prompt"], chosen=chosen, rejected=rejected, source="human_ab",
            labeler="human_choice", confidence=row["confidence"] if row["confidence"] is not None else 1.0,
            feedback_ids=(row["id"],), rater=row["rater"],
        ))
    return pairs


def rating_pairs(rows: Iterable[dict[str, Any]], min_gap: int) -> list[PreferencePair]:
    """Rated responses to the same prompt: the higher-rated one is chosen when the mean ratings differ by min_gap."""
    ratings: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row["kind"] == "rating":
            ratings[(row["agent_role"], row["prompt"])][row["response"]].append(row)
    pairs = []
    for (role, prompt), by_response in ratings.items():
        means = {response: sum(r["rating"] for r in rated) / len(rated) for response, rated in by_response.items()}
        for first, second in combinations(sorted(means), 2):
            gap = means[first] - means[second]
            if abs(gap) < min_gap:
                continue
            chosen, rejected = (first, second) if gap > 0 else (second, first)
            raters = {r["rater"] for r in by_response[first] + by_response[second]}
            pairs.append(PreferencePair(
                role=role, prompt=prompt, chosen=chosen, rejected=rejected, source="rating", labeler="rating_gap",
                confidence=min(1.0, abs(gap) / 4), rater=raters.pop() if len(raters) == 1 else None,
                feedback_ids=tuple(sorted(r["id"] for r in by_response[first] + by_response[second])),
            ))
    return pairs


def resolve_pairs(pairs: Iterable[PreferencePair]) -> tuple[list[PreferencePair], int]:
    """Drop repeated judgements and settle disagreements: the higher-priority source wins, then the more confident.

    Returns the kept pairs and the number of conflicts (two labels that ranked the same responses oppositely).
    """
    by_key: dict[tuple[str, frozenset[str]], list[PreferencePair]] = defaultdict(list)
    for pair in pairs:
        by_key[pair.unordered_key].append(pair)
    kept, conflicts = [], 0
    for judgements in by_key.values():
        ranked = sorted(judgements, key=lambda p: (SOURCE_PRIORITY.index(p.source), -p.confidence, p.feedback_ids))
        winner = ranked[0]
        if any(p.chosen != winner.chosen for p in ranked):
            conflicts += 1
            rivals = [p for p in ranked if p.chosen != winner.chosen]
            if rivals[0].source == winner.source and rivals[0].confidence == winner.confidence:
                continue  # the same kind of evidence says both things: trust neither
        kept.append(winner)
    return sorted(kept, key=lambda p: p.pair_id), conflicts


def split_of(role: str, prompt: str, held_out_fraction: float) -> Split:
    """Held-out by prompt hash: a prompt (and so every pair on it) never moves between splits as data grows."""
    bucket = int(hashlib.sha256(f"{role}\x00{prompt}".encode()).hexdigest()[:8], 16) / 0x100000000
    return "held_out" if bucket < held_out_fraction else "train"


def write_snapshot(pairs: list[PreferencePair], role: str, held_out_fraction: float, datasets_dir: Path) -> tuple[str, Path]:
    """Freeze the pairs as train/held-out Parquet files in a directory named by their content hash."""
    import pandas as pd

    records = [{**pair.model_dump(), "pair_id": pair.pair_id, "split": split_of(role, pair.prompt, held_out_fraction)}
               for pair in pairs]
    digest = hashlib.sha256(json.dumps(records, sort_keys=True, default=list).encode()).hexdigest()[:16]
    directory = datasets_dir / role / digest
    if not (directory / "held_out.parquet").exists():
        staging = directory.with_name(f".{digest}.partial")
        staging.mkdir(parents=True, exist_ok=True)
        frame = pd.DataFrame(records, columns=[*PreferencePair.model_fields, "pair_id", "split"])
        frame["feedback_ids"] = frame["feedback_ids"].map(list)
        for split in ("train", "held_out"):
            frame[frame["split"] == split].to_parquet(staging / f"{split}.parquet", index=False)
        if directory.exists():  # another process froze the same content meanwhile
            shutil.rmtree(staging)
        else:
            staging.replace(directory)
    return digest, directory


def load_split(dataset_path: str | Path, split: Split) -> list[dict[str, Any]]:
    """The pairs of one split of a snapshot, as plain records."""
    import pandas as pd

    return pd.read_parquet(Path(dataset_path) / f"{split}.parquet").to_dict("records")


def build_dataset(rows: list[dict[str, Any]], role: str, min_gap: int, held_out_fraction: float, min_pairs: int,
                  datasets_dir: Path) -> PreferenceDataset:
    """Label a role's feedback, resolve duplicates and conflicts, and snapshot the result."""
    pairs, conflicts = resolve_pairs([*human_choice_pairs(rows), *rating_pairs(rows, min_gap)])
    digest, directory = write_snapshot(pairs, role, held_out_fraction, datasets_dir)
    splits = [split_of(role, p.prompt, held_out_fraction) for p in pairs]
    by_source: dict[str, int] = defaultdict(int)
    for pair in pairs:
        by_source[pair.source] += 1
    train = splits.count("train")
    return PreferenceDataset(
        role=role, snapshot_hash=digest, path=str(directory), train_pairs=train, held_out_pairs=len(pairs) - train,
        by_source=dict(by_source), conflicts=conflicts,
        skip_reason=None if train >= min_pairs and len(pairs) > train else
        f"too few pairs: {train} train / {len(pairs) - train} held-out (needs {min_pairs} train and 1 held-out)",
    )


@task(name="label-preferences", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_transient)
def label_role(role: str, contract: ContractResult) -> PreferenceDataset:
    """Label a role's stored feedback into a snapshot; a role whose contract failed is held back with the reason."""
    from roleforge.tasks.store import engine_for, feedback_for_role

    settings = load_settings()
    config = settings.role(role)
    rows = feedback_for_role(engine_for(settings.resolved_store_url), role)
    dataset = build_dataset(rows, role, config.min_rating_gap, config.held_out_fraction, config.min_pairs, settings.path("datasets"))
    get_run_logger().info("role %s: %d train / %d held-out pairs %s, snapshot %s", role, dataset.train_pairs,
                          dataset.held_out_pairs, dataset.by_source, dataset.snapshot_hash)
    if not contract.success:
        return dataset.model_copy(update={"skip_reason": contract.failure_summary})
    return dataset
