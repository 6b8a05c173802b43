"""Bad options raise a clear error naming the argument, the same type and message in both
packages (issue 13, "Errors on every option"). Each case failed before: a ZeroDivisionError,
a silently wrong layer, a late or unclear error, or a MemoryError."""
import numpy as np
import pytest

import fast
import quipref
from quipref.datasets import synthetic_layer

W, H = synthetic_layer(32, 64, n_tokens=256, seed=0)


def _raised(fn):
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - comparing what both packages raise
        return type(exc), str(exc)
    return None


def _quant(method, bits, H=H, **kw):
    return lambda q: q.quantize_linear(W, H, method, bits, seed=0, **kw)


CASES = [  # (id, call(pkg), exception, text the message must contain)
    ("quip zero H", _quant("quip", 2, H=np.zeros((64, 64))), ValueError, "H is all zeros"),
    ("quip rho=0", _quant("quip", 2, rho=0), ValueError, "rho must be finite and > 0"),
    ("quip rho<0", _quant("quip", 2, rho=-1.0), ValueError, "rho must be finite and > 0"),
    ("quip rho=nan", _quant("quip", 2, rho=float("nan")), ValueError, "rho must be finite and > 0"),
    ("quip rho str", _quant("quip", 2, rho="2.4"), TypeError, "rho must be a real number"),
    ("quip greedy 1.5", _quant("quip", 2, greedy_passes=1.5), TypeError, "greedy_passes must be an integer"),
    ("quip greedy -1", _quant("quip", 2, greedy_passes=-1), ValueError, "greedy_passes must be >= 0"),
    ("quip rescale str", _quant("quip", 2, rescale="yes"), TypeError, "rescale must be True or False"),
    ("quip rounding", _quant("quip", 2, rounding="up"), ValueError, "rounding must be one of"),
    ("quip transform list", _quant("quip", 2, transform=["hadamard"]), TypeError, "transform must be a string"),
    ("qtip tail_biting str", _quant("qtip", 2, L=6, tail_biting="no"), TypeError, "tail_biting must be True or False"),
    ("qtip scale_override str", _quant("qtip", 2, L=6, scale_override="1"), TypeError, "scale_override must be a real"),
    ("gptq percdamp str", _quant("gptq", 2, percdamp="0.01"), TypeError, "percdamp must be a real number"),
    ("gptq percdamp<0", _quant("gptq", 2, percdamp=-0.1), ValueError, "percdamp must be finite and >= 0"),
    ("quip percdamp str", _quant("quip", 2, percdamp="0.01"), TypeError, "percdamp must be a real number"),
    ("quip# sigma_reg str", _quant("quip#", 2, sigma_reg="0.01"), TypeError, "sigma_reg must be a real number"),
    ("quip# refine 1.5", _quant("quip#", 2, refine_passes=1.5), TypeError, "refine_passes must be an integer"),
    ("quip# resid_scale 0", _quant("quip#", 4, resid_scale=0.0), ValueError, "resid_scale must be finite and > 0"),
    ("method list", lambda q: q.quantize_linear(W, H, ["quip"], 2), TypeError, "method must be a string"),
    ("damp_hessian percdamp str", lambda q: q.damp_hessian(H, "0.01"), TypeError, "percdamp must be a real number"),
    ("regularize sigma str", lambda q: q.regularize_hessian(H, "0.01"), TypeError, "sigma must be a real number"),
    ("layer shape negative", lambda q: q.QuantizedLinear(np.zeros((32, 64), np.uint8), q.quantizers.ScalarGrid(2, 1.0, 0.0),
                                                         (-1, 64), "rtn", 2), ValueError, "shape must be a positive integer (>= 1)"),
    ("layer shape float", lambda q: q.QuantizedLinear(np.zeros((32, 64), np.uint8), q.quantizers.ScalarGrid(2, 1.0, 0.0),
                                                      (32.0, 64), "rtn", 2), TypeError, "shape must be a positive integer"),
    ("layer shape 3-D", lambda q: q.QuantizedLinear(np.zeros((32, 64), np.uint8), q.quantizers.ScalarGrid(2, 1.0, 0.0),
                                                    (1, 32, 64), "rtn", 2), TypeError, "shape must be a pair"),
    ("layer bits 0", lambda q: q.QuantizedLinear(np.zeros((32, 64), np.uint8), q.quantizers.ScalarGrid(2, 1.0, 0.0),
                                                 (32, 64), "rtn", 0), ValueError, "bits must be between 1 and 32"),
    ("scalar decode out of grid", lambda q: q.quantizers.ScalarGrid(2, 1.0, 0.0).decode(np.array([0, 4])),
     ValueError, "codes must lie in [0, 2^bits) = [0, 4)"),
    ("scalar decode negative", lambda q: q.quantizers.ScalarGrid(2, 1.0, 0.0).decode(np.array([-1])),
     ValueError, "codes must lie in"),
    ("scalar decode float", lambda q: q.quantizers.ScalarGrid(2, 1.0, 0.0).decode(np.array([0.5])),
     TypeError, "codes must be an integer array"),
    ("kronecker huge", lambda q: q.KroneckerOrthogonal(2**40 + 1), ValueError, "n=1099511627777 gives Kronecker factors"),
    ("trellis tail_biting", lambda q: q.quantizers.Trellis(8, tail_biting="no"), TypeError, "tail_biting must be True or False"),
    ("trellis L float", lambda q: q.quantizers.Trellis(8.0), TypeError, "L must be an integer"),
    ("scalar rounding", lambda q: q.quantizers.ScalarGrid(2, 1.0, 0.0, rounding=None), TypeError, "rounding must be a string"),
    ("bounds rounding", lambda q: q.bounds.ldlq_average(4, np.ones(3), "up"), ValueError, "rounding must be one of"),
]


@pytest.mark.parametrize("case,call,exc,text", CASES, ids=[c[0] for c in CASES])
def test_same_clear_error_in_both_packages(case, call, exc, text):
    a, b = _raised(lambda: call(quipref)), _raised(lambda: call(fast))
    assert a is not None, f"{case}: quipref raised nothing"
    assert a == b, f"{case}: quipref raised {a}, fast raised {b}"
    assert a[0] is exc and text in a[1], a
