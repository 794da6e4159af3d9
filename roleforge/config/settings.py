"""One configuration object: ROLEFORGE_* environment variables over an optional roleforge.toml over defaults."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from roleforge.data_contracts.feedback import RoleSpellings, canonical_role, role_spellings
from roleforge.evaluation.contracts import OutputContract
from roleforge.evaluation.tool_use import TOOL_AGENT_SYSTEM_PROMPT
from roleforge.ops.errors import RoleforgeError
from roleforge.sample import TOOL_USE_HELDOUT

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"


class ConfigSection(BaseModel):
    """A section of the configuration: a key it does not know (`[roles.ceo.trainng]`, `[teacher] kindd`) is an error,
    not a setting silently ignored."""

    model_config = ConfigDict(extra="forbid")


class GateConfig(ConfigSection):
    """When a candidate adapter may replace the champion."""

    min_accuracy_gain: float = Field(
        default=0.02, description="Held-out preference accuracy the candidate must gain over its opponent."
    )
    min_reward_accuracy: float = Field(
        default=0.55, ge=0.0, le=1.0, description="Share of held-out pairs the candidate's implicit reward must rank right."
    )
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0, description="Level of the confidence intervals below.")
    min_gain_lower_bound: float = Field(
        default=0.0, description="The lower bound of the accuracy gain's paired-bootstrap interval must be above this.")
    min_win_rate_high: float = Field(
        default=0.5, ge=0.0, le=1.0,
        description="Generation A/B: the upper bound of the win rate's Wilson interval must reach this (the candidate "
                    "may not lose the A/B with confidence).")
    min_win_rate_low: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Generation A/B: the lower bound of the win rate must reach this.")
    max_refusal_increase: float = Field(default=0.1, ge=0.0, le=1.0, description="Guardrail: refusal rate vs the opponent.")
    min_length_ratio: float = Field(default=0.5, ge=0.0, description="Guardrail: mean answer length vs the opponent, lowest.")
    max_length_ratio: float = Field(default=2.0, ge=0.0, description="Guardrail: mean answer length vs the opponent, highest.")
    min_contract_p_value: float = Field(
        default=0.05, gt=0.0, lt=1.0,
        description="Output contract: a candidate that follows the role's contract on fewer held-out prompts than its "
                    "opponent is refused when the one-sided McNemar p-value of that loss is below this.")
    max_drift_kl: float | None = Field(
        default=0.5, ge=0.0,
        description="Mean KL (nats per token) of the candidate's next-token distributions from the base model's, on the "
                    "base model's answers to general prompts; above it the candidate is refused (None: reported only).")
    max_capability_loss: int = Field(
        default=0, ge=0,
        description="Guardrail: net retained-capability loss (questions lost minus gained against the opponent) "
                    "allowed; a larger one breaks the guardrail only when the one-sided McNemar test puts it "
                    "beyond chance at the gate's confidence.")


class EvaluationConfig(ConfigSection):
    """What the A/B of a candidate against its opponent generates, beyond scoring the held-out pairs."""

    generation_prompts: int = Field(default=8, ge=0, description="Held-out prompts both models answer for the judge (0: no generation A/B).")
    max_new_tokens: int = Field(default=96, ge=1, description="Longest generated answer in the A/B and the contract check.")
    batch_size: int = Field(default=64, ge=1, description="Prompts generated at once (A/B, capability and task prompts together).")
    judge_margin: float = Field(default=0.1, ge=0.0, lt=0.5, description="A verdict this close to 0.5 is a tie.")
    min_judge_agreement: float = Field(
        default=0.75, ge=0.0, le=1.0,
        description="Share of calibration pairs the judge must get right, in both orders, before its A/B counts; "
                    "below it the evaluation has no judge and the gate relies on the other evidence.")
    judge_calibration_pairs: Path | None = Field(
        default=None, description="JSONL of system_prompt/prompt/better/worse rows the judge is checked on "
                                  "(default: the bundled set).")
    contract_prompts: int = Field(
        default=24, ge=0, description="Held-out prompts both models answer for the role's output contract (the A/B's are among them).")
    capability_checks: bool = Field(default=True, description="Ask the retained-capability questions (guardrail).")
    capability_max_new_tokens: int = Field(default=48, ge=1, description="Longest answer to a retained-capability question.")
    drift_prompts: int = Field(default=32, ge=0, description="General prompts the logit drift from the base model is measured on (0: none).")
    tool_use_prompts: Path | None = Field(
        default=None, description="JSONL of request/tool rows: the tool-use task metrics of both models (tool-agent: the bundled set).")
    max_task_prompts: int = Field(default=16, ge=1, description="Most tool-use requests asked.")


class LabelingConfig(ConfigSection):
    """How a role's feedback becomes preference pairs."""

    min_rating_gap: int = Field(default=2, ge=1, le=4, description="Smallest mean-rating difference that makes a pair.")
    min_chosen_rating: float = Field(default=4, ge=1, le=5, description=(
        "Lowest mean rating (1-5) a rated answer needs to be chosen: a 3 over a 1 is a pair of a middling answer, and "
        "training imitates chosen answers. Below it the pair is skipped and counted; 1 keeps every gap."))
    heuristics: list[Literal["contract", "refusal", "detail", "tool_format"]] = Field(
        default_factory=lambda: ["contract", "refusal", "detail"],
        description="Heuristic rules, tried in order (contract: an answer that follows the role's output contract wins).")
    min_detail_chars: int = Field(default=40, ge=1, description="detail rule: answers shorter than this are terse.")
    teacher: bool = Field(default=True, description="Ask the configured teacher judge about pairs humans left undecided.")
    generate_rejected: bool = Field(default=False, description="Derive rejected answers from good tool calls.")
    max_source_share: dict[str, float] = Field(
        default_factory=lambda: {"teacher": 0.1, "heuristic": 0.05, "generated": 0.05},
        description="Most an automated source may make up of the role's pairs; human sources are never capped. "
                    "The defaults keep at least 80% human pairs.")
    max_rater_share: float = Field(default=0.5, gt=0.0, le=1.0, description="Flood guard: most pairs one rater may give.")
    min_pairs_for_rater_share: int = Field(
        default=20, ge=1, description="Flood guard: fewest pairs a rater's share is judged on (one pair is a share of 1.0).")


