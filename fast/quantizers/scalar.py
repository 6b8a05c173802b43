"""Same API as :mod:`quipref.quantizers.scalar` (vectorised already; LDLQ fuses these
grids into its kernels rather than calling them per element)."""
from quipref.quantizers.scalar import *  # noqa: F401,F403
from quipref.quantizers.scalar import __all__  # noqa: F401
