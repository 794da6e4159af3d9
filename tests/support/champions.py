"""Champions without training: a LoRA adapter with random weights on the tiny model, registered as a role's champion
the way a promotion leaves it in MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def lora_adapter(base_dir: Path, out_dir: Path, seed: int, r: int = 4, targets: tuple[str, ...] = ("q_proj", "v_proj")) -> Path:
    """A rank-r LoRA adapter (on q_proj and v_proj, or `targets`) with large random weights, so that the tiny model's
    answers change."""
    import torch
    from peft import LoraConfig, get_peft_model

    from roleforge.models.base import load_model

    torch.manual_seed(seed)
    model = get_peft_model(load_model(base_dir), LoraConfig(r=r, lora_alpha=16 * r, target_modules=list(targets)))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 1.0)
    model.save_pretrained(str(out_dir))
    return out_dir


def register_champion(settings: Any, role: str, adapter_dir: Path) -> str:
    """Register the adapter as a new version of the role's model and point the champion alias at it; its version."""
    from roleforge.registry.tracking import CHAMPION, mlflow_client

    client = mlflow_client(settings.resolved_tracking_uri)
    name = settings.registered_model_name(role)
    if not client.search_registered_models(f"name='{name}'"):
        client.create_registered_model(name)
    version = client.create_model_version(name, source=adapter_dir.resolve().as_uri())
    client.set_registered_model_alias(name, CHAMPION, version.version)
    return str(version.version)
