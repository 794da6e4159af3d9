"""Label: stored feedback -> preference pairs with provenance -> a content-hashed dataset snapshot per role."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from roleforge.config.settings import LabelingConfig, Settings, TeacherConfig, load_settings
from roleforge.data_contracts.preference import HUMAN_SOURCES, SOURCE_PRIORITY, PreferencePair
from roleforge.evaluation.contracts import OutputContract
from roleforge.ops.errors import RoleforgeError
from roleforge.ops.retries import retry_transient
from roleforge.ops.timing import STAGES
from roleforge.runtime import MODEL_MODULES, import_for_stages
from roleforge.storage.snapshots import PreferenceDataset, split_of, write_snapshot
from roleforge.tasks.labelers import LabelResult, Labeler
from roleforge.tasks.labelers.generator import RejectedResponseGenerator
from roleforge.tasks.labelers.heuristics import HeuristicLabeler
from roleforge.tasks.labelers.human import HumanChoiceLabeler, RatingGapLabeler
from roleforge.tasks.labelers.judge import HttpJudge, Judge, JudgeLabeler, LocalJudge
from roleforge.tasks.validate import validate_pairs
from roleforge.validation.results import ContractResult


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


def human_labelers(config: LabelingConfig) -> list[Labeler]:
    """The labelers of human judgements (A/B choices, rating gaps), as the role's configuration sets them."""
    return [HumanChoiceLabeler(), RatingGapLabeler(config.min_rating_gap, config.min_chosen_rating)]


def labelers_for(config: LabelingConfig, judge: Judge | None, system_prompt: str, teacher: TeacherConfig,
                 contract: OutputContract | None = None) -> list[Labeler]:
    """The labelers a role's configuration asks for, human ones first; `contract` is the role's output contract,
    for the heuristic rule of that name."""
    labelers = human_labelers(config)
    if config.heuristics:
        options = {"min_detail_chars": config.min_detail_chars, "contract": contract}
        labelers.append(HeuristicLabeler(list(config.heuristics), options, config.min_rating_gap))
    if config.generate_rejected:
        labelers.append(RejectedResponseGenerator())
    if config.teacher and judge is not None and teacher.max_comparisons > 0:
        labelers.append(JudgeLabeler(judge, system_prompt, config.min_rating_gap, teacher.max_comparisons,
                                     teacher.abstain_margin, teacher.batch_size * 2))
    return labelers


def cap_automated(pairs: list[PreferencePair], max_share: dict[str, float]) -> tuple[list[PreferencePair], dict[str, int]]:
    """Keep every human pair; keep at most max_share of the final set per automated source, most confident first."""
    human = [p for p in pairs if p.source in HUMAN_SOURCES]
    automated: dict[str, list[PreferencePair]] = defaultdict(list)
    for pair in pairs:
        if pair.source not in HUMAN_SOURCES:
            automated[pair.source].append(pair)
    shares = {source: max_share.get(source, 0.0) for source in automated}
    limits = {source: len(candidates) for source, candidates in automated.items()}
    if sum(shares.values()) < 1.0:
        # Largest N with n_s = min(available_s, share_s * N) and N = humans + sum(n_s): shrink N from its bound.
        total = len(human) / (1.0 - sum(shares.values()))
        for _ in range(100):
            limits = {s: min(len(c), int(shares[s] * total)) for s, c in automated.items()}
            if len(human) + sum(limits.values()) >= total - 1e-9:
                break
            total = len(human) + sum(limits.values())
    kept, dropped = list(human), {}
    for source, candidates in automated.items():
        limit = limits[source]
        ranked = sorted(candidates, key=lambda p: (-p.confidence, p.pair_id))
        kept.extend(ranked[:limit])
        if len(ranked) > limit:
            dropped[source] = len(ranked) - limit
    return sorted(kept, key=lambda p: p.pair_id), dropped


def label_rows(rows: list[dict[str, Any]], labelers: list[Labeler], max_share: dict[str, float]) -> LabelingOutcome:
    """Run every labeler, settle duplicates and conflicts, then cap the automated sources."""
    combined = LabelResult()
    for labeler in labelers:
        combined.extend(labeler.label(rows))
    resolved, conflicts = resolve_pairs(combined.pairs)
    kept, dropped = cap_automated(resolved, max_share)
    return LabelingOutcome(pairs=kept, conflicts=conflicts, abstained=combined.abstained, skipped=dict(combined.skipped),
                           capped=dropped)


@dataclass
class LabelingOutcome:
    pairs: list[PreferencePair]
    conflicts: int
    abstained: int
    skipped: dict[str, int]
    capped: dict[str, int]


