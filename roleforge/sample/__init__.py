"""The bundled sample feedback (see generate.py)."""

from pathlib import Path

SAMPLE_DIR = Path(__file__).parent
SAMPLE_FEEDBACK = SAMPLE_DIR / "feedback"
TOOL_USE_HELDOUT = SAMPLE_DIR / "tool_use_heldout.jsonl"  # request/tool rows, written apart from the training data
ROLE_EVAL = SAMPLE_DIR / "role_eval.jsonl"  # role/prompt rows on new topics, written apart from the generated feedback
CAPABILITIES = SAMPLE_DIR / "capabilities.jsonl"  # general questions, by category, a candidate must keep answering
# Plain general requests, apart from the capability set in topic and wording: the base model's answers to them are
# replayed to keep an adapter close to it, and they measure its drift.
GENERAL_PROMPTS = SAMPLE_DIR / "general_prompts.jsonl"
TOOL_USE_EVAL = SAMPLE_DIR / "tool_use_eval.jsonl"  # tool requests with what a right call does, apart from the generator
TEN_ROLES = SAMPLE_DIR / "ten_roles.toml"  # six more roles beside the built-in four (generate.py --ten-roles feeds them)
