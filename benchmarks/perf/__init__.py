"""Performance benchmarks, each runnable as ``python -m benchmarks.perf.<name> [--quick]``."""
