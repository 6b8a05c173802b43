#!/bin/bash
# The GPU checks of the kernel builds written while no GPU was lent (2026-12-01, session 3):
# the E8P v4 decode (fast.cuda.e8p.VARIANTS v4 / v4b2), the QTIP shared-memory ring matvec
# (MatvecPlan(ring=True)), the RHT fused-kernel H_K layouts (-DRHT_FUSED_A=1 / 2), plus the
# four QTIP layer tests that session 2's time limit cut. All are opt-in: the defaults are the
# GPU-tested session-2 builds. Each stage fits one 10-minute device command:
#
#   bash benchmarks/gpu_pending.sh tests    # correctness (pytest -m gpu on the new builds)
#   bash benchmarks/gpu_pending.sh bench    # old vs new in the same run, results files
#
# Logs and the results files are packed into $OUT/pending_<stage>.tgz (the device tool
# returns few files; $OUT is its output folder, /tmp/gpu_pending elsewhere).
# A build becomes the default only after both stages pass and it is faster (then update the VARIANTS / ring / RHT_FUSED_A defaults,
# the notes in benchmarks/NOTES_matvec.md and the issue notes).
set -u
export PYTHONPATH=.
OUT=${OUT:-/tmp/gpu_pending}
stage=${1:-tests}
W=$(mktemp -d)
mkdir -p "$OUT" "$W/logs" "$W/results"
trap 'tar czf "$OUT/pending_$stage.tgz" -C "$W" logs results' EXIT
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.total --format=csv | tee "$W/logs/gpu.txt"

if [ "$stage" = tests ]; then
  python - <<'PY' 2>&1 | tail -3 | tee "$W/logs/precompile.log"
import time
t = time.time()
from fast.cuda import e8p, trellis_decode, hadamard
trellis_decode.precompile(); e8p.precompile(); hadamard.precompile()
print(f"precompiled in {time.time() - t:.0f} s")
PY
  run() {  # name, timeout, pytest args...
    local name=$1 t=$2; shift 2
    timeout "$t" python -m pytest -q -m gpu -p no:cacheprovider "$@" > "$W/logs/$name.log" 2>&1
    echo "$name: rc=$? $(tail -1 "$W/logs/$name.log")"
  }
  run e8p_builds 120 tests/gpu/test_e8p_gpu.py -k every_build
  run trellis_ring 180 tests/gpu/test_trellis_decode_gpu.py -k ring
  run rht_fused_a 150 tests/gpu/test_rht_gpu.py -k fused_a
  run qtip_layer 120 tests/gpu/test_qtip_layer_gpu.py
elif [ "$stage" = bench ]; then
  bench() {  # name, timeout, module args...
    local name=$1 t=$2; shift 2
    timeout "$t" python -m "$@" > "$W/logs/$name.log" 2>&1
    echo "$name: rc=$?"; tail -40 "$W/logs/$name.log"
  }
  bench e8p_variants 200 benchmarks.quipsharp_gpu --variants
  bench trellis_ring 180 benchmarks.qtip_matvec_gpu --ring-compare
  bench rht_fused_a 150 benchmarks.rht_gpu --variants-only
  cp benchmarks/results/*/quipsharp_gpu_variants.* benchmarks/results/*/qtip_matvec_ring_compare.* \
     benchmarks/results/*/rht_gpu_fused_a.* "$W/results/" 2>/dev/null
else
  echo "usage: bash benchmarks/gpu_pending.sh tests|bench" >&2
  exit 2
fi
