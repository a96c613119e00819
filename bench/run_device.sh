#!/bin/bash
# One device-machine campaign (H100): GPU tests, then bench/rtf.py with every variant, the
# daemon end to end and its self-check.  Usage on the device: bash bench/run_device.sh
# Outputs under $OUT (at most 8 files); a short table is printed last.
set -u
# With the optional FlashAttention carried (.fa4b, see flash_device_env.sh) it goes in too.
if [ -d .fa4b ]; then
  . bench/flash_device_env.sh || exit 1
else
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || exit 1
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.draw,power.limit,temperature.gpu,persistence_mode \
  --format=csv > "$OUT/nvidia-smi.txt" 2>&1
if [ "${SKIP_GPU_TESTS:-0}" != 1 ]; then
  ISHOWTTSD_GPU_REPORT="$OUT/gpu_tests.json" timeout ${GPU_TEST_TIMEOUT:-150} python3 -m pytest -q -p no:cacheprovider -m gpu tests/gpu ${GPU_TEST_ARGS:-} \
    -o addopts="" -s > "$OUT/gpu_tests.log" 2>&1; echo "gpu tests rc=$?"
fi
timeout "${BENCH_TIMEOUT:-540}" python3 bench/rtf.py --device cuda --out "$OUT" --keep-logs \
  --cache-dir /tmp/ishowtts-cache ${BENCH_ARGS:-} > "$OUT/bench.log" 2>&1; echo "bench rc=$?"
grep "^\[bench" "$OUT/bench.log" | tail -40
echo; cat "$OUT/table.md" 2>/dev/null || tail -30 "$OUT/bench.log"
tail -5 "$OUT/gpu_tests.log" 2>/dev/null
