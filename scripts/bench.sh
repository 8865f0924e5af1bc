#!/usr/bin/env bash
# `make bench`: builds the release broker and kafscale-bench, then runs the
# benchmark suite (scripts/bench_suite.py), which rewrites docs/benchmarks.md and
# docs/benchmarks-latency.svg.
#   BENCH_SECONDS   length of each produce run (default 15)
#   BENCH_BOOTSTRAP host:port of an already running Kafka-compatible broker: run the
#                   client side of the suite against it instead of starting our own;
#                   the report goes to docs/benchmarks-$BENCH_NAME.md
#   BENCH_NAME      what to call that broker (default external)
#   BENCH_SHARED=1  mark the page as measured on a machine busy with other work
set -euo pipefail
cd "$(dirname "$0")/.."
T=${CARGO_TARGET_DIR:-target}
cargo build --release -p kafscale-broker -p kafscale-bench
if [ ! -x .venv/bin/python ]; then
  echo "bench: .venv is missing; run 'make tools' first" >&2
  exit 1
fi
args=(--bench "$T/release/kafscale-bench" --seconds "${BENCH_SECONDS:-15}")
if [ -n "${BENCH_BOOTSTRAP:-}" ]; then
  name=${BENCH_NAME:-external}
  args+=(--bootstrap "$BENCH_BOOTSTRAP" --name "$name" --out "docs/benchmarks-$name.md")
fi
[ "${BENCH_SHARED:-0}" = 1 ] && args+=(--shared)
KAFSCALE_BROKER_BIN="$T/release/kafscale-broker" exec .venv/bin/python scripts/bench_suite.py "${args[@]}"