class ShiftGuardConfig(ConfigSection):
    """Poisoning guard on the feedback a role received since its last training: the role is held back, with the
    reason, when one rater, one source or one prompt suddenly dominates it."""

    min_rows: int = Field(default=20, ge=1, description="Fewest new rows (or rows of history) a share is judged on.")
    max_rater_share: float = Field(default=0.5, gt=0.0, le=1.0, description="Most of the new rows one rater may give.")
    max_share_shift: float = Field(default=0.3, gt=0.0, le=1.0,
                                   description="Most one rater's or source's (metadata.source) share of the new rows may exceed its share of the history.")
    max_prompt_share: float = Field(default=0.05, gt=0.0, le=1.0, description="Most of the new rows one prompt may make up ...")
    min_prompt_repeats: int = Field(default=10, ge=2, description="... once it repeats more than this often.")


class TeacherConfig(ConfigSection):
    """The judge that ranks response pairs humans left undecided."""

    kind: Literal["none", "local", "http"] = Field(
        default="none", description="none; local: a causal LM on this machine (the base model by default); http: an OpenAI-compatible endpoint.")
    model: Path | None = Field(default=None, description="local: model directory (default: the base model).")
    url: str | None = Field(default=None, description="http: base URL, e.g. https://host/v1")
    model_name: str = Field(default="gpt-4o-mini", description="http: the model to ask.")
    api_key: SecretStr | None = Field(default=None, description="http: bearer key (ROLEFORGE_TEACHER__API_KEY); never logged.")
    batch_size: int = Field(default=8, ge=1)
    max_comparisons: int = Field(default=24, ge=0, description="Most pairs judged per role and run.")
    abstain_margin: float = Field(default=0.1, ge=0.0, lt=0.5, description="No pair when P(first better) is this close to 0.5.")
    timeout_s: float = Field(default=30.0, gt=0)
    retries: int = Field(default=3, ge=0)


