"""Benchmarks are not part of the default test run: `pytest benchmarks/ --benchmark-only`."""
