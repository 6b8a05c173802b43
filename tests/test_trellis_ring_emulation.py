"""CPU emulation of the shared-memory ring of the trellis matvec (``mv_body`` in
fast/kernels/trellis_decode.cu): no GPU needed, runs in the default suite. The GPU tests of
the kernels are in tests/gpu/test_trellis_decode_gpu.py.
"""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fast.cuda import trellis_decode as TD

MATVEC_CODES = ("hyb", "1mad", "3inst")


def _range_start(w, U, Wa):
    return w * U // Wa


def emulate_ring_warp(f0, f1, NJ, k, su, nslot):
    """Python transcription of mv_body's control flow for one warp (all lanes move
    together), with the cp.async semantics made explicit: a commit group is complete only
    once a wait_group has covered it, and a lane sees another lane's copies only after the
    next __syncwarp. Checks, at every read of a unit from the ring, that the slot holds
    exactly that unit's bytes from a group covered by a wait before the last syncwarp;
    that no slot is overwritten between a read and the syncwarp that orders it; and that
    no copy touches bytes at or past f1 UB.

    Returns (computed, flushes): the (unit, z column) of every compute_unit call in order,
    and the (I, jb, je, first) of every flush_row_group call.
    """
    UB = 64 * k
    SLOTB = su * UB
    CH = SLOTB // 16
    content = [[None] * CH for _ in range(nslot)]  # (global chunk, group) per ring chunk
    committed = 0          # commit groups issued
    complete = -1          # groups <= complete are done (covered by a wait)
    visible = -1           # groups <= visible are visible to every lane (wait + syncwarp)
    epoch = 0              # syncwarps so far
    last_read = [-1] * nslot  # epoch of the last read of each physical slot
    state = dict(left=0, slot=nslot - 1, src=f0 * UB, pos=None)
    end = f1 * UB

    def copy_slot(slot):
        nonlocal committed
        assert last_read[slot] < epoch, "slot overwritten before the syncwarp after its reads"
        rem = end - state["src"]
        for c in range(CH):  # lanes c, c + 32, ... : every chunk of the slot once
            if c * 16 < rem:
                gbyte = state["src"] + c * 16
                assert gbyte < end
                content[slot][c] = (gbyte // 16, committed)
        committed += 1
        state["src"] += SLOTB

    def advance():
        nonlocal complete, visible, epoch
        complete = max(complete, committed - 1 - (nslot - 2))  # wait_group(NSLOT - 2)
        visible = complete
        epoch += 1                                            # __syncwarp
        prev = state["slot"]
        state["slot"] = 0 if state["slot"] + 1 == nslot else state["slot"] + 1
        copy_slot(prev)
        state["pos"] = 0
        state["left"] = su

    stream = iter(range(f0, f1 + 10**9))

    def read():  # ring_read: the next unit of the read slot
        unit = next(stream)
        slot, pos = state["slot"], state["pos"]
        last_read[slot] = epoch
        if unit < f1:  # the look-ahead of unit f1 reads stale bytes, never used
            for c in range(pos * UB // 16, (pos + 1) * UB // 16):
                got = content[slot][c]
                assert got is not None, f"unit {unit}: ring chunk never written"
                gchunk, grp = got
                assert gchunk == unit * UB // 16 + (c - pos * UB // 16), (
                    f"unit {unit}: slot {slot} holds global chunk {gchunk}")
                assert grp <= visible, f"unit {unit}: read before its group {grp} was waited for"
        state["pos"] += 1
        return unit

    def fetch():  # ring_fetch
        if state["left"] == 0:
            advance()
        u = read()
        state["left"] -= 1
        return u

    for s in range(nslot - 1):  # prologue
        copy_slot(s)
    computed, flushes = [], []
    I, jb = f0 // NJ, f0 % NJ
    Ilast = (f1 - 1) // NJ
    cur = fetch()
    zcur = jb
    first = True
    while I <= Ilast:
        je = (f1 - 1 - I * NJ) + 1 if I == Ilast else NJ
        cnt = je - jb
        pz = jb + 1
        t = 0
        while t < cnt - 1:
            n = min(state["left"], cnt - 1 - t)
            state["left"] -= n
            t += n
            for _ in range(n):
                nx = read()
                computed.append((cur, zcur))
                cur, zcur = nx, pz
                pz += 1
            if t < cnt - 1:
                nx = fetch()
                computed.append((cur, zcur))
                cur, zcur = nx, pz
                pz += 1
                t += 1
        nx = fetch()
        computed.append((cur, zcur))
        cur, zcur = nx, 0
        flushes.append((I, jb, je, first))
        first = False
        I += 1
        jb = 0
    return computed, flushes


def _expected_flushes(f0, f1, NJ):
    """(I, jb, je, first) of the row groups a warp with units [f0, f1) must flush: every
    row group its range touches, in order, with the range's columns in it."""
    out, I, jb, first = [], f0 // NJ, f0 % NJ, True
    while I <= (f1 - 1) // NJ:
        je = (f1 - 1 - I * NJ) + 1 if I == (f1 - 1) // NJ else NJ
        out.append((I, jb, je, first))
        first, I, jb = False, I + 1, 0
    return out


@settings(max_examples=60, deadline=None)
@given(k=st.sampled_from([2, 3, 4]), NI=st.integers(1, 6), NJ=st.integers(1, 70),
       wa_frac=st.floats(0, 1))
def test_ring_schedule_emulation(k, NI, NJ, wa_frac):
    """The ring index arithmetic of mv_body (emulated per warp, the shipped ring geometry):
    every warp computes exactly its units f0..f1-1 in order with the right z column, reads
    each from a slot that holds it (copy complete and visible), never overwrites a slot too
    early, never copies past its range, and flushes every row group of its range once."""
    U = NI * NJ
    Wa = max(1, min(U, int(round(wa_frac * U)) or 1))
    su, nslot, ringb = TD.ring_geometry(k)
    assert ringb == nslot * su * 64 * k
    covered = []
    for w in range(Wa):
        f0, f1 = _range_start(w, U, Wa), _range_start(w + 1, U, Wa)
        computed, flushes = emulate_ring_warp(f0, f1, NJ, k, su, nslot)
        assert computed == [(u, u % NJ) for u in range(f0, f1)]
        assert flushes == _expected_flushes(f0, f1, NJ)
        covered += [u for u, _ in computed]
    assert covered == list(range(U))


def test_ring_geometry_and_builds():
    """Ring sizes mirror RingCfg (1 KB slots, 4 per warp); the shared memory fits an SM;
    builds() has the matvec kernels of every code in their own units."""
    assert TD.ring_geometry(2) == (8, 4, 4096)
    assert TD.ring_geometry(3) == (5, 4, 3840)
    assert TD.ring_geometry(4) == (4, 4, 4096)
    for code in MATVEC_CODES:
        for k in (2, 3, 4):
            assert TD.ring_smem(code, k) <= TD.MAX_SMEM
    assert TD.ring_smem("hyb", 2) == TD.HYB_SMEM + 16 * 4096
    units = dict(TD.builds())
    for code, cid in TD._CODE_ID.items():
        names = units[(f"-DTD_MV={cid}",)]
        for k in (2, 3, 4):
            for z in ("h", "f"):
                assert f"trellis_mv_{code}_k{k}_{z}" in names
