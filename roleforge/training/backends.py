"""Where a role's adapter trains. The train stage receives a `TrainingBackend`; `training_backend` picks the one
that settings.training.backend names: this process (`local`, the default) or an Azure ML job (`azure_ml`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from roleforge.config.settings import Settings
from roleforge.storage.snapshots import PreferenceDataset
from roleforge.training.candidate import Candidate


class TrainingBackend(Protocol):
    """Trains one role's candidate adapter on its dataset snapshot with the profile's recipe, records it in the
    MLflow run it opens under `experiment` (with `tags`), and returns it."""

    def __call__(self, dataset: PreferenceDataset, profile: str, client: Any, experiment: str,
                 tags: dict[str, str]) -> Candidate: ...


@dataclass(frozen=True)
class LocalTraining:
    """Trains in this process, on the process's shared base model."""

    settings: Settings

    def __call__(self, dataset: PreferenceDataset, profile: str, client: Any, experiment: str,
                 tags: dict[str, str]) -> Candidate:
        from roleforge.config.recipes import role_recipe

        recipe = role_recipe(profile, self.settings.role_training(dataset.role), dataset.role)
        return self.train(dataset, recipe, client, experiment, tags)

    def train(self, dataset: PreferenceDataset, recipe: dict[str, dict[str, Any]], client: Any, experiment: str,
              tags: dict[str, str]) -> Candidate:
        """Train with this recipe (a tune's trial brings its own) in the shared checkpoints folder, so that the
        reference log-probs and replay answers of every earlier training are reused."""
        from roleforge.training.local import train_adapter

        settings, config = self.settings, self.settings.role(dataset.role)
        base_model = settings.base_model_dir()
        return train_adapter(
            dataset, config.system_prompt, recipe, base_model, settings.path("checkpoints"), settings.path("adapters"),
            client, experiment, tags, base_adapter=config.base_adapter, min_pairs=config.min_pairs,
            max_parallel=settings.training.max_parallel_roles, engine=settings.training.engine,
            reference_keep_days=settings.retention.reference_unused_days)


def training_backend(settings: Settings) -> TrainingBackend:
    """The backend settings.training.backend names."""
    if settings.training.backend == "azure_ml":
        from roleforge.deployments.azure_ml import AzureMLTraining

        return AzureMLTraining(settings)
    return LocalTraining(settings)
