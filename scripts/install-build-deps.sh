#!/usr/bin/env bash
# Installs what building the workspace needs beyond the Rust toolchain:
#   protoc        the etcd-client crate compiles etcd's gRPC schemas in its build script
#                 with tonic/prost-build, which runs an external `protoc` (our own
#                 schemas in proto/ are compiled with protox, pure Rust, and need none).
#   libssl-dev,   kafscale-bench's librdkafka is built with TLS (rdkafka's `ssl`
#   pkg-config    feature) so `make bench-tls` can load a TLS listener.
# Idempotent and quick when everything is there. PROTOC, when set, wins.
set -euo pipefail

need=()
if ! { [ -n "${PROTOC:-}" ] && [ -x "${PROTOC}" ]; } && ! command -v protoc >/dev/null 2>&1; then
  need+=(protobuf-compiler)
fi
if ! command -v pkg-config >/dev/null 2>&1; then
  need+=(pkg-config libssl-dev)
elif ! pkg-config --exists openssl 2>/dev/null; then
  need+=(libssl-dev)
fi
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${need[*]} for the build" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  exit 0
fi
echo "missing build packages: ${need[*]} (apt-get install ${need[*]});" >&2
echo "for protoc, PROTOC may point at a protoc binary instead" >&2
exit 1
