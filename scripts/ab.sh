#!/usr/bin/env bash
# Side-by-side cost of two broker binaries: ab.sh OLD_BIN NEW_BIN [ROUNDS]
# Runs the same saturating acks=all produce load (kafscale-bench, 1 KiB, 12 s,
# 2 shards, local storage, a fresh broker per run) against each binary in turn,
# interleaved so that both see the same machine, and prints MB/s and the broker's
# CPU seconds (user + system, all threads) per GB. Compare the CPU per GB: it is
# the broker's own cost and moves far less with machine noise than MB/s.
set -euo pipefail
OLD=$1 NEW=$2 ROUNDS=${3:-3}
BENCH=${KAFSCALE_BENCH_BIN:-${CARGO_TARGET_DIR:-target}/release/kafscale-bench}
[ -x "$BENCH" ] || { echo "ab.sh: no $BENCH (make build, or set KAFSCALE_BENCH_BIN)" >&2; exit 2; }
run() {
  local bin=$1 label=$2 d port pid t0 t1 out
  d=$(mktemp -d); port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  KAFSCALE_BROKER_ADDR=127.0.0.1:$port KAFSCALE_METRICS_ADDR=127.0.0.1:0 KAFSCALE_CONTROL_ADDR=127.0.0.1:0 \
    KAFSCALE_DATA_DIR=$d KAFSCALE_SHARDS=2 KAFSCALE_LOG_LEVEL=warn "$bin" >"$d/log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do grep -q listening "$d/log" 2>/dev/null && break; sleep 0.1; done
  t0=$(awk '{print $14+$15}' /proc/$pid/stat)
  out=$("$BENCH" produce --bootstrap 127.0.0.1:$port --duration 12 --acks all --json 2>/dev/null)
  t1=$(awk '{print $14+$15}' /proc/$pid/stat)
  kill $pid; wait $pid 2>/dev/null || true
  python3 - "$out" "$t0" "$t1" "$label" <<'PY'
import json, sys
o = json.loads(sys.argv[1]); cpu = (int(sys.argv[3]) - int(sys.argv[2])) / 100
gb = o.get("bytes", 0) / 1e9
print(f"{sys.argv[4]:4} {o['mb_per_sec']:7.1f} MB/s  {cpu / gb if gb else float('nan'):5.2f} CPU s/GB")
PY
  rm -rf "$d"
}
for _ in $(seq "$ROUNDS"); do run "$OLD" old; run "$NEW" new; done
