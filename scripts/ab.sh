#!/usr/bin/env bash
# Side-by-side cost of two broker binaries: ab.sh OLD_BIN NEW_BIN [ROUNDS]
# Runs the same load against each binary in turn (a fresh broker per run: 2
# shards, local storage), interleaved so that both see the same machine, and
# prints MB/s and the broker's CPU seconds (user + system, all threads) per GB.
# Compare the CPU per GB: it is the broker's own cost and moves far less with
# machine noise than MB/s.
#   AB_LOAD=produce (default)  a saturating acks=all produce (1 KiB, 12 s)
#   AB_LOAD=fetch              AB_MESSAGES (default 600,000) 1 KiB messages
#                              produced into 6 partitions with acks=1, then all
#                              read from the earliest offset (from the broker's
#                              cache); CPU counted during the read only
set -euo pipefail
OLD=$1 NEW=$2 ROUNDS=${3:-3} LOAD=${AB_LOAD:-produce} MESSAGES=${AB_MESSAGES:-600000}
BENCH=${KAFSCALE_BENCH_BIN:-${CARGO_TARGET_DIR:-target}/release/kafscale-bench}
[ -x "$BENCH" ] || { echo "ab.sh: no $BENCH (make build, or set KAFSCALE_BENCH_BIN)" >&2; exit 2; }
case $LOAD in produce|fetch) ;; *) echo "ab.sh: AB_LOAD is produce or fetch" >&2; exit 2;; esac
run() {
  local bin=$1 label=$2 d port pid t0 t1 out
  d=$(mktemp -d); port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  # A fetch run's cache holds everything it produced: the read is from memory.
  local cache=$((256 << 20)); [ "$LOAD" = fetch ] && cache=$((2 << 30))
  KAFSCALE_BROKER_ADDR=127.0.0.1:$port KAFSCALE_METRICS_ADDR=127.0.0.1:0 KAFSCALE_CONTROL_ADDR=127.0.0.1:0 \
    KAFSCALE_DATA_DIR=$d KAFSCALE_SHARDS=2 KAFSCALE_LOG_LEVEL=warn KAFSCALE_CACHE_BYTES=$cache \
    "$bin" >"$d/log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do grep -q listening "$d/log" 2>/dev/null && break; sleep 0.1; done
  if [ "$LOAD" = fetch ]; then
    "$BENCH" produce --bootstrap 127.0.0.1:$port --partitions 6 --messages "$MESSAGES" --duration 300 --acks 1 --json >/dev/null 2>&1
    sleep 1
  fi
  t0=$(awk '{print $14+$15}' /proc/$pid/stat)
  if [ "$LOAD" = fetch ]; then
    out=$("$BENCH" consume --bootstrap 127.0.0.1:$port --messages "$MESSAGES" --duration 120 --json 2>/dev/null)
  else
    out=$("$BENCH" produce --bootstrap 127.0.0.1:$port --duration 12 --acks all --json 2>/dev/null)
  fi
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
