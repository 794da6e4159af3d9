"""Process environment set before Prefect, MLflow or transformers are imported."""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path


def prepare_environment(home: Path) -> None:
    """Keep every tool's state under ROLEFORGE_HOME, offline, and quiet; explicit user settings win."""
    if "PREFECT_LOGGING_LEVEL" not in os.environ:
        # The runs' INFO lines (every stage's progress) reach Prefect's API, so a run's page shows them; the terminal
        # gets warnings only. A level the user sets applies to both.
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    defaults = {
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
        # roleforge's own warnings (a training that fell back to activation checkpointing) reach the run's log in
        # the Prefect UI; outside a run (`roleforge train-job`) they go to stderr only, without Prefect's complaint.
        "PREFECT_LOGGING_EXTRA_LOGGERS": "roleforge",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(home / "hf"),
        "TOKENIZERS_PARALLELISM": "false",
        "TRANSFORMERS_VERBOSITY": "error",
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    # TRL calls a transformers method that transformers itself deprecated: nothing a user can act on.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


# What the stages import on first use, heaviest first (importing them costs seconds each on a small machine), with
# the names they take from each: transformers' and TRL's names are lazy, each imported on its first use.
STAGE_IMPORTS: dict[str, tuple[str, ...]] = {
    "torch": (),
    "transformers": ("AttentionInterface", "AutoConfig", "AutoModelForCausalLM", "AutoTokenizer", "DynamicCache",
                     "PreTrainedModel", "PreTrainedTokenizerBase", "PrinterCallback", "StoppingCriteria",
                     "StoppingCriteriaList", "Trainer", "TrainerCallback"),
    "transformers.masking_utils": ("ALL_MASK_ATTENTION_FUNCTIONS", "AttentionMaskInterface"),
    "peft": ("LoraConfig", "PeftModel", "get_peft_model"),
    "trl": ("DPOConfig", "DPOTrainer"),
    "datasets": ("Dataset",),
    "great_expectations": (),
    "pandas": (),
    "pyarrow.parquet": (),
}
STAGE_MODULES = tuple(STAGE_IMPORTS)
# What the model stages (labeling with a local judge, training, evaluation) use.
MODEL_MODULES = ("torch", "transformers", "transformers.masking_utils", "peft", "trl", "datasets")
_IMPORTING = threading.Lock()


def import_for_stages(modules: tuple[str, ...] = STAGE_MODULES) -> None:
    """Import these of the stages' libraries and the names the stages take from them, one thread at a time. Two
    threads importing them at once (the warm-up thread and a stage, or two roles' stages) can each hold an import
    lock the other waits for; Python breaks that deadlock by giving one of them a module still being initialised,
    and `from trl import DPOConfig` then fails with ImportError (seen while the warm-up was importing transformers).
    A stage calls this before it imports any of them; once done, a call costs a lock and a few lookups."""
    import importlib

    with _IMPORTING:
        for name in modules:
            module = importlib.import_module(name)
            for attribute in STAGE_IMPORTS[name]:
                getattr(module, attribute)


def start_warm_up(tracking_uri: str, artifact_root: Path) -> threading.Thread:
    """Open the MLflow store (running its migrations on a new home) and import what the stages need, in a daemon
    thread. A run's first flow waits several seconds for Prefect's local server, a subprocess: this work fills that
    wait instead of adding to the run. Whatever the thread has not finished, the stages do themselves."""

    def work() -> None:
        from roleforge.registry.tracking import experiment_id, mlflow_client

        try:
            experiment_id(mlflow_client(tracking_uri), artifact_root)
            import_for_stages()
        except Exception:  # noqa: BLE001 - the stages meet and report the same problem themselves
            return

    thread = threading.Thread(target=work, name="roleforge-warm-up", daemon=True)
    thread.start()
    return thread