class TrainingSettings(ConfigSection):
    """Where and how the per-role trainings run."""

    backend: Literal["local", "azure_ml"] = Field(default="local", description="Train in this process, or as Azure ML jobs.")
    engine: Literal["roleforge", "trl"] = Field(
        default="roleforge", description="roleforge's DPO path (shared system prompt, cached reference, bf16 base on a GPU) or stock TRL DPOTrainer.")
    fanout: Literal["threads", "dask"] = Field(default="threads", description="Task runner of the per-role fan-out.")
    max_parallel_roles: int = Field(default=1, ge=1, description="Roles training at once in one process (copies of the base model).")
    dask_address: str | None = Field(default=None, description="dask: scheduler address; a LocalCluster when unset.")
    dask_workers: int = Field(default=2, ge=1, description="dask: worker processes of the LocalCluster.")
    preemption_retries: int = Field(default=5, ge=0, description="Retries of a preempted training (resuming from its checkpoint).")
    transient_retries: int = Field(default=2, ge=0, description="Retries after a transient infrastructure error; code errors fail fast.")


class AzureMLSettings(ConfigSection):
    """An Azure ML workspace with a low-priority GPU cluster. Credentials come from the environment
    (DefaultAzureCredential: AZURE_CLIENT_ID / AZURE_TENANT_ID / AZURE_CLIENT_SECRET, a managed identity, az login)."""

    subscription_id: str | None = Field(default=None, description="Or AZURE_SUBSCRIPTION_ID.")
    resource_group: str | None = Field(default=None, description="Or AZURE_RESOURCE_GROUP.")
    workspace: str | None = Field(default=None, description="Or AZUREML_WORKSPACE_NAME.")
    compute: str = Field(default="roleforge-lowpri", description="AmlCompute cluster name.")
    vm_size: str = Field(default="Standard_NC4as_T4_v3")
    max_instances: int = Field(default=4, ge=1)
    idle_seconds_before_scale_down: int = Field(default=300, ge=0)
    image: str = Field(default="mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04:latest",
                       description="Docker image of the job environment; roleforge is pip-installed from the uploaded code.")
    max_restarts: int = Field(default=5, ge=0, description="Preemption restarts of one job before it counts as failed.")
    poll_seconds: float = Field(default=30.0, gt=0)
    mirror_promotions: bool = Field(
        default=False, description="Also register each promoted adapter as a model in the workspace (or the registry below).")
    registry: str | None = Field(default=None, description="An Azure ML registry to mirror into instead of the workspace.")


class RetentionSettings(ConfigSection):
    """What `roleforge gc` (also the nightly flow's last step) prunes. Whatever a registered model version points at
    (its adapter, its dataset snapshot, its run) is kept whatever these say."""

    archive_days: int | None = Field(default=30, ge=0, description="Days an ingested inbox file stays in archive/ (None: forever).")
    checkpoint_keep: int = Field(default=1, ge=1, description="Newest complete checkpoints kept per unfinished training.")
    stale_training_days: int = Field(
        default=14, ge=0, description="Days after which an unfinished training nobody resumed (and no later one replaced) is removed whole.")
    snapshot_keep: int = Field(default=3, ge=1, description="Newest dataset snapshots kept per role besides those registered versions point at.")
    reference_unused_days: int = Field(default=30, ge=0, description="Days a kept reference log-prob may go unused before it is dropped.")
    mlflow_run_days: int | None = Field(
        default=None, ge=0, description="Days after which MLflow runs no registered version points at are deleted (None: keep).")
    prefect_run_days: int | None = Field(default=None, ge=1, description="Days after which finished Prefect flow runs are deleted (None: keep).")
    max_home_gb: float | None = Field(
        default=None, gt=0, description="Disk ROLEFORGE_HOME should stay under after gc; gc and status warn when it does not.")


