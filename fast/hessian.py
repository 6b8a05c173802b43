"""Same API as :mod:`quipref.hessian`. The reference is already BLAS-bound (one
``X^T X`` per batch, float64) and works on CuPy arrays through ``array_module``, so
:mod:`fast` re-exports it unchanged."""
from quipref.hessian import *  # noqa: F401,F403
from quipref.hessian import __all__  # noqa: F401
