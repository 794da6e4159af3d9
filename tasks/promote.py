"""Promote: register every candidate as a version of the role's MLflow model; move `champion` only for winners."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from roleforge.tasks.errors import RoleforgeError, retry_transient
from roleforge.tasks.evaluate import Evaluation
from roleforge.tasks.settings import GateConfig, load_settings
from roleforge.tasks.train import Candidate
from roleforge.tasks import audit
from roleforge.tasks.timing import STAGES

CHAMPION, PREVIOUS = "champion", "previous"
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
    """The promotion rule: the candidate must beat its opponent on held-out preference accuracy by a margin,
    and its implicit reward must rank enough held-out pairs the right way."""
    gain, reward_accuracy = evaluation.accuracy_gain, evaluation.candidate.reward_accuracy or 0.0
    versus = f"{evaluation.opponent}" + (f" v{evaluation.opponent_version}" if evaluation.opponent_version else "")
    if gain < config.min_accuracy_gain:
        return False, f"accuracy gain {gain:+.3f} over {versus} is below {config.min_accuracy_gain:+.3f}"
    if reward_accuracy < config.min_reward_accuracy:
        return False, f"reward accuracy {reward_accuracy:.3f} is below {config.min_reward_accuracy:.3f}"
    return True, f"accuracy gain {gain:+.3f} over {versus}, reward accuracy {reward_accuracy:.3f}"


def alias_version(client: Any, name: str, alias: str) -> Any | None:
    """The model version an alias points at, or None when the model or alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def local_adapter_path(client: Any, version: Any, cache_dir: Path) -> Path:
    """A local directory holding a version's adapter (downloaded once for remote artifact stores)."""
    parsed = urlparse(version.source)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path))
    import mlflow

    target = cache_dir / version.name / str(version.version)
    if not target.exists():
        mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(target))
    return target


def champion_adapter(client: Any, name: str, cache_dir: Path) -> tuple[Path | None, str | None]:
    champion = alias_version(client, name, CHAMPION)
    if champion is None:
        return None, None
    return local_adapter_path(client, champion, cache_dir), str(champion.version)


def last_trained_snapshot(client: Any, name: str) -> str | None:
    """The dataset hash of the role's newest registered version: what its last training saw."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException:
        return None
    newest = max(versions, key=lambda v: int(v.version), default=None)
    return newest.tags.get("roleforge.dataset_hash") if newest is not None else None


def register_candidate(client: Any, name: str, candidate: Candidate, evaluation: Evaluation, tags: dict[str, str]) -> str:
    """A new version of the role's registered model, with lineage and metrics as tags."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, tags={"roleforge.role": candidate.role},
                                       description=f"DPO LoRA adapters of the {candidate.role} role")
    except MlflowException as error:
        if "RESOURCE_ALREADY_EXISTS" not in str(error.error_code):
            raise
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


def move_champion(client: Any, name: str, version: str) -> str | None:
    """Point `champion` at version and `previous` at the champion it replaces; returns that previous version."""
    old = alias_version(client, name, CHAMPION)
    if old is not None and str(old.version) != version:
        client.set_registered_model_alias(name, PREVIOUS, old.version)
        client.set_model_version_tag(name, version, REPLACED_TAG, str(old.version))
    client.set_registered_model_alias(name, CHAMPION, version)
    return str(old.version) if old is not None and str(old.version) != version else None


def decide(client: Any, name: str, candidate: Candidate, evaluation: Evaluation, config: GateConfig,
           tags: dict[str, str]) -> Decision:
    """Register the candidate, apply the gate, and move the aliases when it wins; the verdict is recorded either way."""
    version = register_candidate(client, name, candidate, evaluation, tags)
    promoted, reason = gate(evaluation, config)
    client.set_model_version_tag(name, version, "roleforge.promoted", str(promoted).lower())
    client.set_model_version_tag(name, version, "roleforge.decision", reason)
    client.set_tag(candidate.mlflow_run_id, "roleforge.decision", reason)
    previous = move_champion(client, name, version) if promoted else None
    champion = alias_version(client, name, CHAMPION)
    if not promoted:
        previous_version = alias_version(client, name, PREVIOUS)
        previous = str(previous_version.version) if previous_version is not None else None
    return Decision(role=candidate.role, version=version, promoted=promoted, reason=reason,
                    champion_version=str(champion.version) if champion else None, previous_version=previous)


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
    from roleforge.tasks.tracking import current_flow_run, mlflow_client

    settings = load_settings()
    tags = {**current_flow_run(), "roleforge.contract": "passed" if contract_passed else "failed"}
    decision = decide(mlflow_client(settings.resolved_tracking_uri), settings.registered_model_name(candidate.role),
                      candidate, evaluation, settings.role(candidate.role).gate, tags)
    get_run_logger().info("role %s v%s: %s (%s)", candidate.role, decision.version,
                          "promoted" if decision.promoted else "not promoted", decision.reason)
    audit.record(settings.home, "promote" if decision.promoted else "hold", role=candidate.role, version=decision.version,
                 champion_version=decision.champion_version, previous_version=decision.previous_version,
                 reason=decision.reason, train_pairs=candidate.train_pairs, dataset_hash=candidate.snapshot_hash,
                 flow_run_id=tags.get("prefect.flow_run_id"))
    if decision.promoted:
        emit_event(event="roleforge.adapter.promoted", resource=role_resource(candidate.role),
                   payload={**decision.model_dump(), "mlflow_run_id": candidate.mlflow_run_id,
                            "dataset_hash": candidate.snapshot_hash})
    return decision


@task(name="rollback-champion", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def rollback_role(role: str) -> dict[str, str | None]:
    """Move a role's champion back to its previous version."""
    from prefect.events import emit_event

    from roleforge.tasks.report import role_resource
    from roleforge.tasks.tracking import mlflow_client

    settings = load_settings()
    settings.role(role)
    champion, previous = rollback(mlflow_client(settings.resolved_tracking_uri), settings.registered_model_name(role))
    audit.record(settings.home, "rollback", role=role, champion_version=champion, previous_version=previous)
    emit_event(event="roleforge.adapter.rolled-back", resource=role_resource(role),
               payload={"champion_version": champion, "previous_version": previous})
    return {"role": role, "champion_version": champion, "previous_version": previous}
