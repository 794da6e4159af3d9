"""The units of work, one module per stage of the DAG, with their shared building blocks beside them."""
