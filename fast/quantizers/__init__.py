"""Same API as :mod:`quipref.quantizers`.

The scalar quantizers are vectorised NumPy and accept CuPy arrays (``array_module``);
LDLQ fuses them into its kernels (:mod:`fast.ldlq`). E8P, E81B and RVQ have exact
Numba nearest-codeword searches (:mod:`fast.quantizers.e8p`, :mod:`fast.quantizers.rvq`).
ICQuant codes its outlier positions in Numba (:mod:`fast.quantizers.index_coding`).
The fast classes are imported *after* the re-export so they replace the reference ones.
"""
from quipref.quantizers import *  # noqa: F401,F403
from quipref.quantizers import __all__  # noqa: F401
from quipref.quantizers.base import Quantizer
from quipref.quantizers.base import quantizer_from_state as _reference_from_state

from .e8p import E8P, e8p_source_set  # noqa: F401
from .icquant import ICQuant, select_outliers  # noqa: F401
from .rvq import E81B, RVQ, e81b_codebook  # noqa: F401
from .trellis import (CODES, Trellis, ViterbiResult, bitshift_viterbi, code_1mad,  # noqa: F401
                      code_3inst, code_hyb, code_table, gaussian_lut, hyb_lut, pack_states,
                      tail_biting_viterbi, unpack_states)

#: fast classes replacing reference classes of the same name when a state is loaded
_FAST_CLASSES = {cls.__name__: cls for cls in (E8P, E81B, RVQ, Trellis, ICQuant)}


def quantizer_from_state(config: dict, arrays: dict) -> Quantizer:
    """Rebuild a quantizer saved with ``state()``, as the fast class where one exists."""
    cls = _FAST_CLASSES.get(config.get("type"))
    if cls is not None:
        return cls.from_state(config, arrays)
    return _reference_from_state(config, arrays)
