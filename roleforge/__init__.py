"""roleforge: a self-learning pipeline for role-playing LLM agents."""
