"""Benchmarks: each appends its figures to docs/BENCHMARKS.md; run with `invoke bench.<name>`."""
