"""Worker processes for tests/pipeline/test_distributed.py (2 gloo ranks, spawned).

Each rank runs the scenarios in order and pickles its results to ``<out>/rank<r>.pkl``
after every scenario (so a rank that dies leaves what it had). The single-process
references are computed by rank 0 in the same process (same torch thread settings), so
"identical" means the distributed and single-process code paths, not two machines'
BLAS.
"""
from __future__ import annotations

import datetime
import os
import pickle

import numpy as np


def tiny_llama():
    """A 2-block random Llama (hidden 64, MLP 128), identical on every rank (seeded CPU init)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def tiny_ids():
    import torch

    return torch.randint(0, 128, (8, 16), generator=torch.Generator().manual_seed(1))


class Recorder:
    """A backend that records the H each layer is quantized with, then calls quipref's."""

    def __init__(self, fail_on_rank=None, exit_on_rank=None):
        import quipref

        self.__name__ = "recorder"
        self.methods, self.formats = quipref.methods, quipref.formats
        self._q = quipref.quantize_linear
        self.H = {}
        self.fail_on_rank, self.exit_on_rank = fail_on_rank, exit_on_rank

    def quantize_linear(self, W, H, method, bits, seed=0, **options):
        import torch.distributed as dist

        rank = dist.get_rank() if dist.is_initialized() else None
        if rank is not None and rank == self.fail_on_rank:
            raise ValueError(f"boom: injected failure on rank {rank}")
        if rank is not None and rank == self.exit_on_rank:
            os._exit(17)  # dies without reporting
        self.H[seed] = np.array(H)
        return self._q(W, H, method, bits, seed=seed, **options)


def _codes(model):
    from quipref.pipeline import QuantLinear

    return {n: m.layer.to_tensors()[0] for n, m in model.named_modules() if isinstance(m, QuantLinear)}


def _caps(caps):
    return {n: (c.H, c.count, c.group) for n, c in caps.items()}


def s_capture(rank, world):
    from quipref.pipeline import capture_hessians

    model, ids = tiny_llama(), tiny_ids()
    out = {"dist": _caps(capture_hessians(model, ids, batch_size=2, progress=False, distributed=True))}
    if rank == 0:
        out["single"] = _caps(capture_hessians(model, ids, batch_size=2, progress=False))
    return out


def _quantize_pair(rank, model_fn, calib, **kw):
    import torch

    from quipref.pipeline import quantize_model

    probe = kw.pop("probe")
    rec = Recorder()
    m = quantize_model(model_fn(), calibration=calib, distributed=True, backend=rec, progress=False, **kw)
    with torch.no_grad():
        out = {"dist_codes": _codes(m), "dist_H": rec.H, "dist_out": probe(m),
               "dist_cfg": m.quipref_quantization["modules"]}
    if rank == 0:
        rec = Recorder()
        m = quantize_model(model_fn(), calibration=calib, backend=rec, progress=False, **kw)
        with torch.no_grad():
            out.update({"single_codes": _codes(m), "single_H": rec.H, "single_out": probe(m),
                        "single_cfg": m.quipref_quantization["modules"]})
    return out


def s_quantize(rank, world):
    ids = tiny_ids()
    return _quantize_pair(rank, tiny_llama, ids, method="quip#", bits=2, seed=5, batch_size=2,
                          probe=lambda m: m(input_ids=ids[:2], use_cache=False).logits.numpy())


def s_minilm(rank, world):
    from quipref.pipeline import load_model, wiki_texts

    words = " ".join(wiki_texts("calibration")[:2]).split()
    texts = [" ".join(words[i * 37:i * 37 + 8 + 5 * (i % 5)]) for i in range(8)]
    _, tok = load_model("minilm-l6")
    enc = tok(texts[:2], padding=True, return_tensors="pt")
    return _quantize_pair(
        rank, lambda: load_model("minilm-l6", fresh=True)[0], texts, method="gptq", bits=2, seed=1,
        batch_size=2, tokenizer=tok, modules=r"re:encoder\.layer\.[01]\..*",
        probe=lambda m: m(**enc).last_hidden_state.numpy())


def s_mismatch(rank, world):
    from quipref.pipeline import quantize_model

    return quantize_model(tiny_llama(), "rtn", 2 + rank, tiny_ids(), backend="quipref", progress=False,
                          batch_size=2, distributed=True)


def s_failure(rank, world):
    from quipref.pipeline import quantize_model

    return quantize_model(tiny_llama(), "rtn", 2, tiny_ids(), backend=Recorder(fail_on_rank=1),
                          progress=False, batch_size=2, distributed=True)


def s_after_failure(rank, world):
    """The group is still usable after a reported failure."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([rank + 1.0])
    dist.all_reduce(t)
    return float(t)


def s_death(rank, world):
    from quipref.pipeline import quantize_model

    return quantize_model(tiny_llama(), "rtn", 2, tiny_ids(), backend=Recorder(exit_on_rank=1),
                          progress=False, batch_size=2, distributed=True)


SCENARIOS = {"capture": s_capture, "quantize": s_quantize, "minilm": s_minilm, "mismatch": s_mismatch,
             "failure": s_failure, "after_failure": s_after_failure, "death": s_death}


def worker(rank, world, init_method, out, scenarios, timeout_s):
    import torch
    import torch.distributed as dist

    from quipref.pipeline.distributed import DistributedError

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout_s))
    results = {}
    for name in scenarios:
        try:
            results[name] = ("ok", SCENARIOS[name](rank, world))
        except Exception as exc:  # recorded for the test to check
            results[name] = ("error", [c.__name__ for c in type(exc).__mro__], isinstance(exc, DistributedError), str(exc))
        tmp = os.path.join(out, f"rank{rank}.pkl.tmp")
        with open(tmp, "wb") as f:
            pickle.dump(results, f)
        os.replace(tmp, os.path.join(out, f"rank{rank}.pkl"))
    if "death" not in scenarios:
        dist.destroy_process_group()


def spawn(out, scenarios, *, world=2, timeout_s=120.0, join_s=600.0):
    """Start ``world`` spawned ranks; wait at most ``join_s``; return ``(exitcodes, results)``.

    Ranks still alive after ``join_s`` are killed (exit code None in the list): a hang
    fails the test instead of stalling it.
    """
    import multiprocessing as mp
    import time

    ctx = mp.get_context("spawn")
    init = "file://" + os.path.join(out, "rendezvous")
    procs = [ctx.Process(target=worker, args=(r, world, init, out, scenarios, timeout_s)) for r in range(world)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + join_s
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    codes = []
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
            codes.append(None)
        else:
            codes.append(p.exitcode)
    results = []
    for r in range(world):
        path = os.path.join(out, f"rank{r}.pkl")
        results.append(pickle.load(open(path, "rb")) if os.path.exists(path) else {})
    return codes, results
