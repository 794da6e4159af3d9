"""Promote: register every candidate as a version of the role's MLflow model; move `champion` only for winners."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from roleforge.config.settings import GateConfig, load_settings
from roleforge.ops import audit
from roleforge.ops.errors import RoleforgeError
from roleforge.ops.retries import retry_transient
from roleforge.ops.timing import STAGES
from roleforge.registry.mirror import PromotionMirror, promotion_mirror
from roleforge.registry.tracking import CHAMPION, PREVIOUS, alias_version, current_flow_run, local_adapter_path, mlflow_client
from roleforge.tasks.evaluate import Evaluation
from roleforge.training.candidate import Candidate

REPLACED_TAG = "roleforge.replaced_version"


class Decision(BaseModel):
    """What happened to a candidate in the registry, and why."""

    role: str
    version: str
    promoted: bool
    reason: str
    champion_version: str | None
    previous_version: str | None


def gate(evaluation: Evaluation, config: GateConfig) -> tuple[bool, str]:
    """The promotion rule. The candidate must beat its opponent on held-out preference accuracy by a margin, with
    the lower bound of the gain's confidence interval above the threshold; its implicit reward must rank enough
    held-out pairs the right way; it may not lose the generation A/B with confidence (where a judge passed its
    calibration; without one the rest decides); and no guardrail may break."""
    gain, reward_accuracy = evaluation.accuracy_gain, evaluation.candidate.reward_accuracy or 0.0
    versus = f"{evaluation.opponent}" + (f" v{evaluation.opponent_version}" if evaluation.opponent_version else "")
    level = f"{config.confidence:.0%}"
    if gain < config.min_accuracy_gain:
        return False, f"accuracy gain {gain:+.3f} over {versus} is below {config.min_accuracy_gain:+.3f}"
    low = evaluation.accuracy_gain_low
    if low is not None and low <= config.min_gain_lower_bound:
        return False, (f"accuracy gain {gain:+.3f} over {versus} is not sure enough: its {level} lower bound {low:+.3f} "
                       f"is not above {config.min_gain_lower_bound:+.3f}")
    if reward_accuracy < config.min_reward_accuracy:
        return False, f"reward accuracy {reward_accuracy:.3f} is below {config.min_reward_accuracy:.3f}"
    ab = evaluation.generation
    if ab is not None:
        rate = (f"win rate {ab.win_rate:.2f} [{ab.win_rate_low:.2f}, {ab.win_rate_high:.2f}] (length-controlled "
                f"{ab.length_controlled_win_rate:.2f}) over {ab.prompts} prompts")
        if ab.win_rate_high < config.min_win_rate_high:
            return False, f"lost the generation A/B against {versus}: {rate}, upper bound below {config.min_win_rate_high:.2f}"
        if ab.win_rate_low < config.min_win_rate_low:
            return False, f"generation A/B against {versus} not won: {rate}, lower bound below {config.min_win_rate_low:.2f}"
    broken = evaluation.guardrails.broken(config) if evaluation.guardrails is not None else []
    broken += output_contract_broken(evaluation, config)
    if broken:
        return False, "guardrail broken: " + "; ".join(broken)
    interval = f" ({level} interval {low:+.3f} to {evaluation.accuracy_gain_high:+.3f})" if low is not None else ""
    calibration = evaluation.judge_calibration
    # A judge that failed its calibration leaves no A/B: the reason says so rather than quote a coin toss.
    won = (f", generation win rate {ab.win_rate:.2f} [{ab.win_rate_low:.2f}, {ab.win_rate_high:.2f}]" if ab is not None
           else f", no judge: {calibration.summary()}" if calibration is not None and not calibration.passed else "")
    return True, f"accuracy gain {gain:+.3f} over {versus}{interval}, reward accuracy {reward_accuracy:.3f}{won}"


def output_contract_broken(evaluation: Evaluation, config: GateConfig) -> list[str]:
    """The output contract followed less often than by the opponent (with confidence), and drift from the base
    model above the role's limit, as reasons."""
    reasons = []
    if evaluation.contract:
        ours, theirs, p = evaluation.contract["candidate"], evaluation.contract["opponent"], evaluation.contract_loss_p_value
        if ours.rate < theirs.rate and p is not None and p < config.min_contract_p_value:
            reasons.append(f"output contract followed in {ours.compliant} of {ours.answers} held-out answers against the "
                           f"opponent's {theirs.compliant} (McNemar p={p:.2g}); first miss: {ours.top_violation}")
    if evaluation.drift_kl is not None and config.max_drift_kl is not None and evaluation.drift_kl > config.max_drift_kl:
        reasons.append(f"drifted {evaluation.drift_kl:.3f} nats/token from the base model on general prompts "
                       f"(limit {config.max_drift_kl:.3f})")
    return reasons


