"""Benchmarks: `python -m benchmarks.ingest_throughput` (see its docstring and the README)."""
