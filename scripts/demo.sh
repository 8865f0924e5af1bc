#!/usr/bin/env bash
# `make demo`: one broker (embedded metadata, local-directory storage in a temporary
# directory) with a small generated workload (scripts/demo_workload.py: a producer
# and two consumer groups), and the console URL to open. Ctrl-C stops everything
# and removes the temporary directory.
#
# Settings: KAFSCALE_BROKER_ADDR (default 127.0.0.1:9092), KAFSCALE_METRICS_ADDR
# (default 127.0.0.1:9093), DEMO_TOPIC (demo-orders), DEMO_PARTITIONS (3),
# DEMO_RATE (messages per second, 20). Any other KAFSCALE_* setting passes through.
set -euo pipefail
cd "$(dirname "$0")/.."

BROKER="${CARGO_TARGET_DIR:-target}/release/kafscale-broker"
export KAFSCALE_BROKER_ADDR="${KAFSCALE_BROKER_ADDR:-127.0.0.1:9092}"
export KAFSCALE_METRICS_ADDR="${KAFSCALE_METRICS_ADDR:-127.0.0.1:9093}"
TOPIC="${DEMO_TOPIC:-demo-orders}"
PARTITIONS="${DEMO_PARTITIONS:-3}"
RATE="${DEMO_RATE:-20}"

if [ ! -x "$BROKER" ]; then
  echo "no broker at $BROKER: run 'make build' (or 'make demo')" >&2
  exit 1
fi
# The workload needs only confluent-kafka; `make tools` installs it with the rest.
if ! .venv/bin/python -c 'import confluent_kafka' 2>/dev/null; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "confluent-kafka==2.*"
fi

DATA="$(mktemp -d -t kafscale-demo.XXXXXX)"
BROKER_PID="" WORKLOAD_PID=""
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "stopping the demo"
  for pid in $WORKLOAD_PID $BROKER_PID; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$DATA"
}
trap cleanup INT TERM EXIT

KAFSCALE_DATA_DIR="$DATA" KAFSCALE_LOG_LEVEL="${KAFSCALE_LOG_LEVEL:-info}" \
  "$BROKER" >"$DATA/broker.log" 2>&1 &
BROKER_PID=$!

HTTP="http://$KAFSCALE_METRICS_ADDR"
for _ in $(seq 1 100); do
  if ! kill -0 "$BROKER_PID" 2>/dev/null; then
    echo "the broker exited during start-up:" >&2
    cat "$DATA/broker.log" >&2
    exit 1
  fi
  if .venv/bin/python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('$HTTP/readyz', timeout=1).status != 200)" 2>/dev/null; then
    break
  fi
  sleep 0.1
done

.venv/bin/python scripts/demo_workload.py "$KAFSCALE_BROKER_ADDR" "$TOPIC" "$PARTITIONS" "$RATE" &
WORKLOAD_PID=$!

cat <<EOF

  Kafscale demo is running.
    Console:   $HTTP/ui/
    Kafka:     $KAFSCALE_BROKER_ADDR   (topic $TOPIC, groups demo-readers and demo-audit)
    Metrics:   $HTTP/metrics
    Data:      $DATA   (broker log: $DATA/broker.log)

  Press Ctrl-C to stop.

EOF
wait "$WORKLOAD_PID" || true
WORKLOAD_PID=""
echo "the workload stopped" >&2
