"""Judge calibration: a judge's generation A/B counts only after it picks the known-better answer of hand-written
pairs, asked in both orders. A judge that fails leaves the evaluation without a judge, said as such, instead of a
coin toss reported as a win rate."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from roleforge.evaluation.ab import GenerationAB, judge_ab, order_verdict
from roleforge.ops.errors import RoleforgeError
from roleforge.ops.files import write_atomic
from roleforge.sample import SAMPLE_DIR

# Pairs with a known better answer: a correct vs a wrong fact, an on-role answer vs a refusal, a relevant answer vs an
# off-topic one, the right tool call vs prose.
JUDGE_CALIBRATION = SAMPLE_DIR / "judge_calibration.jsonl"


class CalibrationPair(BaseModel):
    """One request under a role's system prompt, with a better and a worse answer."""

    model_config = ConfigDict(extra="forbid")

    system_prompt: str
    prompt: str
    better: str
    worse: str


class JudgeCalibration(BaseModel):
    """How often a judge prefers the known-better answer of the calibration pairs, and whether that is enough."""

    judge: str
    agreement: float  # share of pairs on which both orders together prefer `better` beyond the margin
    pairs: int
    order_flips: int  # pairs on which each order preferred whichever answer came first
    no_verdict: int = 0
    error: str | None = None  # the first reason the judge gave no verdict, e.g. "http 503"
    min_agreement: float
    passed: bool

    def summary(self) -> str:
        """One line for reports, e.g. "local judge agreed on 0.55 of 48 calibration pairs (< 0.75)"."""
        relation = ">=" if self.passed else "<"
        line = (f"{self.judge.replace('_', ' ')} agreed on {self.agreement:.2f} of {self.pairs} calibration pairs "
                f"({relation} {self.min_agreement:.2f})")
        if self.order_flips:
            line += f"; {self.order_flips} flipped with the answers' order"
        if self.no_verdict:
            line += f"; no verdict on {self.no_verdict} ({self.error})"
        return line


def calibration_pairs(path: Path = JUDGE_CALIBRATION) -> list[CalibrationPair]:
    """The calibration pairs of a JSONL file, one {system_prompt, prompt, better, worse} object a line."""
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                pairs.append(CalibrationPair.model_validate_json(line))
            except ValidationError as error:
                raise RoleforgeError(f"{path}:{number}: a calibration pair needs exactly system_prompt, prompt, better "
                                     f"and worse as strings ({error.error_count()} errors)") from error
    if not pairs:
        raise RoleforgeError(f"{path} holds no calibration pairs")
    return pairs


def calibrate(judge: Any, pairs: Sequence[CalibrationPair], margin: float, min_agreement: float) -> JudgeCalibration:
    """Ask the judge about every pair as (better, worse) and as (worse, better), one call per system prompt.

    Args:
        judge: anything with `name` and `prefer_a(system_prompt, [(prompt, a, b)])` (tasks/labelers/judge.py).
        margin: as in the A/B, a verdict this close to 0.5, or one that flips with the order, is not agreement.
        min_agreement: the share of pairs the judge must get right to pass; a pair without a verdict counts as wrong.
    """
    if not pairs:
        raise RoleforgeError("calibrating a judge needs at least one calibration pair")
    by_system: dict[str, list[CalibrationPair]] = defaultdict(list)
    for pair in pairs:
        by_system[pair.system_prompt].append(pair)
    outcomes: list[str] = []
    errors: list[str] = []
    for system_prompt, group in by_system.items():
        forward = [(p.prompt, p.better, p.worse) for p in group]
        answers = judge.prefer_a(system_prompt, forward + [(prompt, b, a) for prompt, a, b in forward])
        for first, second in zip(answers[:len(group)], answers[len(group):], strict=True):
            if isinstance(first, str) or isinstance(second, str):
                errors.append(first if isinstance(first, str) else second)
            else:
                outcomes.append(order_verdict(first, second, margin))
    agreement = outcomes.count("win") / len(pairs)
    return JudgeCalibration(judge=judge.name, agreement=agreement, pairs=len(pairs), order_flips=outcomes.count("flip"),
                            no_verdict=len(errors), error=errors[0] if errors else None, min_agreement=min_agreement,
                            passed=agreement >= min_agreement)


def model_identity(model_dir: Path) -> str:
    """The model directory's name and each file's size and modification time: it changes when the weights do,
    without hashing gigabytes."""
    files = sorted(path for path in model_dir.iterdir() if path.is_file())
    return json.dumps([model_dir.name] + [[path.name, path.stat().st_size, path.stat().st_mtime_ns] for path in files])


# Remote judges' calibrations, per flow run: the model behind an endpoint's name may change between runs.
_RUN_CALIBRATIONS: dict[str, JudgeCalibration] = {}


def judge_calibration(judge: Any, pairs_path: Path, margin: float, min_agreement: float, cache_dir: Path,
                      model_dir: Path | None = None, run_id: str | None = None) -> JudgeCalibration:
    """The judge's calibration on the pairs of `pairs_path`, computed once and then reused.

    Args:
        model_dir: a local judge's model directory: its result is kept on disk under `cache_dir`, keyed by the model's
            identity and the calibration file's hash, since the same weights give the same verdicts every night.
        run_id: for a remote judge (no `model_dir`), the flow run its result is kept in memory for.
    """
    settings = f"{hashlib.sha256(pairs_path.read_bytes()).hexdigest()}|{margin}|{min_agreement}|{judge.name}"
    if model_dir is None:
        key = f"{run_id}|{settings}|{getattr(judge, 'url', '')}|{getattr(judge, 'model', '')}"
        if key not in _RUN_CALIBRATIONS:
            _RUN_CALIBRATIONS[key] = calibrate(judge, calibration_pairs(pairs_path), margin, min_agreement)
        return _RUN_CALIBRATIONS[key]
    digest = hashlib.sha256(f"{model_identity(model_dir)}|{getattr(judge, 'dtype', '')}|{settings}".encode()).hexdigest()[:32]
    target = cache_dir / f"{judge.name}-{digest}.json"
    try:
        return JudgeCalibration.model_validate_json(target.read_text())
    except (OSError, ValueError):
        pass
    calibration = calibrate(judge, calibration_pairs(pairs_path), margin, min_agreement)
    write_atomic(target, calibration.model_dump_json())
    return calibration


def judge_generation(judge: Any, calibration: JudgeCalibration | None, system_prompt: str, prompts: list[str],
                     candidate_answers: list[str], opponent_answers: list[str], margin: float,
                     confidence: float) -> GenerationAB | None:
    """The generation A/B of the candidate's answers against the opponent's, or None without a judge that passed
    calibration (an uncalibrated judge is no judge) or without prompts."""
    if judge is None or calibration is None or not calibration.passed or not prompts:
        return None
    return judge_ab(judge, system_prompt, prompts, candidate_answers, opponent_answers, margin, confidence)