def snapshot_dataset(outcome: LabelingOutcome, role: str, held_out_fraction: float, min_pairs: int,
                     datasets_dir: Path) -> PreferenceDataset:
    """Freeze labeled pairs as the role's content-hashed snapshot, with the counts that explain it."""
    pairs = outcome.pairs
    digest, directory = write_snapshot(pairs, role, held_out_fraction, datasets_dir)
    train = sum(split_of(role, p.prompt, held_out_fraction) == "train" for p in pairs)
    by_source: dict[str, int] = defaultdict(int)
    for pair in pairs:
        by_source[pair.source] += 1
    return PreferenceDataset(
        role=role, snapshot_hash=digest, path=str(directory), train_pairs=train, held_out_pairs=len(pairs) - train,
        by_source=dict(by_source), conflicts=outcome.conflicts, abstained=outcome.abstained, skipped=outcome.skipped,
        capped=outcome.capped,
        skip_reason=None if train >= min_pairs and len(pairs) > train else
        f"too few pairs: {train} train / {len(pairs) - train} held-out (needs {min_pairs} train and 1 held-out)",
    )


def build_dataset(rows: list[dict[str, Any]], role: str, config: LabelingConfig, held_out_fraction: float, min_pairs: int,
                  datasets_dir: Path, labelers: list[Labeler] | None = None) -> PreferenceDataset:
    """Label a role's feedback with its labelers (human ones by default) and snapshot the result."""
    labelers = labelers if labelers is not None else human_labelers(config)
    return snapshot_dataset(label_rows(rows, labelers, config.max_source_share), role, held_out_fraction, min_pairs, datasets_dir)


def teacher_judge(teacher: TeacherConfig, base_model: Path) -> Judge | None:
    """The configured teacher judge; a local one is loaded once per process."""
    if teacher.kind == "http":
        if not teacher.url:
            raise RoleforgeError("teacher.kind is http but teacher.url is not set (ROLEFORGE_TEACHER__URL)")
        return HttpJudge(url=teacher.url, model=teacher.model_name, timeout_s=teacher.timeout_s, retries=teacher.retries,
                         api_key=teacher.api_key.get_secret_value() if teacher.api_key else None)
    if teacher.kind == "local":
        return local_judge(teacher.model or base_model, teacher.batch_size)
    return None


@functools.cache
def local_judge(model_dir: Path, batch_size: int) -> LocalJudge:
    """A judge on `model_dir` that borrows the process's generating copy of it for each verdict: on the base model
    (the default), the copy evaluation already generates with, so judging costs no memory of its own."""
    from roleforge.models.base import load_tokenizer

    import_for_stages(MODEL_MODULES)
    return LocalJudge(Path(model_dir), load_tokenizer(model_dir), batch_size)


def label_stored(role: str, settings: Settings) -> tuple[PreferenceDataset, list[ContractResult]]:
    """Label what the store holds for a role with the labelers its configuration names; check the pairs against
    their contract and the feedback since the role's last training against the shift guard."""
    from roleforge.ops.status import read_training_status
    from roleforge.storage.schema import engine_for, feedback_for_role
    from roleforge.validation.shift_guard import shift_guard

    config = settings.role(role)
    judge = None
    if config.labeling.teacher and settings.teacher.kind != "none":
        base_model = settings.base_model_dir()
        judge = teacher_judge(settings.teacher, base_model)
    rows = feedback_for_role(engine_for(settings.resolved_store_url), role)
    outcome = label_rows(rows, labelers_for(config.labeling, judge, config.system_prompt, settings.teacher, config.output),
                         config.labeling.max_source_share)
    pair_contract = validate_pairs(role, outcome.pairs, config.labeling.max_rater_share,
                                   config.labeling.min_pairs_for_rater_share)
    watermark = (read_training_status(settings.home, role) or {}).get("feedback_watermark", 0)
    guard = shift_guard(role, rows, watermark, config.guard)
    dataset = snapshot_dataset(outcome, role, config.held_out_fraction, config.min_pairs, settings.path("datasets"))
    dataset = dataset.model_copy(update={"feedback_watermark": max((row["id"] for row in rows), default=0)})
    return dataset, [pair_contract, guard]


@task(name="label-preferences", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
@STAGES.timed("label")
def label_role(role: str, contract: ContractResult) -> PreferenceDataset:
    """Label a role's stored feedback into a snapshot; a role whose feedback or pair contract failed is held back."""
    from prefect.artifacts import create_table_artifact

    from roleforge.tasks.report import artifact_key

    dataset, checks = label_stored(role, load_settings())
    create_table_artifact(key=artifact_key("labels", role), table=[labeling_row(dataset)],
                          description=f"Preference pairs of role {role} by source, with abstentions and conflicts")
    get_run_logger().info("role %s: %d train / %d held-out pairs %s, snapshot %s", role, dataset.train_pairs,
                          dataset.held_out_pairs, dataset.by_source, dataset.snapshot_hash)
    reasons = [r.failure_summary for r in (contract, *checks) if not r.success]
    return dataset.model_copy(update={"skip_reason": "; ".join(reasons)}) if reasons else dataset


def labeling_row(dataset: PreferenceDataset) -> dict[str, Any]:
    """A role's labeling counts, flat, for tables and JSON."""
    return {"role": dataset.role, "pairs": dataset.train_pairs + dataset.held_out_pairs, "by_source": dataset.by_source,
            "abstained": dataset.abstained, "conflicts": dataset.conflicts, "skipped": dataset.skipped,
            "capped": dataset.capped, "snapshot": dataset.snapshot_hash}
