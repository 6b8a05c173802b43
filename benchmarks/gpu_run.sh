#!/usr/bin/env bash
# One GPU session in one command (about 9 minutes at most): the kernel GPU tests, then the
# quick benchmarks that record the shipped kernel builds.
#
#     bash benchmarks/gpu_run.sh            # from the repository root, on the GPU machine
#
# Steps, in priority order, under one wall-clock budget (GPU_RUN_BUDGET seconds, default
# 530): a step starts only if its estimated time still fits, so the command ends in time
# and says what it skipped.
#   1. precompile every kernel build unit in parallel worker processes (from standard
#      input: also checks fast.cuda._compile.precompile_units from `python -`);
#   2. python -m pytest -q -m gpu tests/gpu (or the files in $GPU_TESTS);
#   3. python -m benchmarks.quipsharp_gpu --quick   (E8P core + whole QuIP# layer vs fp16)
#   4. python -m benchmarks.qtip_matvec_gpu --quick (QTIP HYB core + layer vs fp16)
#   5. python -m benchmarks.viterbi_gpu --quick     (Viterbi builds, HYB and 1MAD)
#   6. python -m benchmarks.rht_gpu --rows 4096     (RHT vs copy; fewer rows than the default)
# Results files go to benchmarks/results/<device>/ (benchmarks/harness.py); everything the
# lead needs comes back under $OUT (at most 8 files): gpu_run.log (all output, with the
# time of each step), pytest.log, summary.txt and results.tar.gz (benchmarks/results/).
set -u
OUT=${OUT:-/tmp/gpu_run_out}
mkdir -p "$OUT"
BUDGET=${GPU_RUN_BUDGET:-530}
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
LOG="$OUT/gpu_run.log"
SUMMARY="$OUT/summary.txt"
: > "$LOG"
: > "$SUMMARY"
start=$SECONDS

# step NAME ESTIMATE_S LIMIT_S CMD...: run CMD if ESTIMATE_S still fits in the budget,
# killed after min(LIMIT_S, time left); records status and duration in summary.txt
step() {
  local name=$1 est=$2 limit=$3
  shift 3
  local left=$((BUDGET - (SECONDS - start)))
  if (( left < est )); then
    echo "SKIPPED $name (needs ~${est}s, ${left}s left)" | tee -a "$SUMMARY" "$LOG"
    return
  fi
  (( limit > left )) && limit=$left
  echo "=== $name: $* (limit ${limit}s)" >> "$LOG"
  local t0=$SECONDS
  timeout "$limit" "$@" >> "$LOG" 2>&1
  local rc=$?
  echo "rc=$rc ${name} $((SECONDS - t0))s" | tee -a "$SUMMARY" >> "$LOG"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$SUMMARY" 2>&1

step precompile 60 150 python - <<'EOF'
import time
t0 = time.perf_counter()
from fast.cuda import e8p, hadamard, trellis_decode, viterbi
for mod in (e8p, hadamard, trellis_decode, viterbi):
    units = mod.precompile()
    print(f"{mod.__name__}: {len(units)} build units")
print(f"precompiled in {time.perf_counter() - t0:.0f} s")
EOF

step pytest 260 400 bash -c "python -m pytest -q -m gpu -p no:cacheprovider \
  ${GPU_TESTS:-tests/gpu} > '$OUT/pytest.log' 2>&1; \
  rc=\$?; tail -3 '$OUT/pytest.log'; exit \$rc"
step quipsharp_gpu 60 150 python -m benchmarks.quipsharp_gpu --quick
step qtip_matvec_gpu 60 150 python -m benchmarks.qtip_matvec_gpu --quick
step viterbi_gpu 40 90 python -m benchmarks.viterbi_gpu --quick
step rht_gpu 40 90 python -m benchmarks.rht_gpu --rows 4096 --no-torch

tar -czf "$OUT/results.tar.gz" benchmarks/results 2>> "$LOG"
echo "total $((SECONDS - start))s" | tee -a "$SUMMARY" >> "$LOG"
cat "$SUMMARY"
