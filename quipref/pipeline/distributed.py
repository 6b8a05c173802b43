r"""Data-parallel Hessian capture and layer-parallel quantization on ``torch.distributed``.

``quantize_model(..., distributed=True)`` and ``capture_hessians(..., distributed=True)``
run the single-process algorithm on every rank of the initialized default process group
(NCCL on GPUs, gloo on CPUs; started with ``torchrun``), sharing the work two ways:

* **Hessian capture is data parallel.** The calibration batches are split into
  contiguous shares, one per rank (:meth:`Context.share`); each rank runs only its share
  through the current block and accumulates the float64 *sums* :math:`\sum_t x_t x_t^T`
  and token counts, streamed exactly as in :mod:`quipref.pipeline.capture`. One
  all-reduce (sum) per distinct layer input then gives every rank the sum over all
  tokens, and the mean is taken once, as in one process: the result is the
  single-process :math:`H = \frac{1}{N}\sum_t x_t x_t^T` up to float64 round-off (only
  the order of the per-batch additions differs; each batch's :math:`X^T X` is computed
  by the same code on the same activations).
* **Quantization is layer parallel.** The selected linears of a block are assigned to
  ranks by a deterministic greedy balance of their cost (:func:`assign_layers`); each
  rank quantizes its layers with the per-module seeds of the single-process run
  (:func:`~quipref.pipeline.quantize.module_seed`), and the layers travel as their
  :meth:`~quipref.QuantizedLinear.to_tensors` arrays and config
  (``all_gather_object``), so every rank installs the same layers, rebuilt with the
  backend's ``formats.from_tensors``, before the block's outputs are computed. The
  codes are those of the single-process run.
* **The next block's inputs** are computed by each rank for its own share of the
  sequences only: they are needed only for its share of the next Hessians.

Errors. Every rank checks first that all ranks quantize the same model with the same
options (:meth:`Context.agree`: a fingerprint of the model config, the parameters'
names, shapes and first values, the selected modules, the calibration tokens and the
method, bits, seed, backend and options). Every collective step starts with an
``all_gather_object`` of each rank's status: a rank whose local work raised reports
its error there instead of entering the next collective, so every rank raises (the
failing rank its own exception; the others the same built-in type, a subclass of
:class:`DistributedError`, naming the failing rank and its message) instead of waiting.
A rank that dies without reporting (killed, out of memory) is caught by the process
group's timeout (``init_process_group(timeout=...)``; :func:`init` sets one).

References
----------
.. [QuIP#] Tseng et al., arXiv 2402.04396, Sec. 5 (Hessians from calibration data).
.. [QTIP] Tseng, Sun, Hou, De Sa, arXiv 2406.11235, Sec. 4.
.. [torchrun] https://pytorch.org/docs/stable/elastic/run.html
.. [c10d] https://pytorch.org/docs/stable/distributed.html (all_reduce, all_gather_object,
   init_process_group ``timeout``).
"""
from __future__ import annotations

import builtins
import contextlib
import datetime
import hashlib
import json
import os
import sys
import traceback
import warnings

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["Context", "DistributedError", "RankMismatchError", "assign_layers", "init", "is_main",
           "launch", "launch_command", "run", "setup", "under_torchrun"]

#: Default timeout of :func:`init`'s process group: the longest a rank waits in one
#: collective (e.g. for the slowest rank to finish quantizing its layers of a block).
DEFAULT_TIMEOUT_S = 1800.0


class DistributedError(RuntimeError):
    """Another rank failed, or a collective failed (a rank died or timed out).

    Raised on every rank but the failing one, which raises its own exception. When the
    failing rank's exception was a built-in type (ValueError, TypeError, ...), the
    exception raised here is also an instance of that type.
    """


class RankMismatchError(ValueError, DistributedError):
    """The ranks disagree on the model, the calibration or the options (raised on every rank)."""


_REMOTE = {}


def _remote_type(name: str):
    """``DistributedError`` that is also the built-in exception class ``name`` (if one)."""
    base = getattr(builtins, name, None)
    if not (isinstance(base, type) and issubclass(base, Exception)) or issubclass(base, DistributedError):
        return DistributedError
    if name not in _REMOTE:
        cls_name = "Remote" + name  # a module attribute, so that it pickles
        try:
            cls = type(cls_name, (base, DistributedError), {"__module__": __name__, "__qualname__": cls_name})
        except TypeError:  # an incompatible layout
            cls = DistributedError
        _REMOTE[name] = cls
        if cls is not DistributedError:
            globals()[cls_name] = cls
    return _REMOTE[name]


