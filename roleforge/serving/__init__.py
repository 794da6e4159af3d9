"""Serving: every role's champion behind one OpenAI-compatible endpoint, and feedback on what was served."""