def register_candidate(client: Any, name: str, candidate: Candidate, evaluation: Evaluation, tags: dict[str, str]) -> str:
    """A new version of the role's registered model, with lineage and metrics as tags; the version already made from
    this candidate's run when a retry gets here twice."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, tags={"roleforge.role": candidate.role},
                                       description=f"DPO LoRA adapters of the {candidate.role} role")
    except MlflowException as error:
        if "RESOURCE_ALREADY_EXISTS" not in str(error.error_code):
            raise
    existing = client.search_model_versions(f"name='{name}' and run_id='{candidate.mlflow_run_id}'")
    if existing:
        return str(min(int(v.version) for v in existing))
    source = f"{client.get_run(candidate.mlflow_run_id).info.artifact_uri}/adapter"
    lineage = {
        "roleforge.role": candidate.role, "roleforge.dataset_hash": candidate.snapshot_hash,
        "roleforge.train_pairs": str(candidate.train_pairs), "roleforge.opponent": evaluation.opponent,
        "roleforge.accuracy_gain": f"{evaluation.accuracy_gain:.4f}",
        **{f"roleforge.metric.{k}": f"{v:.4f}" for k, v in evaluation.candidate.model_dump().items() if v is not None},
        **tags,
    }
    version = client.create_model_version(name, source=source, run_id=candidate.mlflow_run_id, tags=lineage)
    return str(version.version)


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def check_champion(client: Any, name: str, version: str) -> None:
    """`champion` resolves to version and the registry holds its adapter (config and safetensors weights)."""
    champion = alias_version(client, name, CHAMPION)
    if champion is None or str(champion.version) != version:
        raise RoleforgeError(f"{name}: champion resolves to {champion and champion.version}, not v{version}")
    present = {Path(f.path).name for f in client.list_artifacts(champion.run_id, "adapter")}
    missing = [f for f in ADAPTER_FILES if f not in present]
    if missing:
        raise RoleforgeError(f"{name} v{version}: the registered adapter lacks {', '.join(missing)}")


def move_champion(client: Any, name: str, version: str) -> str | None:
    """Point `champion` at version and `previous` at the champion it replaces; returns that previous version."""
    old = alias_version(client, name, CHAMPION)
    if old is not None and str(old.version) != version:
        client.set_registered_model_alias(name, PREVIOUS, old.version)
        client.set_model_version_tag(name, version, REPLACED_TAG, str(old.version))
    client.set_registered_model_alias(name, CHAMPION, version)
    return str(old.version) if old is not None and str(old.version) != version else None


def restore_aliases(client: Any, name: str, before: dict[str, str | None], version: str) -> None:
    """Put `champion` and `previous` back where they were, and mark the version as not promoted."""
    for alias, target in before.items():
        if target is None:
            if alias_version(client, name, alias) is not None:
                client.delete_registered_model_alias(name, alias)
        else:
            client.set_registered_model_alias(name, alias, target)
    if REPLACED_TAG in client.get_model_version(name, version).tags:
        client.delete_model_version_tag(name, version, REPLACED_TAG)
    client.set_model_version_tag(name, version, "roleforge.promoted", "false")
    client.set_model_version_tag(name, version, "roleforge.promotion_undone", "the promotion failed after the alias move")


def promote_version(client: Any, name: str, version: str, after: Callable[[str | None], None] = lambda _: None) -> str | None:
    """Move the aliases to version inside a Prefect transaction, check that the champion loads, then run `after`
    (given the replaced version). If anything in it fails (or, inside a task, anything later in the task), the
    transaction's rollback restores both aliases; the error is raised. Returns the replaced version."""
    from prefect.transactions import transaction

    before = {alias: (str(v.version) if (v := alias_version(client, name, alias)) else None) for alias in (CHAMPION, PREVIOUS)}
    with transaction() as txn:
        txn.on_rollback_hooks.append(lambda _: restore_aliases(client, name, before, version))
        previous = move_champion(client, name, version)
        check_champion(client, name, version)
        after(previous)
    return previous


def decide(client: Any, name: str, candidate: Candidate, evaluation: Evaluation, config: GateConfig,
           tags: dict[str, str], after: Callable[[Decision], None] = lambda _: None) -> Decision:
    """Register the candidate, apply the gate, and move the aliases when it wins; the verdict is recorded either way.
    `after` gets the decision (an audit record, an event): for a winner it runs inside the alias transaction."""
    version = register_candidate(client, name, candidate, evaluation, tags)
    promoted, reason = gate(evaluation, config)
    client.set_model_version_tag(name, version, "roleforge.promoted", str(promoted).lower())
    client.set_model_version_tag(name, version, "roleforge.decision", reason)
    client.set_tag(candidate.mlflow_run_id, "roleforge.decision", reason)

    def decision(previous: str | None) -> Decision:
        champion = alias_version(client, name, CHAMPION)
        return Decision(role=candidate.role, version=version, promoted=promoted, reason=reason,
                        champion_version=str(champion.version) if champion else None, previous_version=previous)

    if promoted:
        made: list[Decision] = []

        def record(previous: str | None) -> None:
            made.append(decision(previous))
            after(made[-1])

        promote_version(client, name, version, record)
        return made[-1]
    previous_version = alias_version(client, name, PREVIOUS)
    held = decision(str(previous_version.version) if previous_version is not None else None)
    after(held)
    return held


