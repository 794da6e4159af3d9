"""The stages of the DAG, one module (or package, like labelers/) per node; their building blocks live in roleforge/."""
