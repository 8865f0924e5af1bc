#!/usr/bin/env bash
# `make bench`: runs the benchmark suite against a locally started broker (local
# directory storage, then s3s-fs) and rewrites docs/benchmarks.md.
# BENCH_SECONDS (default 15) sets the length of each produce run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
T=${CARGO_TARGET_DIR:-target}
SECS=${BENCH_SECONDS:-15}
cargo build --release -p kafscale-broker -p kafscale-bench >/dev/null
BROKER="$T/release/kafscale-broker"
BENCH="$T/release/kafscale-bench"
WORK=$(mktemp -d)
RESULTS="$WORK/results.jsonl"
trap 'pkill -P $$ 2>/dev/null || true; rm -rf "$WORK"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 not up" >&2; return 1; }

S3_PID=""; S3_PORT=""
start_s3() {
  S3_PORT=$(free_port); mkdir -p "$WORK/s3/kafscale"
  "$ROOT/.tools/bin/s3s-fs" --host 127.0.0.1 --port "$S3_PORT" --access-key bench --secret-key benchsecret "$WORK/s3" >"$WORK/s3.log" 2>&1 &
  S3_PID=$!; wait_port "$S3_PORT"
}

BROKER_PID=""; PORT=""
start_broker() { # $1 shards, $2 storage (local|s3), $3 data dir
  PORT=$(free_port); mkdir -p "$3"
  local extra=()
  if [ "$2" = s3 ]; then
    extra=(KAFSCALE_S3_BUCKET=kafscale KAFSCALE_S3_ENDPOINT=http://127.0.0.1:$S3_PORT KAFSCALE_S3_PATH_STYLE=true
           KAFSCALE_S3_ACCESS_KEY=bench KAFSCALE_S3_SECRET_KEY=benchsecret KAFSCALE_S3_REGION=us-east-1
           KAFSCALE_S3_UNSIGNED_PAYLOAD=true)  # as over HTTPS, the default against AWS
  fi
  env KAFSCALE_BROKER_ADDR=127.0.0.1:$PORT KAFSCALE_METRICS_ADDR=127.0.0.1:0 KAFSCALE_CONTROL_ADDR=127.0.0.1:0 KAFSCALE_DATA_DIR="$3" KAFSCALE_SHARDS="$1" KAFSCALE_LOG_LEVEL=warn \
      "${extra[@]}" ${BROKER_ENV:-} "$BROKER" >>"$WORK/broker.log" 2>&1 &
  BROKER_PID=$!; wait_port "$PORT"
}
# CPU seconds (user + system, all threads) the broker has used since it started.
broker_cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$BROKER_PID/stat"; }
stop_broker() { kill -TERM "$BROKER_PID"; wait "$BROKER_PID" || true; }

record() { # $1 label, $2 json
  python3 -c 'import json,sys; d=json.loads(sys.argv[2]); d["label"]=sys.argv[1]; print(json.dumps(d))' "$1" "$2" >>"$RESULTS"
  echo "$1: $2" >&2
}

produce() { # label, shards, storage, acks, rate, [messages]
  local dir="$WORK/d-$RANDOM"; start_broker "$2" "$3" "$dir"
  local limit=(); [ -n "${6:-}" ] && limit=(--messages "$6")
  local out; out=$("$BENCH" produce --bootstrap 127.0.0.1:$PORT --topic bench --partitions 6 --message-size 1024 \
        --acks "$4" --rate "$5" --duration "$SECS" "${limit[@]}" --json 2>/dev/null)
  local cpu; cpu=$(broker_cpu)
  local objects=0
  if [ "$3" = local ]; then objects=$(find "$dir/objects" -name '*.kfs' | wc -l); else objects=$(find "$WORK/s3/kafscale" -name '*.kfs' | wc -l); fi
  out=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["kfs_objects"]=int(sys.argv[2]); d["objects_per_gb"]=round(int(sys.argv[2])/(d["bytes"]/1e9),1) if d["bytes"] else 0; d["broker_cpu_s_per_gb"]=round(float(sys.argv[3])/(d["bytes"]/1e9),2) if d["bytes"] else 0; print(json.dumps(d))' "$out" "$objects" "$cpu")
  record "$1" "$out"
  LAST_DIR=$dir
}

consume() { # label (broker already running)
  local out; out=$("$BENCH" consume --bootstrap 127.0.0.1:$PORT --topic bench --duration 60 --messages "$2" --json 2>/dev/null)
  record "$1" "$out"
}

msgs_of() { python3 -c 'import json,sys; print([json.loads(l) for l in open(sys.argv[1]) if json.loads(l)["label"]==sys.argv[2]][-1]["messages"])' "$RESULTS" "$1"; }
rate_of() { python3 -c 'import json,sys; print(int([json.loads(l) for l in open(sys.argv[1]) if json.loads(l)["label"]==sys.argv[2]][-1]["msgs_per_sec"]*float(sys.argv[3])))' "$RESULTS" "$1" "$2"; }

produce "local, 1 shard, acks=all" 1 local all 0
stop_broker
produce "local, 2 shards, acks=all" 2 local all 0
stop_broker
# 1 GB written with a cache that holds it all: the fetch is served from memory.
BROKER_ENV="KAFSCALE_CACHE_BYTES=4294967296" produce "local, 2 shards, acks=all, 1 GB for the fetch runs" 2 local all 0 1000000
consume "fetch from memory (cache), 2 shards" 1000000
stop_broker
start_broker 2 local "$LAST_DIR"
consume "fetch from the local store (restarted, cold cache, readahead 2), 2 shards" 1000000
stop_broker
produce "local, 2 shards, acks=1" 2 local 1 0
stop_broker
RATE=$(rate_of "local, 2 shards, acks=all" 0.5)
produce "local, 2 shards, acks=all, fixed rate ${RATE}/s (50%)" 2 local all "$RATE"
stop_broker
RATE=$(rate_of "local, 2 shards, acks=all" 0.1)
produce "local, 2 shards, acks=all, fixed rate ${RATE}/s (10%)" 2 local all "$RATE"
stop_broker

if [ -x "$ROOT/.tools/bin/s3s-fs" ]; then
  start_s3
  produce "s3s-fs, 1 shard, acks=all" 1 s3 all 0
  stop_broker
  rm -rf "$WORK/s3/kafscale"/*
  produce "s3s-fs, 2 shards, acks=all" 2 s3 all 0
  stop_broker
  start_broker 2 s3 "$LAST_DIR"
  consume "fetch from s3s-fs (restarted, cold cache), 2 shards" "$(msgs_of 's3s-fs, 2 shards, acks=all')"
  stop_broker
  kill "$S3_PID"
fi

python3 scripts/bench_report.py "$RESULTS" "$SECS" > docs/benchmarks.md
echo "wrote docs/benchmarks.md" >&2
