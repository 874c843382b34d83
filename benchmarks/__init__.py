"""Benchmarks: one script per capability plus a shared harness (``python -m benchmarks.X``)."""