def rollback(client: Any, name: str) -> tuple[str, str | None]:
    """Move `champion` back to `previous`; `previous` then points at what that version had replaced."""
    previous = alias_version(client, name, PREVIOUS)
    current = alias_version(client, name, CHAMPION)
    if previous is None or current is None:
        raise RoleforgeError(f"{name} has no previous champion to roll back to")
    client.set_registered_model_alias(name, CHAMPION, previous.version)
    client.set_model_version_tag(name, current.version, "roleforge.rolled_back", "true")
    older = previous.tags.get(REPLACED_TAG)
    if older:
        client.set_registered_model_alias(name, PREVIOUS, older)
    else:
        client.delete_registered_model_alias(name, PREVIOUS)
    return str(previous.version), older


@task(name="promote-candidate", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
@STAGES.timed("promote")
def promote_role(candidate: Candidate, evaluation: Evaluation, contract_passed: bool) -> Decision:
    """Register the candidate and promote it if it passes the role's gate."""
    from prefect.events import emit_event

    from roleforge.tasks.report import role_resource

    settings = load_settings()
    tags = {**current_flow_run(), "roleforge.contract": "passed" if contract_passed else "failed"}

    def record(decision: Decision) -> None:
        audit.record(settings.home, "promote" if decision.promoted else "hold", role=candidate.role,
                     version=decision.version, champion_version=decision.champion_version,
                     previous_version=decision.previous_version, reason=decision.reason,
                     train_pairs=candidate.train_pairs, dataset_hash=candidate.snapshot_hash,
                     flow_run_id=tags.get("prefect.flow_run_id"))
        if decision.promoted:
            emit_event(event="roleforge.adapter.promoted", resource=role_resource(candidate.role),
                       payload={**decision.model_dump(), "mlflow_run_id": candidate.mlflow_run_id,
                                "dataset_hash": candidate.snapshot_hash})

    client = mlflow_client(settings.resolved_tracking_uri)
    name = settings.registered_model_name(candidate.role)
    decision = decide(client, name, candidate, evaluation, settings.role(candidate.role).gate, tags, record)
    mirror_to = promotion_mirror(settings)
    if decision.promoted and mirror_to is not None:
        mirror(mirror_to, client, name, candidate, decision, settings.path("registry-cache"))
    get_run_logger().info("role %s v%s: %s (%s)", candidate.role, decision.version,
                          "promoted" if decision.promoted else "not promoted", decision.reason)
    return decision


def mirror(mirror_to: PromotionMirror, client: Any, name: str, candidate: Candidate, decision: Decision,
           cache_dir: Path) -> None:
    """Register the new champion in Azure ML too. The MLflow registry stays the source of truth: a failed mirror
    is logged and tagged on the version, and does not undo the promotion."""
    version = client.get_model_version(name, decision.version)
    lineage = {k: v for k, v in version.tags.items() if k.startswith(("roleforge.", "prefect."))}
    try:
        asset = mirror_to(candidate.role, decision.version, local_adapter_path(client, version, cache_dir), lineage)
    except Exception as error:  # noqa: BLE001 - reported, and the local promotion stands
        get_run_logger().warning("role %s v%s: Azure ML mirror failed: %s", candidate.role, decision.version, error)
        client.set_model_version_tag(name, decision.version, "roleforge.azure_ml_mirror", f"failed: {error}"[:500])
        return
    client.set_model_version_tag(name, decision.version, "roleforge.azure_ml_mirror", asset)


@task(name="rollback-champion", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def rollback_role(role: str) -> dict[str, str | None]:
    """Move a role's champion back to its previous version."""
    from prefect.events import emit_event

    from roleforge.tasks.report import role_resource

    settings = load_settings()
    settings.role(role)
    champion, previous = rollback(mlflow_client(settings.resolved_tracking_uri), settings.registered_model_name(role))
    audit.record(settings.home, "rollback", role=role, champion_version=champion, previous_version=previous)
    emit_event(event="roleforge.adapter.rolled-back", resource=role_resource(role),
               payload={"champion_version": champion, "previous_version": previous})
    return {"role": role, "champion_version": champion, "previous_version": previous}