for _name in ("ValueError", "TypeError", "KeyError", "IndexError", "OSError", "FileNotFoundError",
              "MemoryError", "NotImplementedError", "ImportError", "AssertionError", "ArithmeticError",
              "ZeroDivisionError", "AttributeError", "LookupError"):
    _remote_type(_name)  # defined at import, so that they unpickle in another process


def under_torchrun() -> bool:
    """True in a process started by ``torchrun`` (its environment names a rank and a world)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def init(backend: str | None = None, *, timeout: float = DEFAULT_TIMEOUT_S) -> "Context":
    """Initialize the default process group from ``torchrun``'s environment, with a timeout.

    Parameters
    ----------
    backend : {"nccl", "gloo"}, optional
        Default: ``"nccl"`` when CUDA is available, else ``"gloo"``. With NCCL the
        process's GPU is set to ``cuda:LOCAL_RANK``.
    timeout : float, default 1800
        Seconds any rank waits in one collective before raising: what bounds the wait
        when a rank dies without reporting.

    Returns
    -------
    Context

    Raises
    ------
    RuntimeError
        Not started by ``torchrun`` (no RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT).
    ValueError
        A bad ``backend`` or ``timeout``.
    """
    if not dist.is_initialized():
        if not under_torchrun():
            raise RuntimeError("quipref.pipeline.distributed.init() needs torchrun's environment (RANK, "
                               "WORLD_SIZE, MASTER_ADDR, MASTER_PORT); start with `torchrun --nproc-per-node "
                               "N script.py` or `quipref quantize --nproc N ...`")
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend not in ("nccl", "gloo"):
            raise ValueError(f"backend must be 'nccl' (GPUs) or 'gloo' (CPUs), got {backend!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=float(timeout)))
    return Context()


def is_main() -> bool:
    """True on rank 0, or when no process group is initialized (one process)."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def assign_layers(shapes: dict, world: int) -> dict:
    r"""Deterministic balanced assignment of layers to ranks.

    Cost of an (m, n) layer: :math:`m n^2 + n^3/3`, the LDLQ recursion and the Cholesky
    factor of the methods that dominate the time (QuIP, QuIP#, QTIP, GPTQ). Layers are
    taken by decreasing cost (ties by name) and each goes to the rank with the least cost
    so far (ties: the lowest rank): the longest-processing-time-first rule, within 4/3
    of the best makespan.

    Parameters
    ----------
    shapes : dict of str to (int, int)
        ``{module name: (out_features m, in_features n)}``.
    world : int
        Number of ranks.

    Returns
    -------
    dict of str to int
        ``{module name: rank}``, the same on every rank.
    """
    load = [0.0] * int(world)
    out = {}
    cost = {k: float(m) * n * n + float(n) ** 3 / 3 for k, (m, n) in shapes.items()}
    for name in sorted(shapes, key=lambda k: (-cost[k], k)):
        r = min(range(len(load)), key=lambda i: (load[i], i))
        out[name] = r
        load[r] += cost[name]
    return out


def _sha(data) -> str:
    h = hashlib.sha256()
    if isinstance(data, (bytes, bytearray)):
        h.update(data)
    else:
        h.update(json.dumps(data, sort_keys=True, default=repr).encode())
    return h.hexdigest()[:16]


