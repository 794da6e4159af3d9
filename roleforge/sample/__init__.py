"""The bundled sample feedback (see generate.py)."""

from pathlib import Path

SAMPLE_DIR = Path(__file__).parent
SAMPLE_FEEDBACK = SAMPLE_DIR / "feedback"
TOOL_USE_HELDOUT = SAMPLE_DIR / "tool_use_heldout.jsonl"  # request/tool rows, written apart from the training data
CAPABILITIES = SAMPLE_DIR / "capabilities.jsonl"  # plain questions a candidate must keep answering
