"""Benchmarks that print JSON: measured on this machine, in one process, never asserted by a timed test. One module
per benchmark (`roleforge bench <name>`), and what they share in common.py."""
