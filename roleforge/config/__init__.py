"""Configuration: the one settings object (ROLEFORGE_* variables, roleforge.toml) and the training recipes per role."""
