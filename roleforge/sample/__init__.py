"""The bundled sample feedback (see generate.py)."""

from pathlib import Path

SAMPLE_FEEDBACK = Path(__file__).parent / "feedback"
