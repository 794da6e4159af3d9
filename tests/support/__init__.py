"""Helpers of the tests: the tiny model, a throwaway PostgreSQL server, a local Prefect server."""
