"""Every CUDA source in fast/kernels compiles with NVRTC -- no GPU needed (runs on CI).

NVRTC only instantiates what a build names, so besides the plain build of every source
this compiles each build unit that :mod:`fast.cuda.hadamard` can load at run time
(``builds()``: the same ``-D`` options) and checks that every kernel name the wrapper
may launch is an entry point of the resulting PTX.
"""
from __future__ import annotations

import pytest

from fast.cuda._compile import KERNEL_DIR, kernel_sources, nvrtc_compile


def _require_nvrtc():
    try:
        from cupy.cuda import nvrtc

        nvrtc.getVersion()
    except Exception as exc:  # CuPy missing, or libnvrtc cannot be loaded
        pytest.skip(f"NVRTC is not available: {exc}")


@pytest.mark.parametrize("path", kernel_sources(), ids=lambda p: p.name)
def test_kernel_source_compiles(path):
    _require_nvrtc()
    ptx = nvrtc_compile(path)
    assert b".entry" in ptx, f"{path.name} compiled to PTX without any kernel"


def _rht_units():
    from fast.cuda.hadamard import builds

    return [pytest.param(opts, names, id=" ".join(opts)) for opts, names in builds()]


@pytest.mark.parametrize("options,names", _rht_units())
def test_rht_build_unit_compiles(options, names):
    _require_nvrtc()
    ptx = nvrtc_compile(KERNEL_DIR / "rht.cu", options=options).decode()
    missing = [name for name in names if f".entry {name}(" not in ptx]
    assert not missing, f"build {options} lacks kernels {missing}"


def test_every_planned_kernel_is_built():
    """The planner only ever names kernels that some build unit contains."""
    import numpy as np

    from fast.cuda.hadamard import _FUSED_LOGP, builds, plan
    from quipref.hadamard import BASE_SIZES

    built = {name for _, names in builds() for name in names}
    sizes = {K * 2**k for K in (1,) + BASE_SIZES for k in range(0, 17)}
    for dtype in (np.float16, np.float32, np.float64):
        for n in sorted(sizes):
            for name in plan(dtype, n):
                assert name in built, f"plan({np.dtype(dtype).name}, {n}) uses {name}, not built"
    assert len(_FUSED_LOGP) == 8


def test_e8p_kernels_are_built():
    """Every entry point fast.cuda.e8p launches is in the build of e8p.cu."""
    _require_nvrtc()
    from fast.cuda.e8p import KERNELS

    ptx = nvrtc_compile(KERNEL_DIR / "e8p.cu").decode()
    missing = [k for k in KERNELS if f".entry {k}(" not in ptx]
    assert not missing, f"e8p.cu lacks kernels {missing}"


def _viterbi_units():
    from fast.cuda.viterbi import builds

    return [pytest.param(opts, names, id=" ".join(o.split("=")[1] for o in opts))
            for opts, names in builds()]


@pytest.mark.parametrize("options,names", _viterbi_units())
def test_viterbi_build_unit_compiles(options, names):
    """Every unit of fast.cuda.viterbi.builds() (the QTIP L = 16 configurations, each
    kernel path at small L): the -D options pass the kernel's static_asserts and both
    entry points exist."""
    _require_nvrtc()
    ptx = nvrtc_compile(KERNEL_DIR / "viterbi.cu", options=options).decode()
    missing = [name for name in names if f".entry {name}(" not in ptx]
    assert not missing, f"build {options} lacks kernels {missing}"


def test_viterbi_plans_are_buildable():
    """plan() yields a valid unit (the kernel's static_asserts, mirrored in Python) for
    every supported (L, kV, V) and code: within the shared-memory limit, and its threads x
    units x groups per unit cover the G groups exactly."""
    from fast.cuda.viterbi import SMEM_LIMIT, plan

    for L in range(1, 17):
        for kV in range(1, min(8, L) + 1):
            for V in (1, 2):
                for code in ("table", "hyb") + (("1mad", "3inst") if V == 1 else ()):
                    b = plan(L, kV, V, code)
                    assert b.smem_bytes <= SMEM_LIMIT
                    assert b.nt * b.upt * b.jper == b.G


def _trellis_units():
    from fast.cuda.trellis_decode import builds

    return [pytest.param(opts, names, id="trellis " + " ".join(opts)) for opts, names in builds()]


@pytest.mark.parametrize("options,names", _trellis_units())
def test_trellis_build_unit_compiles(options, names):
    """Every build unit of fast.cuda.trellis_decode (one per code, plus decode only)
    compiles and contains exactly the kernels the wrapper launches."""
    _require_nvrtc()
    ptx = nvrtc_compile(KERNEL_DIR / "trellis_decode.cu", options=options).decode()
    missing = [name for name in names if f".entry {name}(" not in ptx]
    assert not missing, f"build {options} lacks kernels {missing}"


def test_trellis_planned_kernels_are_built():
    """MatvecPlan / decode only name kernels that a build unit contains."""
    from fast.cuda import trellis_decode as td

    built = {(opts, name) for opts, names in td.builds() for name in names}
    for code, cid in td._CODE_ID.items():
        for k in (2, 3, 4):
            for z in ("h", "f"):
                assert ((f"-DTD_MV={cid}",), f"trellis_mv_{code}_k{k}_{z}") in built
    assert (td.DECODE_UNIT, "trellis_decode") in built


