"""Same API as :mod:`quipref.bounds` (closed-form theorem bounds: nothing to speed up)."""
from quipref.bounds import *  # noqa: F401,F403
from quipref.bounds import __all__  # noqa: F401
