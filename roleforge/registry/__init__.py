"""The MLflow tracking store and model registry: the client, experiments, and the champion/previous aliases."""
