"""Same API as :mod:`quipref.quantizers`. The scalar quantizers are vectorised NumPy
and accept CuPy arrays (``array_module``); LDLQ fuses them into its kernels
(:mod:`fast.ldlq`) rather than calling them element by element."""
from quipref.quantizers import *  # noqa: F401,F403
from quipref.quantizers import __all__  # noqa: F401
