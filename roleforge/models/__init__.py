"""The base model and its adapters: loading, the shared base-model pool, and generation."""
