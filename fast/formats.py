"""Same API as :mod:`quipref.formats`; :func:`load_linear` rebuilds the transforms with
the fast (Numba/CUDA) implementations from :mod:`fast.incoherence`."""
from quipref.formats import *  # noqa: F401,F403
from quipref.formats import __all__, _load  # noqa: F401
from quipref.formats import QuantizedLinear


def load_linear(path) -> QuantizedLinear:
    """Read a layer written by :meth:`QuantizedLinear.save` (fast transforms).

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        Not a quipref layer file, an unknown format version, or a corrupted file.
    """
    from .incoherence import transform_from_state
    from .quantizers import quantizer_from_state

    return _load(path, QuantizedLinear, transform_from_state, quantizer_from_state)
