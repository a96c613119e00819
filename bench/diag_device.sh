python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit
export TORCHINDUCTOR_CACHE_DIR=/tmp/ic TRITON_CACHE_DIR=/tmp/tc
for m in dynamic static static-freeze; do
  TORCH_LOGS=recompiles timeout 110 python3 bench/diag_compile.py $m 1024,1088,1472 > $OUT/diag_$m.log 2>&1; echo "$m rc=$?"
  grep -E "DIAG|Recompil|triggered by|guard" $OUT/diag_$m.log | head -12 | cut -c1-400
done
