"""Benchmarks: side-by-side agent runs, metrics and reports, and performance scripts under ``perf``."""