class Context:
    """The default process group as seen by one rank, with error-propagating collectives.

    Parameters are taken from ``torch.distributed``: the default group must be
    initialized (``torch.distributed.init_process_group`` or :func:`init`).

    Attributes
    ----------
    rank, world : int
        This rank and the number of ranks.
    local_rank : int
        The rank on this machine (``LOCAL_RANK`` from torchrun): the GPU to use.
    backend : str
        ``"gloo"`` or ``"nccl"``.

    Raises
    ------
    RuntimeError
        No initialized default process group.
    """

    def __init__(self):
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "distributed=True needs an initialized torch.distributed default process group: start "
                "the script with `torchrun --nproc-per-node N ...` (or `quipref quantize --nproc N`) and "
                "call quipref.pipeline.distributed.init() (or torch.distributed.init_process_group("
                "backend, timeout=...)) before quantizing")
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", self.rank))
        self.backend = str(dist.get_backend())
        self.stage = "start"

    # -- collectives with error propagation -------------------------------------------
    def _gather(self, obj) -> list:
        out = [None] * self.world
        try:
            dist.all_gather_object(out, obj)
        except Exception as exc:  # a rank died, or the timeout expired
            raise DistributedError(
                f"rank {self.rank}: the collective after stage {self.stage!r} failed (another rank died "
                f"or did not arrive within the process group's timeout): {exc}") from exc
        return out

    def exchange(self, stage: str, obj=None) -> list:
        """All-gather ``obj`` after ``stage``; raise on every rank if any rank reported an error.

        Returns
        -------
        list
            ``obj`` of every rank, by rank.

        Raises
        ------
        DistributedError
            A rank reported an error (see :meth:`fail`); also an instance of that
            error's built-in type.
        """
        got = self._gather(("ok", obj))
        self.stage = stage
        self._raise_reported(got)
        return [o for _, o in got]

    def _raise_reported(self, got):
        bad = [(r, info) for r, (status, info) in enumerate(got) if status == "error"]
        if bad:
            r, info = bad[0]
            others = f" (ranks {[b for b, _ in bad]} failed)" if len(bad) > 1 else ""
            cls = _remote_type(info["type"])
            raise cls(f"rank {r} of {self.world} failed after stage {info['stage']!r}{others}: "
                      f"{info['type']}: {info['message']}\n--- rank {r} traceback ---\n{info['traceback']}")

    def fail(self, exc: BaseException) -> None:
        """Report this rank's exception to the others (they are in their next :meth:`exchange`)."""
        info = {"type": type(exc).__name__, "message": str(exc), "stage": self.stage,
                "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:]}
        with contextlib.suppress(DistributedError):
            self._gather(("error", info))

    @contextlib.contextmanager
    def guard(self):
        """Run a distributed job: on success every rank meets at a final exchange; on a local
        error this rank reports it (:meth:`fail`) and re-raises it."""
        try:
            yield self
        except DistributedError:
            raise  # already known to every rank (raised from an exchange)
        except BaseException as exc:
            self.fail(exc)
            raise
        self.exchange("done")

    # -- the steps of the pipeline ----------------------------------------------------
    def agree(self, model, names, batches, **options) -> None:
        """Check that every rank has the same model, modules, calibration and options.

        Raises
        ------
        RankMismatchError
            (a ValueError) on every rank, naming each field that differs and its value
            (or fingerprint) on each rank.
        """
        cfg = getattr(model, "config", None)
        cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else None
        params = [(n, list(p.shape), str(p.dtype), p.detach().reshape(-1)[:4].double().cpu().tolist())
                  for n, p in model.named_parameters()]
        calib = hashlib.sha256()
        for ids, mask in batches:
            calib.update(ids.detach().cpu().numpy().tobytes())
            if mask is not None:
                calib.update(mask.detach().cpu().numpy().tobytes())
        fields = {"model class": type(model).__name__, "model config": _sha(cfg),
                  "parameters (names, shapes, first values)": _sha(params),
                  "modules": _sha(list(names)), "calibration": calib.hexdigest()[:16],
                  "calibration batches": len(batches)}
        fields.update({k: repr(v) for k, v in sorted(options.items())})
        got = self.exchange("agree on the model and options", fields)
        diff = [f"{k}: " + ", ".join(f"rank {r} has {g.get(k)!r}" for r, g in enumerate(got))
                for k in fields if any(g.get(k) != fields[k] for g in got)]
        if diff:
            raise RankMismatchError("the ranks disagree on the model or the options (every rank must load "
                                    "the same model and pass the same arguments): " + "; ".join(diff))
        if len(batches) < self.world and self.rank == 0:
            warnings.warn(f"{len(batches)} calibration batches for {self.world} ranks: "
                          f"{self.world - len(batches)} ranks capture nothing; lower batch_size to use them",
                          stacklevel=3)

    def share(self, items: list) -> list:
        """This rank's contiguous share of ``items`` (balanced counts; rank order = item order)."""
        n = len(items)
        return items[self.rank * n // self.world:(self.rank + 1) * n // self.world]

    def reduce_hessians(self, cap) -> dict:
        """Sum the Hessian sums and token counts of a :class:`~quipref.pipeline.capture.HessianCapture`
        over the ranks and return its :meth:`~quipref.pipeline.capture.HessianCapture.result`.

        The shared-input groups seen by each rank are merged (a rank with no batch saw
        none) and must agree; the sums are all-reduced in place (NCCL: through the GPU).
        """
        from ..hessian import HessianAccumulator

        local = ({n: g for n, g in cap._group.items()},
                 {g: (a.n, a.count) for g, a in cap._acc.items()})
        got = self.exchange("capture the Hessians", local)
        group, dims = {}, {}
        for groups, accs in got:
            for n, g in groups.items():
                if group.setdefault(n, g) != g:
                    # same data on every rank: every rank raises here, none reports
                    raise DistributedError(f"{n} shares its input with {group[n]!r} on one rank and with "
                                           f"{g!r} on another: the ranks run different models")
            dims.update(accs)
        order = [n for n in cap.linears if n in group]
        cap._group = {n: group[n] for n in order}
        dev = torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else None
        for g in dict.fromkeys(group[n] for n in order):
            acc = cap._acc.get(g)
            if acc is None:
                acc = cap._acc[g] = HessianAccumulator(dims[g][0])
            t = torch.from_numpy(acc.sum)
            try:
                if dev is None:
                    dist.all_reduce(t)  # in place, float64 sum
                else:
                    tg = t.to(dev)
                    dist.all_reduce(tg)
                    t.copy_(tg.cpu())
                    del tg
            except Exception as exc:
                raise DistributedError(f"rank {self.rank}: all_reduce of the Hessian of {g} failed: "
                                       f"{exc}") from exc
            acc.count = sum(accs[g][1] for _, accs in got if g in accs)
        return cap.result()

    def assign(self, names, linears) -> list:
        """The names (in the given order) that this rank quantizes (:func:`assign_layers`)."""
        owner = assign_layers({n: tuple(linears[n].weight.shape) for n in names}, self.world)
        return [n for n in names if owner[n] == self.rank]

    def gather_layers(self, stage: str, layers: dict, backend) -> dict:
        """Every rank's quantized layers, rebuilt on every rank from their ``to_tensors()``.

        The owner's layer is rebuilt too, so that every rank runs identical objects.
        """
        from_tensors = getattr(getattr(backend, "formats", None), "from_tensors", None)
        if from_tensors is None:
            from ..formats import from_tensors
        got = self.exchange(stage, {n: layer.to_tensors() for n, layer in layers.items()})
        return {n: from_tensors(t, c) for part in got for n, (t, c) in part.items()}


def run(fn, *args, **kwargs):
    """Call ``fn(*args, distributed=Context(), **kwargs)`` on this rank inside :meth:`Context.guard`.

    Used by ``quantize_model`` and ``capture_hessians`` with ``distributed=True``;
    tqdm progress bars are shown on rank 0 only.

    Raises
    ------
    RuntimeError
        No initialized default process group.
    """
    ctx = Context()
    if ctx.rank != 0:
        kwargs["progress"] = False
    model = args[0] if args else None
    p = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    if p is not None and p.is_cuda:
        torch.cuda.set_device(p.device)
        with contextlib.suppress(ImportError):
            import cupy

            cupy.cuda.Device(p.device.index).use()
    with ctx.guard():
        return fn(*args, distributed=ctx, **kwargs)


# ---------------------------------------------------------------------------------------
# the command line: quipref quantize --nproc N
# ---------------------------------------------------------------------------------------
def without_nproc(argv) -> list:
    """``argv`` without its ``--nproc N`` / ``--nproc=N`` arguments (the children of a
    torchrun launch are already distributed)."""
    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            rest.append(a)
    return rest


def launch_command(argv, nproc: int) -> list:
    """The ``torchrun`` command that runs ``python -m quipref <argv>`` on ``nproc`` processes.

    ``--nproc N`` / ``--nproc=N`` are removed from ``argv`` (the children are already
    distributed). ``torchrun --standalone`` is ``python -m torch.distributed.run
    --standalone`` (one machine, a free rendezvous port); for several machines run
    ``torchrun --nnodes ... --rdzv-backend c10d ...`` yourself (docs/distributed.rst).

    Raises
    ------
    ValueError
        ``nproc`` not a positive integer.
    """
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"nproc must be a positive integer (processes, e.g. GPUs), got {nproc!r}")
    rest = without_nproc(argv)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "quipref", *rest]


def launch(argv, nproc: int):
    """Replace this process by ``torchrun`` running ``python -m quipref <argv>`` (no return).

    See :func:`launch_command`.
    """
    cmd = launch_command(argv, nproc)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(cmd[0], cmd)


def setup(argv, nproc: int, *, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    """For a command line with ``--nproc``: re-exec under torchrun, or initialize, or nothing.

    * ``nproc > 1`` and not under torchrun: :func:`launch` (does not return);
    * under torchrun: :func:`init` (NCCL with CUDA, else gloo) and return True;
    * else return False (one process).

    Returns
    -------
    bool
        Whether to pass ``distributed=True``.
    """
    if under_torchrun():
        init(timeout=timeout)
        return True
    if isinstance(nproc, int) and not isinstance(nproc, bool) and nproc == 1:
        return False
    launch(argv, nproc)
    return True  # pragma: no cover (launch does not return)
