"""Wall time of ``quantize_model(..., distributed=True)`` against the number of processes.

    python -m benchmarks.distributed_cpu [--model minilm-l6] [--method quip#] [--bits 2]
        [--nproc 1,2] [--nsamples 32] [--seqlen 128] [--blocks 6] [--quant-backend fast]
    python -m benchmarks.distributed_cpu --backend nccl --model smollm2-135m --nproc 1,2,4,8 ...

For each process count k the driver runs ``torchrun --standalone --nproc-per-node k``
on this module with ``--worker``; each rank loads the model (NCCL: on ``cuda:LOCAL_RANK``),
warms up the JIT (one small ``quantize_linear`` of the same method, so Numba compile
time is not counted), meets the others at a barrier, and times ``quantize_model`` on the
first ``--blocks`` blocks. The baseline, measured in the same run, is one plain process
(``distributed=False``, every core to it). Threads: each of k ranks gets cores // k
torch, BLAS and Numba threads (CPU), so 1 and 2 processes use the same 2 cores; a
one-process, one-thread run is the control that separates "two processes" from "one
thread each" (a multi-threaded BLAS or Numba on a loaded machine can lose more than it gains).

Reported per row: the wall time of ``quantize_model`` (rank 0, after the barrier), the
time each rank spent inside ``quantize_linear`` (max and sum over ranks: the layer
parallel part), the rest (capture forward passes, block outputs, all-reduce, gathers),
and the speed-up against the single process. The machine load average before and after
is recorded: the 2-core development VM is shared with other jobs.

Results: ``benchmarks/results/<device>/distributed_cpu.{json,md}`` (gloo) or
``distributed_<backend>.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="minilm-l6", help="minilm-l6 | smollm2-135m (quipref.pipeline.load_model)")
    p.add_argument("--method", default="quip#")
    p.add_argument("--bits", type=int, default=2)
    p.add_argument("--quant-backend", default="fast", help="fast | quipref (quantize_linear backend)")
    p.add_argument("--backend", default="gloo", choices=["gloo", "nccl"], help="torch.distributed backend")
    p.add_argument("--nproc", default="1,2", help="comma-separated process counts")
    p.add_argument("--nsamples", type=int, default=32)
    p.add_argument("--seqlen", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--blocks", type=int, default=6, help="quantize the first N blocks")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


class _Timed:
    """Backend wrapper: the seconds spent in quantize_linear on this rank."""

    def __init__(self, be):
        self._be, self.seconds, self.layers = be, 0.0, 0
        self.__name__ = be.__name__
        self.methods, self.formats = be.methods, be.formats

    def quantize_linear(self, *a, **k):
        t0 = time.perf_counter()
        try:
            return self._be.quantize_linear(*a, **k)
        finally:
            self.seconds += time.perf_counter() - t0
            self.layers += 1


def worker(args):
    import importlib

    import numpy as np
    import torch
    import torch.distributed as dist

    from quipref.pipeline import calibration_tokens, load_model, quantize_model
    from quipref.pipeline import distributed as qd
    from quipref.pipeline.capture import find_blocks

    single = args.single
    if not single:
        qd.init(args.backend, timeout=1800)
    rank = 0 if single else dist.get_rank()
    world = 1 if single else dist.get_world_size()
    if args.backend == "gloo":
        threads = args.threads or max(1, (os.cpu_count() or 1) // world)
        torch.set_num_threads(threads)
        try:
            import numba

            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        except ImportError:
            pass
    model, tok = load_model(args.model, fresh=True)
    if args.backend == "nccl":
        model.to(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    prefix, blocks = find_blocks(model)
    modules = "re:" + re.escape(prefix) + r"\.(" + "|".join(str(i) for i in range(args.blocks)) + r")\..*"
    calib = calibration_tokens(tok, nsamples=args.nsamples, seqlen=args.seqlen)
    be = _Timed(importlib.import_module(args.quant_backend))
    # JIT warm-up: one small layer of the same method (not timed)
    rng = np.random.default_rng(0)
    W, X = rng.standard_normal((256, 256)), rng.standard_normal((1024, 256))
    H = X.T @ X / 1024
    if args.backend == "nccl":
        import cupy as cp

        W, H = cp.asarray(W), cp.asarray(H)
    be._be.quantize_linear(W, H, args.method, args.bits, seed=0)
    if not single:
        dist.barrier()
    t0 = time.perf_counter()
    quantize_model(model, args.method, args.bits, calib, backend=be, modules=modules, progress=False,
                   batch_size=args.batch_size, distributed=not single)
    wall = time.perf_counter() - t0
    mine = {"rank": rank, "wall_s": wall, "quantize_linear_s": be.seconds, "layers": be.layers}
    if single:
        gathered = [mine]
    else:
        gathered = [None] * world
        dist.all_gather_object(gathered, mine)
    if rank == 0:
        with open(args.out, "w") as f:
            json.dump(gathered, f)
    if not single:
        dist.destroy_process_group()


def main(argv=None):
    args = _args(argv)
    if args.worker:
        return worker(args)
    from benchmarks.harness import write_results

    counts = [int(x) for x in args.nproc.split(",")]
    raw = list(argv if argv is not None else sys.argv[1:])
    from quipref.pipeline.distributed import without_nproc

    passthrough = without_nproc(raw)  # the children run one process count each
    cores = os.cpu_count() or 1
    # baseline: one plain process with every core; control: one plain process with one
    # thread (the threads each rank of `cores` processes gets)
    runs = [(f"single process, {cores} threads", 1, True, cores)]
    if args.backend == "gloo" and cores > 1:
        runs.append(("single process, 1 thread", 1, True, 1))
    runs += [(f"torchrun {k}, {max(1, cores // k)} threads each", k, False, max(1, cores // k)) for k in counts]
    rows = []
    load_before = os.getloadavg()
    for label, k, single, threads in runs:
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "r.json")
            env = dict(os.environ)
            if args.backend == "gloo":
                env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
            worker_args = [*passthrough, "--worker", "--out", out, "--threads", str(threads)]
            if single:
                cmd = [sys.executable, "-m", "benchmarks.distributed_cpu", *worker_args, "--single"]
            else:
                cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={k}",
                       "-m", "benchmarks.distributed_cpu", *worker_args]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env=env)
            total = time.perf_counter() - t0
            with open(out) as f:
                ranks = json.load(f)
        q = [r["quantize_linear_s"] for r in ranks]
        rows.append({"run": label, "processes": k, "threads_per_process": threads, "wall_s": ranks[0]["wall_s"],
                     "quantize_linear_max_s": max(q), "quantize_linear_sum_s": sum(q),
                     "other_s": ranks[0]["wall_s"] - max(q), "layers_per_rank": [r["layers"] for r in ranks],
                     "launch_total_s": total, "load_average_1m_after": os.getloadavg()[0]})
        print(rows[-1], flush=True)
    base = rows[0]["wall_s"]
    for r in rows:
        r["speedup_vs_single"] = base / r["wall_s"]
    load_after = os.getloadavg()
    name = "distributed_cpu" if args.backend == "gloo" else f"distributed_{args.backend}"
    notes = (f"Model {args.model}, first {args.blocks} blocks, {args.method} {args.bits}-bit "
             f"({args.quant_backend} backend), {args.nsamples} x {args.seqlen} calibration tokens, batch size "
             f"{args.batch_size}, torch.distributed backend {args.backend}. Load average (1, 5, 15 min) before "
             f"{tuple(round(x, 2) for x in load_before)}, after {tuple(round(x, 2) for x in load_after)}"
             + (": the 2-core machine was shared with other jobs while this ran, so times are noisy."
                if args.backend == "gloo" else "."))
    path = write_results(name, rows, ["run", "processes", "wall_s", "quantize_linear_max_s",
                                      "quantize_linear_sum_s", "other_s", "layers_per_rank",
                                      "speedup_vs_single"],
                         meta={"args": vars(args), "load_before": load_before, "load_after": load_after},
                         title="quantize_model wall time against processes", notes=notes)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
