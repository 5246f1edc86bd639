"""Standalone benchmark scripts, run as ``python -m benchmarks.<name>`` (not pytest tests)."""