def test_viterbi_measured_build_is_the_default():
    """HYB L=16 k=2 V=2 gets the build measured fastest on the H100 (the options string
    the benchmark logged for 'P': 4, 'nt': 1024); explicit overrides still win, and the
    configurations that were not measured keep the generic rule."""
    from fast.cuda.viterbi import plan

    logged = "L=16 KV=4 V=2 CODE=3 Q=9 P=4 JPER=4 NT=1024 GBEST=0 EUNROLL=1 UUNROLL=1 MINB=1"
    got = " ".join(o[len("-DVT_"):] for o in plan(16, 4, 2, "hyb").options())
    assert got == logged
    assert plan(16, 4, 2, "hyb", P=2).P == 2
    assert plan(16, 2, 1, "1mad").P == 1 and plan(16, 2, 1, "1mad").nt == 1024


# ---------------------------------------------------------------------------------------
# One shared header, one source of truth for the trellis codes
# ---------------------------------------------------------------------------------------

#: helpers that live in fast/kernels/common.cuh only
SHARED_HELPERS = ("prmt", "hadd2", "hsub2", "h2f", "f2h", "f2bf", "pack_f16x2", "mma16816",
                  "mma16816_bf16", "smem_addr", "dyn_smem_size", "cp_async16", "cp_async_commit",
                  "cp_async_wait", "cp_async_wait_all")


def test_shared_helpers_are_defined_once():
    """Every kernel that calls a helper of common.cuh includes it, and none defines one
    again."""
    import re

    for path in kernel_sources():
        text = path.read_text()
        if any(re.search(rf"\b{h}\b", text) for h in SHARED_HELPERS):
            assert '#include "common.cuh"' in text, f"{path.name} does not include common.cuh"
        for h in SHARED_HELPERS:
            assert not re.search(rf"__device__ __forceinline__ [\w:<>]+ {h}\(", text), \
                f"{path.name} defines {h} again (it is in common.cuh)"
    common = (KERNEL_DIR / "common.cuh").read_text()
    for h in SHARED_HELPERS:
        assert re.search(rf"__device__ __forceinline__ [\w:<>]+ {h}\(", common), h


def test_trellis_codes_header_matches_python():
    """fast/kernels/trellis_codes.cuh is exactly what fast.cuda._codes renders from the
    Python definitions (regenerate with python -m fast.cuda._codes)."""
    from fast.cuda._codes import HEADER, header_text

    assert HEADER.read_text() == header_text()


def test_code_constants_are_not_typed_in_kernels():
    """The 1MAD / 3INST constants and the code ids come from trellis_codes.cuh only."""
    import re

    from quipref.quantizers import _trellis_codes as tc

    literals = [str(tc.MAD1_A), str(tc.MAD1_B), str(tc.INST3_A), str(tc.INST3_B),
                f"{tc.INST3_MASK:08x}", f"{tc.INST3_XOR:08x}", "147.80053"]
    for path in kernel_sources():
        text = path.read_text().lower()
        for lit in literals:
            assert lit not in text, f"{path.name} types the code constant {lit}"
        assert not re.search(r"code\s*==\s*\d", text), f"{path.name} compares a code id to a literal"


def test_code_ids_agree_between_wrappers():
    from fast.cuda import trellis_decode, viterbi
    from fast.cuda._codes import CODE_IDS

    for code, cid in trellis_decode._CODE_ID.items():
        assert CODE_IDS[code] == cid == viterbi._CODE_IDS[code]


def test_kernel_source_inlines_headers_with_line_directives(tmp_path):
    from fast.cuda._compile import kernel_source

    (tmp_path / "a.cuh").write_text("int a;\n")
    (tmp_path / "k.cu").write_text('// x\n#include "a.cuh"\nint k;\n')
    assert kernel_source(tmp_path / "k.cu") == '// x\n#line 1 "a.cuh"\nint a;\n\n#line 3 "k.cu"\nint k;\n'
    (tmp_path / "bad.cu").write_text('#include "missing.cuh"\n')
    with pytest.raises(FileNotFoundError, match="missing.cuh"):
        kernel_source(tmp_path / "bad.cu")


# ---------------------------------------------------------------------------------------
# precompile_units from any caller
# ---------------------------------------------------------------------------------------

def test_precompile_from_standard_input():
    """A script on standard input (python -, the case that broke the multiprocessing
    pool: its __main__ cannot be re-imported) precompiles two units in worker processes
    without falling back (warnings are errors)."""
    import subprocess
    import sys
    from pathlib import Path

    _require_nvrtc()
    script = ("import warnings\nwarnings.simplefilter('error')\n"
              "from fast.cuda._compile import precompile_units\n"
              "print(precompile_units('trellis_decode', [('-DTD_MV=-1',), ('-DTD_MV=1',)], ptx_only=True))\n")
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True,
                       cwd=root, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "['-DTD_MV=-1', '-DTD_MV=1']" in r.stdout


def test_precompile_falls_back_to_this_process(monkeypatch):
    """When a worker cannot run, the unit is compiled in this process, with a warning
    that names the unit; a unit that does not compile still raises."""
    import sys

    from fast.cuda import _compile

    _require_nvrtc()
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    with pytest.warns(RuntimeWarning, match=r"-DTD_MV=-1.*compiling it in this process"):
        assert _compile.precompile_units("trellis_decode", [("-DTD_MV=-1",)], ptx_only=True) == ["-DTD_MV=-1"]
    with pytest.warns(RuntimeWarning), pytest.raises(RuntimeError, match="NVRTC failed"):
        _compile.precompile_units("trellis_decode", [("-Du32=(",)], ptx_only=True)
