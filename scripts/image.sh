#!/usr/bin/env bash
# Builds the kafscale/broker and kafscale/operator images (docker/*.Dockerfile).
#   scripts/image.sh                 compile inside the build stage (the default target)
#   PREBUILT=1 scripts/image.sh      copy this machine's release binaries (make build and
#                                    cargo build --release -p kafscale-operator first);
#                                    they need glibc 2.36 or older on the build machine,
#                                    as in the distroless/cc-debian12 base
# CONTAINER_RUNTIME (docker or podman; default: whichever is found), IMAGE_TAG
# (default: the workspace version), IMAGE_REPO (default: kafscale), and the
# Dockerfiles' build args RUST_IMAGE and RUNTIME_BASE (mirrors) are honoured.
set -euo pipefail
cd "$(dirname "$0")/.."

rt="${CONTAINER_RUNTIME:-}"
if [ -z "$rt" ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then rt=docker
  elif command -v podman >/dev/null 2>&1; then rt=podman
  else echo "no container runtime: install docker or podman, or set CONTAINER_RUNTIME" >&2; exit 1
  fi
fi
tag="${IMAGE_TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)}"
repo="${IMAGE_REPO:-kafscale}"
args=()
[ -n "${RUST_IMAGE:-}" ] && args+=(--build-arg "RUST_IMAGE=$RUST_IMAGE")
[ -n "${RUNTIME_BASE:-}" ] && args+=(--build-arg "RUNTIME_BASE=$RUNTIME_BASE")
target=runtime
if [ -n "${PREBUILT:-}" ]; then
  target=prebuilt
  bin="${CARGO_TARGET_DIR:-target}/release"
  mkdir -p dist
  for b in kafscale-broker kafscale-operator; do
    [ -x "$bin/$b" ] || { echo "$bin/$b is missing: cargo build --release -p $b" >&2; exit 1; }
    strip -o "dist/$b" "$bin/$b"
  done
fi
for c in broker operator; do
  "$rt" build -f "docker/$c.Dockerfile" --target "$target" "${args[@]}" -t "$repo/$c:$tag" .
  echo "built $repo/$c:$tag"
done
