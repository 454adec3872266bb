"""Benchmarks: each appends its figures to docs/BENCHMARKS.md; run with `invoke bench.<name>`."""

import tunebox  # noqa: F401  (tunebox/blas.py: before a bench imports numpy)