class RoleServingConfig(ConfigSection):
    """How `roleforge api` serves a role."""

    ab_share: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description="Share of the role's requests answered by the champion and the newest held-back or pending candidate "
                    "side by side (order randomised); the rater's choice comes back as a human A/B row.")


class ServingSettings(ConfigSection):
    """`roleforge api`: one base model with every champion attached, requests batched across roles."""

    host: str = Field(default="127.0.0.1", description="Address to bind; any other than loopback needs ROLEFORGE_API_KEYS.")
    port: int = Field(default=8000, ge=0, le=65535)
    max_batch: int = Field(default=8, ge=1, le=256, description="Requests generated together (any mix of roles).")
    max_queue: int = Field(default=64, ge=1, description="Requests waiting for a batch; past it the server answers 429.")
    batch_wait_ms: float = Field(default=5.0, ge=0.0, le=1000.0, description="How long a batch waits to fill once a request is waiting.")
    max_new_tokens: int = Field(default=256, ge=1, description="Answer length when a request gives no max_tokens.")
    max_tokens_limit: int = Field(default=1024, ge=1, description="Most new tokens a request may ask for.")
    poll_seconds: float = Field(default=10.0, gt=0.0, description="How often the registry is read for promotions and rollbacks.")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto", description="Weights' dtype: auto is bfloat16 where the hardware computes in it (GPU, AVX-512 BF16, AMX), else float32.")
    ledger_days: int = Field(default=30, ge=1, description="Days a served answer stays known to /v1/feedback.")


