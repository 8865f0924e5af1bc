#!/usr/bin/env bash
# Installs what building the broker needs beyond the Rust toolchain:
#   protoc   the etcd-client crate compiles etcd's gRPC schemas in its build script
#            with tonic/prost-build, which runs an external `protoc` (our own
#            schemas in proto/ are compiled with protox, pure Rust, and need none).
# Idempotent and quick when everything is there. PROTOC, when set, wins.
set -euo pipefail

if [ -n "${PROTOC:-}" ] && [ -x "${PROTOC}" ]; then
  exit 0
fi
if command -v protoc >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing protobuf-compiler (protoc) for the etcd-client build" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler >/dev/null
  exit 0
fi
echo "protoc is missing: install protobuf-compiler (apt-get install protobuf-compiler)" >&2
echo "or point PROTOC at a protoc binary" >&2
exit 1
