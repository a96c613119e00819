#!/bin/bash
# The daemon alone, this tree against an older one, alternating on one card (A B A B): what a
# change moved end to end, measured in one run.  The older tree is a copy of its package and
# bench script, made where the repository is and carried to the device (it is git-ignored):
#   rm -rf .base && mkdir .base && git archive REV ishowttsd bench/rtf.py bench/cuda_timing.py | tar -x -C .base
# Usage on the device, after run_device.sh or flash_device_env.sh has installed the wheels:
#   bash bench/ab_daemon.sh .base ROUNDS [MIDDLE...]   (outputs under $OUT: one summary line per run)
# MIDDLE trees (copies made as .base is) run between the base and this tree in each round, named
# by their folder: the steps of a change measured one by one.
set -u
BASE=$(cd "$1" && pwd); ROUNDS=${2:-2}; NEW=$PWD; SEARCH=${PYTHONPATH:-}
MIDDLE=(); for dir in "${@:3}"; do MIDDLE+=("$(cd "$dir" && pwd)"); done
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
ARGS=${AB_ARGS:-"--device cuda --skip stock,engine --single-start --clients 1,16 --throughput-requests 64 --repeats 10"}
for round in $(seq 1 "$ROUNDS"); do
  for tree in "$BASE" "${MIDDLE[@]}" "$NEW"; do
    name=$(basename "$tree"); name=${name#.}
    [ "$tree" = "$BASE" ] && name=base; [ "$tree" = "$NEW" ] && name=new
    work=/tmp/ab-$name-$round
    # Each tree imports its own package: swap it in where PYTHONPATH names this tree.
    (cd "$tree" && PYTHONPATH=${SEARCH//$NEW/$tree} timeout "${AB_TIMEOUT:-240}" \
      python3 bench/rtf.py $ARGS --out "$work" > "$work.log" 2>&1)
    echo "$name round $round rc=$?: $(python3 - "$work/rtf.json" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))["phases"]["daemon"]
except (OSError, KeyError, ValueError) as exc:
    print(f"no result ({exc})"); sys.exit()
t = d.get("throughput", {})
side = d.get("wav_server_side", {})
print(f"wav {d['wav']['median']*1e3:.1f} ms (p95 {d['wav']['p95']*1e3:.1f}), "
      f"first audio {d['stream_first_audio']['median']*1e3:.1f} ms (p95 {d['stream_first_audio']['p95']*1e3:.1f}), "
      f"engine {side.get('engine_total_s', 0)*1e3:.1f} ms, encode {side.get('encode_s', 0)*1e3:.2f} ms, "
      f"HTTP and hand-offs {side.get('http_and_handoffs_s', 0)*1e3:.2f} ms, "
      + (f"bare client wav {d['wav_raw_client']['median']*1e3:.1f} ms, first audio "
         f"{d['stream_first_audio_raw_client']['median']*1e3:.1f} ms, " if "wav_raw_client" in d else "")
      + ", ".join(f"{k} clients {v['audio_s_per_s']:.1f} audio-s/s" for k, v in t.items()))
PY
)" | tee -a "$OUT/ab_daemon.txt"
  done
done
