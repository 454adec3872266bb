"""tunebox: the code the job programs in jobs/ share, one subject per subpackage (README's Layout)."""

from tunebox.blas import pin_openblas_core

# before anything in the process imports numpy: OpenBLAS picks its kernels when it loads (tunebox/blas.py)
pin_openblas_core()
