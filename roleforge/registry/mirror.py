"""Mirrors of promotions: a promoted adapter also registered elsewhere (an Azure ML workspace or registry, with
`azure_ml.mirror_promotions`). The promote stage receives the mirror that settings ask for, or none."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from roleforge.config.settings import Settings

# (role, version, adapter directory, lineage tags) -> the id of the asset the mirror registered.
PromotionMirror = Callable[[str, str, Path, dict[str, str]], str]


def promotion_mirror(settings: Settings) -> PromotionMirror | None:
    """The mirror the settings ask for, or None."""
    if not settings.azure_ml.mirror_promotions:
        return None

    def to_azure_ml(role: str, version: str, adapter_dir: Path, tags: dict[str, str]) -> str:
        from roleforge.deployments.azure_ml import mirror_promotion

        return mirror_promotion(settings.azure_ml, role, version, adapter_dir, tags)

    return to_azure_ml
