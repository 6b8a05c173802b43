"""Static counts behind benchmarks/NOTES_matvec.md (no GPU needed).

    python -m benchmarks.sass_counts            # SASS of the decode-matvec loops
    python -m benchmarks.sass_counts --whole-groups   # the whole-super-group path only
    python -m benchmarks.sass_counts --fit      # fixed cost + rate fit of the 2026-12-01 H200 results

* SASS: compiles fast/kernels/e8p.cu (the shipped build) with
  ``nvcc -arch=sm_90 -cubin`` (nvcc on PATH; cuobjdump on PATH or from the
  ``nvidia-cuda-cuobjdump`` wheel), finds the innermost backward branch of the kernel that
  contains HMMA instructions (the super-group loop) and prints its length, the number of
  HMMAs (one per 8-weight code in the E8P kernels) and the opcode histogram.
  ``--kernel`` / ``--defines`` / ``--source`` count any other kernel.
* --fit: least-squares line time = fixed + bytes / rate through the batch-1 core times of
  benchmarks/history/h200-2026-12-01/quipsharp_gpu.json (E8P) and qtip_matvec_gpu_quick.json (HYB k=2).
"""
from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _cuobjdump() -> str:
    exe = shutil.which("cuobjdump")
    if exe:
        return exe
    try:
        import nvidia.cu13 as cu  # the nvidia-cuda-cuobjdump wheel

        cand = Path(list(cu.__path__)[0]) / "bin" / "cuobjdump"
        if cand.is_file():
            return str(cand)
    except ImportError:
        pass
    raise SystemExit("cuobjdump not found: pip install nvidia-cuda-cuobjdump, or put it on PATH")


#: --whole-groups: the E8P loop holds both z-load paths (whole super groups, and the
#: predicated one for a partial last group); this substitution keeps only the first, so the
#: count is the instructions a whole super group executes (counting only, never built)
WHOLE_GROUP_SUBST = ("if (16 * S + 16 <= ncodes) {", "if (true) {")


def loop_counts(source: Path, kernel: str, defines=(), whole_groups=False) -> dict:
    """Length, HMMA count and opcode histogram of the innermost HMMA loop of ``kernel``."""
    with tempfile.TemporaryDirectory() as d:
        if whole_groups:
            text = source.read_text()
            if WHOLE_GROUP_SUBST[0] not in text:
                raise SystemExit(f"--whole-groups: {WHOLE_GROUP_SUBST[0]!r} not in {source}")
            source = Path(d) / source.name
            source.write_text(text.replace(*WHOLE_GROUP_SUBST))
        cubin = Path(d) / "k.cubin"
        subprocess.run(["nvcc", "-arch=sm_90", "-cubin", "--std=c++17", "-I", str(ROOT / "fast" / "kernels"),
                        *defines, "-o", str(cubin), str(source)],
                       check=True, capture_output=True, text=True)
        sass = subprocess.run([_cuobjdump(), "-sass", "-fun", kernel, str(cubin)], check=True,
                              capture_output=True, text=True).stdout
    lines = [ln for ln in sass.splitlines() if re.match(r"\s+/\*[0-9a-f]{4,}\*/", ln)]
    addr = [int(re.search(r"/\*([0-9a-f]{4,})\*/", ln).group(1), 16) for ln in lines]
    best = None
    for i, ln in enumerate(lines):
        m = re.search(r"BRA (0x[0-9a-f]+)", ln)
        if not m or int(m.group(1), 16) >= addr[i]:
            continue
        lo = int(m.group(1), 16)
        body = [x for x, a in zip(lines, addr) if lo <= a <= addr[i]]
        h = sum("HMMA" in x for x in body)
        if h and (best is None or len(body) < len(best)):
            best = body
    if best is None:
        raise SystemExit(f"{kernel}: no loop with HMMA instructions")
    ops = collections.Counter(re.search(r"\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9]*)", x).group(1) for x in best)
    return {"instructions": len(best), "hmma": ops["HMMA"], "per_hmma": len(best) / ops["HMMA"],
            "opcodes": dict(ops.most_common())}


def fit():
    res = ROOT / "benchmarks" / "history" / "h200-2026-12-01"  # v3 E8P, register-buffer HYB
    e8 = json.loads((res / "quipsharp_gpu.json").read_text())["rows"]
    pts = {"E8P v3": [(int(r["shape"].split("x")[0]) * int(r["shape"].split("x")[1]) / 4e6, r["core_us"])
                      for r in e8 if r["batch"] == 1]}
    q = json.loads((res / "qtip_matvec_gpu_quick.json").read_text())["rows"]
    pts["HYB k=2"] = [(r["m"] * r["n"] * 2 / 8e6, r["graph_us"]) for r in q
                      if r.get("code") == "hyb" and r.get("k") == 2 and r.get("b") == 1
                      and r.get("variant") == "default"]  # the default of 2026-12-01
    for name, p in pts.items():
        mb, us = np.array(p).T
        slope, fixed = np.polyfit(mb, us, 1)
        print(f"{name}: time ~ {fixed:.1f} us + {slope:.3f} us/MB ({1 / slope:.2f} TB/s) over "
              + ", ".join(f"{a:.1f} MB: {b:.1f} us" for a, b in zip(mb, us)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fit", action="store_true")
    ap.add_argument("--source", default=str(ROOT / "fast" / "kernels" / "e8p.cu"))
    ap.add_argument("--kernel", default="e8p_matvec_e8p_h_rg2")
    ap.add_argument("--defines", nargs="*", default=(), help="extra -D options")
    ap.add_argument("--whole-groups", action="store_true",
                    help="count only the whole-super-group path of the loop (WHOLE_GROUP_SUBST)")
    args = ap.parse_args(argv)
    if args.fit:
        fit()
        return
    for name, defs in {"shipped": tuple(args.defines)}.items():
        c = loop_counts(Path(args.source), args.kernel, defs, args.whole_groups)
        top = ", ".join(f"{k} {v}" for k, v in list(c["opcodes"].items())[:8])
        print(f"{args.kernel} [{name}]: loop {c['instructions']} instructions, {c['hmma']} HMMA, "
              f"{c['per_hmma']:.1f} per HMMA ({top})")


if __name__ == "__main__":
    main()
