#!/usr/bin/env bash
# Side-by-side cost of two broker binaries on the read path:
#   ab_fetch.sh OLD_BIN NEW_BIN [ROUNDS] [MESSAGES]
# Per run: a fresh broker (2 shards, local storage), MESSAGES (default 600,000)
# 1 KiB messages produced into 6 partitions with acks=1, then `kafscale-bench
# consume` reads them all from the earliest offset (from the broker's segment
# cache: the newest uploaded segments stay in it). Prints the consume rate and
# the broker's CPU seconds (user + system, all threads) per GB read during the
# consume only. Old and new runs are interleaved so that both see the same
# machine; compare the CPU per GB, which moves far less with machine noise.
set -euo pipefail
OLD=$1 NEW=$2 ROUNDS=${3:-3} MESSAGES=${4:-600000}
BENCH=${KAFSCALE_BENCH_BIN:-${CARGO_TARGET_DIR:-target}/release/kafscale-bench}
[ -x "$BENCH" ] || { echo "ab_fetch.sh: no $BENCH (make build, or set KAFSCALE_BENCH_BIN)" >&2; exit 2; }
run() {
  local bin=$1 label=$2 d port pid t0 t1 out
  d=$(mktemp -d); port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  # A cache large enough for everything produced: the read is from memory.
  KAFSCALE_BROKER_ADDR=127.0.0.1:$port KAFSCALE_METRICS_ADDR=127.0.0.1:0 KAFSCALE_CONTROL_ADDR=127.0.0.1:0 \
    KAFSCALE_DATA_DIR=$d KAFSCALE_SHARDS=2 KAFSCALE_LOG_LEVEL=warn KAFSCALE_CACHE_BYTES=$((2 << 30)) \
    "$bin" >"$d/log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do grep -q listening "$d/log" 2>/dev/null && break; sleep 0.1; done
  "$BENCH" produce --bootstrap 127.0.0.1:$port --partitions 6 --messages "$MESSAGES" --duration 300 --acks 1 --json >/dev/null 2>&1
  sleep 1
  t0=$(awk '{print $14+$15}' /proc/$pid/stat)
  out=$("$BENCH" consume --bootstrap 127.0.0.1:$port --messages "$MESSAGES" --duration 120 --json 2>/dev/null)
  t1=$(awk '{print $14+$15}' /proc/$pid/stat)
  kill $pid; wait $pid 2>/dev/null || true
  python3 - "$out" "$t0" "$t1" "$label" <<'PY'
import json, sys
o = json.loads(sys.argv[1]); cpu = (int(sys.argv[3]) - int(sys.argv[2])) / 100
gb = o.get("bytes", 0) / 1e9
print(f"{sys.argv[4]:4} {o['mb_per_sec']:7.1f} MB/s  {cpu / gb if gb else float('nan'):5.2f} CPU s/GB  ({o.get('messages', '?')} messages)")
PY
  rm -rf "$d"
}
for _ in $(seq "$ROUNDS"); do run "$OLD" old; run "$NEW" new; done