class RoleConfig(ConfigSection):
    """A role that an agent plays, with its own data rules, training recipe overrides and promotion gate."""

    description: str = ""
    system_prompt: str
    aliases: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list,
        description="Other names feedback rows may give the role (agent_role), e.g. ['CEO', 'ceo_agent']; names and "
                    "aliases match case-insensitively, and rows are stored under the role's own name.")
    min_pairs: int = Field(default=16, ge=1, description="Fewest training pairs a role needs before it trains.")
    min_new_pairs: int = Field(default=16, ge=0, description="Train only when this many training pairs are new since the last training.")
    held_out_fraction: float = Field(default=0.2, gt=0.0, lt=1.0, description="Share of prompts kept for evaluation.")
    labeling: LabelingConfig = Field(default_factory=LabelingConfig)
    training: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Overrides of the profile's recipe: {'dpo': {...}, 'lora': {...}, 'data': {...}}."
    )
    gate: GateConfig = Field(default_factory=GateConfig)
    guard: ShiftGuardConfig = Field(default_factory=ShiftGuardConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    base_adapter: Path | None = Field(
        default=None, description="An SFT LoRA adapter of this role: DPO starts from it and uses it as the reference.")
    output: OutputContract = Field(
        default_factory=OutputContract,
        description="The shape every answer must take: evaluated on held-out prompts, gated, and used by the labeler.")
    serving: RoleServingConfig = Field(default_factory=RoleServingConfig)


# The executives' preferred answers are a few short labelled lines where the base model writes a long paragraph: a
# candidate that learns the shape answers at a fraction of the base's length, which is the point, not a fault.
EXECUTIVE_GATE = GateConfig(min_length_ratio=0.25)

DEFAULT_ROLES: dict[str, RoleConfig] = {
    "ceo": RoleConfig(
        description="Chief executive: strategy, priorities, decisions.",
        system_prompt="You are the CEO of a mid-sized software company. Answer with a clear decision, the reason, and the next step.",
        output=OutputContract(required_lines=["Decision:", "Reason:", "Next step:"]),
        gate=EXECUTIVE_GATE,
    ),
    "cfo": RoleConfig(
        description="Chief financial officer: numbers, budgets, risk.",
        system_prompt="You are the CFO of a mid-sized software company. Answer with the figures that matter, the financial risk, and a recommendation.",
        output=OutputContract(required_lines=["Figures:", "Risk:", "Recommendation:"]),
        gate=EXECUTIVE_GATE,
    ),
    "coo": RoleConfig(
        description="Chief operating officer: execution, process, people.",
        system_prompt="You are the COO of a mid-sized software company. Answer with a concrete operational plan: owners, steps and a deadline.",
        # Numbered steps, one of them naming its owner, and a deadline line.
        output=OutputContract(min_matches={r"^\s*\d+[.)]\s": 2}, patterns=[r"\bowner\b"], required_lines=["Deadline:"]),
        gate=EXECUTIVE_GATE,
    ),
    "tool-agent": RoleConfig(
        description="An agent that answers with a Thought line and a JSON tool call.",
        system_prompt=TOOL_AGENT_SYSTEM_PROMPT,
        output=OutputContract(tool_call=True),
        labeling=LabelingConfig(heuristics=["tool_format", "refusal", "detail"], generate_rejected=True,
                                max_source_share={"teacher": 0.05, "heuristic": 0.05, "generated": 0.4}),
        # Its answers are short tool calls where the base model writes prose, and it should answer a plain question
        # with a search call: its task metrics stand in for the length, capability and drift guardrails.
        evaluation=EvaluationConfig(tool_use_prompts=TOOL_USE_HELDOUT, capability_checks=False, drift_prompts=0),
        gate=GateConfig(min_length_ratio=0.1),
    ),
}


# Rows per ingest chunk, and so per store transaction (on the parse-worker path, chunks of a quarter of this and eight
# of them per transaction: PARSE_PARTS, STORE_GROUP_CHUNKS): each commit rewrites every index page its rows touched,
# and random content hashes touch most of them, so larger transactions write less per row (docs/perf-notes.md).
INGEST_BATCH_ROWS = 100_000


class Settings(BaseSettings):
    """Everything roleforge reads from its environment. All state lives under `home`."""

    model_config = SettingsConfigDict(env_prefix="ROLEFORGE_", env_nested_delimiter="__", extra="forbid")

    home: Path = Field(default=Path(".roleforge"), description="Where every run writes its state.")
    store_url: str | None = Field(default=None, description="SQLAlchemy URL of the feedback store; sqlite under home if unset.")
    ingest_batch_rows: int = Field(default=INGEST_BATCH_ROWS, ge=1, le=10_000_000, description=(
        "Rows an ingest parses per chunk and stores per transaction (parse workers take a quarter of it at a time, and "
        "the store takes eight of those, twice this, per transaction): larger is faster (fewer index page rewrites) "
        "and takes more memory (about 700 MB at 100,000, parse workers included); a killed ingest redoes at most one "
        "transaction's chunks per file."))
    ingest_workers: int | None = Field(default=None, ge=0, le=256, description=(
        "Processes that parse JSON-lines feedback while the store takes the previous chunk: unset means one per CPU "
        "for files of 16 MiB or more, 0 parses in the ingest process itself."))
    mlflow_tracking_uri: str | None = Field(default=None, description="MLflow tracking + registry URI; sqlite under home if unset.")
    base_model: Path | None = Field(default=None, description="Directory of the base model (safetensors); the converted default if unset.")
    profile: Literal["quick", "default"] = Field(default="default", description="Training recipe profile.")
    roles: dict[str, RoleConfig] = Field(default_factory=lambda: dict(DEFAULT_ROLES))
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    azure_ml: AzureMLSettings = Field(default_factory=AzureMLSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    mlflow_ui_url: str = Field(default="http://127.0.0.1:5000", description="Where `mlflow ui` serves, for links in run summaries.")
    registry_prefix: str = Field(default="roleforge", description="Registered model name = '<prefix>-<role>'.")

    @field_validator("roles", mode="before")
    @classmethod
    def _over_defaults(cls, roles: Any) -> Any:
        """Configured roles refine the built-in ones field by field; a new role must bring its system_prompt."""
        if not isinstance(roles, dict):
            return roles
        merged: dict[str, Any] = {name: config.model_dump() for name, config in DEFAULT_ROLES.items()}
        for name, override in roles.items():
            if problem := role_name_problem(name):
                raise ValueError(f"role name {name!r} {problem}")
            given = override.model_dump() if isinstance(override, BaseModel) else override
            merged[name] = deep_merge(merged.get(name, {}), given) if isinstance(given, dict) else given
        return merged

    @model_validator(mode="after")
    def _roles_answer_to_distinct_names(self) -> Settings:
        self.role_spellings()  # two roles that answer to one name: a configuration error at start-up
        return self

    @field_validator("home")
    @classmethod
    def _absolute(cls, home: Path) -> Path:
        return home.expanduser().resolve()

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource, env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource, file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get("ROLEFORGE_CONFIG", "roleforge.toml"))
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_path))

    @property
    def resolved_store_url(self) -> str:
        return self.store_url or f"sqlite:///{self.home / 'store.db'}"

    @property
    def resolved_tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def resolved_base_model(self) -> Path:
        return self.base_model or self.home / "models" / DEFAULT_MODEL_NAME

    def base_model_dir(self) -> Path:
        """The base model's directory, ready to load: `base_model`, or the default model, converted on first use."""
        from roleforge.models.base import ensure_base_model

        return ensure_base_model(self.resolved_base_model, is_default=self.base_model is None)

    def path(self, *parts: str) -> Path:
        """A directory under home, created on first use."""
        directory = self.home.joinpath(*parts)
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def role_spellings(self) -> RoleSpellings:
        """Every name a feedback row may give a role (its name and aliases, in any case) -> the role's name."""
        return role_spellings(self.roles, {name: config.aliases for name, config in self.roles.items()})

    def role_name(self, name: str) -> str:
        """A role's configured name, from the name or an alias in any case (`--role CEO` is ceo)."""
        found = canonical_role(name, self.role_spellings())
        if found is None:
            raise RoleforgeError(f"unknown role {name!r} (configured: {', '.join(sorted(self.roles))})")
        return found

    def role(self, name: str) -> RoleConfig:
        return self.roles[self.role_name(name)]

    def tuned_recipe_path(self, role: str) -> Path:
        """Where `roleforge tune` keeps the best recipe it found for a role (recipe overrides, as JSON)."""
        return self.home / "recipes" / f"{role}.json"

    def role_training(self, name: str) -> dict[str, dict[str, Any]]:
        """A role's recipe overrides: the tuned recipe, if `roleforge tune` saved one, under the configuration's own
        `[roles.R.training]` (what an operator writes wins)."""
        import json

        configured = self.role(name).training
        path = self.tuned_recipe_path(name)
        if not path.is_file():
            return configured
        try:
            tuned = json.loads(path.read_text(encoding="utf-8"))["overrides"]
        except (ValueError, KeyError, TypeError) as error:
            raise RoleforgeError(f"{path}: not a tuned recipe ({error}); run `roleforge tune --role {name}` again or delete it") from error
        return deep_merge(tuned, configured)

    def registered_model_name(self, role: str) -> str:
        return f"{self.registry_prefix}-{role}"


# A role's name is a folder under home and part of its registered model's name, where MLflow refuses / and :.
UNSAFE_IN_ROLE_NAME = re.compile(r"[/\\:\x00-\x1f\x7f]")


def role_name_problem(name: str) -> str | None:
    """What makes `name` unusable as a role's name, or None."""
    if not name.strip() or name.strip() in (".", ".."):
        return "is blank or a folder's dot"
    if name != name.strip():
        return "has blanks around it"
    if UNSAFE_IN_ROLE_NAME.search(name):
        return "may not hold /, \\, : or control characters (it names the role's folders and its registered model)"
    if len(name) > 128:
        return "is longer than 128 characters (a feedback row's agent_role could not name it)"
    return None


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` laid over `base`, nested dictionaries merged key by key."""
    merged = dict(base)
    for key, value in override.items():
        merged[key] = deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def load_settings(**overrides: Any) -> Settings:
    """Read the configuration now (not at import), so that tests and CLIs can change the environment first."""
    return Settings(**overrides)
