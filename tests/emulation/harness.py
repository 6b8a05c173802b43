"""Shared helpers of the CPU-emulation tests (tests/test_*_host_emulation.py): build a
driver of tests/emulation against a kernel source, and reuse the references and bounds of
the matching GPU test module (tests/gpu/) without duplicating them."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
GXX = shutil.which("g++")


def gpu_test_module(filename: str):
    """Import tests/gpu/<filename> as a module (its references, tolerances and helpers;
    its tests stay skipped without a GPU)."""
    name = "_emu_" + Path(filename).stem
    spec = importlib.util.spec_from_file_location(name, TESTS / "gpu" / filename)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def compile_driver(driver: str, defines, exe: Path) -> Path:
    """g++ -std=c++20 -O2 -pthread -DQR_HOST_EMULATION <defines> tests/emulation/<driver>
    -o exe (QR_HOST_EMULATION: the kernels and fast/kernels/common.cuh leave the PTX
    helpers to the driver); asserts it builds (the compiler's error tail in the message)."""
    cmd = [GXX, "-std=c++20", "-O2", "-pthread", "-DQR_HOST_EMULATION", *defines, str(HERE / driver),
           "-o", str(exe)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-4000:]
    return exe


def run(args, timeout=900):
    """Run a built driver; asserts exit status 0 (stderr tail in the message)."""
    res = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stderr[-4000:]
    return res
