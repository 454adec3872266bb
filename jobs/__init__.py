"""The job programs (`python -m jobs.<name>`); importing the package first pins numpy's BLAS kernels."""

import tunebox  # noqa: F401  (tunebox/blas.py: before the job module imports numpy)
