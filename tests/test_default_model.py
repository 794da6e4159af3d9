"""The real default model, end to end through the CLI: converted from the bundled GGUF, trained, judged, registered."""

import json
import os
import subprocess
import sys

import pytest

from roleforge.config.settings import load_settings
from roleforge.models.base import ensure_base_model, is_converted

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_model():
    """The converted default model of the surrounding environment (make setup converts it; else convert now)."""
    settings = load_settings()
    return ensure_base_model(settings.resolved_base_model, is_default=True)


def test_converted_model_is_plain_safetensors(default_model):
    from roleforge.models.base import load_model

    assert is_converted(default_model)
    model = load_model(default_model)
    assert getattr(model.config, "quantization_config", None) is None and model.num_parameters() > 100_000_000


def test_sample_run_trains_and_registers_the_tool_agent(home, default_model):
    result = subprocess.run(
        [sys.executable, "-m", "roleforge.cli", "run", "--sample", "--roles", "tool-agent", "--profile", "quick", "--json"],
        capture_output=True, text=True, timeout=1500, env={**os.environ, "ROLEFORGE_BASE_MODEL": str(default_model),
                                                            "ROLEFORGE_CONFIG": str(home.parent / "none.toml")})
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])["tool-agent"]
    assert outcome["trained"] and outcome["version"] == "1" and outcome["pairs"] > 200
    assert outcome["reward_accuracy"] > 0.5, "DPO must rank most held-out pairs right by its implicit reward"
    assert outcome["promoted"] == (outcome["champion_version"] == "1")
