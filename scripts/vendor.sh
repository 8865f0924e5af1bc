#!/usr/bin/env bash
# Recreates a vendored crate under third_party/ from its pristine crates.io
# release and Kafscale's patch (third_party/<crate>.patch); see
# third_party/<crate>/KAFSCALE.md for why each one is patched.
#
#   scripts/vendor.sh CRATE           rebuild the tree: pristine crate + patch
#   scripts/vendor.sh CRATE check     fail unless the tree is exactly that
#   scripts/vendor.sh CRATE diff      rewrite the patch from an edited tree
#   scripts/vendor.sh all check       check every vendored crate (make lint)
#
# The pristine crate comes through cargo (`cargo fetch` of a throw-away project
# outside the workspace, so that [patch.crates-io] does not apply) and is checked
# against the crates.io checksum below. The patch must apply with exact context
# (`git apply`, no fuzz). To change the vendored code: edit the tree, run `diff`,
# review the patch, then `check`.
set -euo pipefail

CRATES=(kafka-protocol glommio)
CRATE="${1:-}"
MODE="${2:-apply}"

if [ "$CRATE" = all ]; then
  for c in "${CRATES[@]}"; do
    "$0" "$c" "$MODE"
  done
  exit 0
fi

# Per crate: the version, the crates.io checksum of its .crate (as in a
# Cargo.lock), and the files of the .crate that the vendored copy does not keep.
# Always dropped: cargo's metadata and upstream's lock file; kafka-protocol's
# rust-toolchain.toml would make rustup switch toolchains inside third_party/.
case "$CRATE" in
  kafka-protocol)
    VERSION=0.18.0
    SHA256=099d5c2f1b40cd830cbf18ca4d2a0805f2875b811ca18f0372b2433e68fe2dda
    DROP=(.cargo_vcs_info.json Cargo.toml.orig Cargo.lock rust-toolchain.toml)
    ;;
  glommio)
    VERSION=0.9.0
    SHA256=e1f8bc1fce949d18098dc0a4e861314e40351a0144ebf61e59bdb5254a2273b2
    DROP=(.cargo_vcs_info.json Cargo.toml.orig Cargo.lock)
    ;;
  *)
    echo "usage: $0 {${CRATES[*]// /|}|all} [apply|check|diff]" >&2
    exit 2
    ;;
esac

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TREE="$ROOT/third_party/$CRATE"
PATCH="$ROOT/third_party/$CRATE.patch"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# git apply and git diff --no-index must not take a repository above $WORK for theirs.
export GIT_CEILING_DIRECTORIES="$WORK"

# The pristine crate, unpacked and without the packaging files, in $WORK/a.
pristine() {
  mkdir -p "$WORK/fetch/src"
  cat >"$WORK/fetch/Cargo.toml" <<EOF
[package]
name = "vendor-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
$CRATE = { version = "=$VERSION", default-features = false }

[workspace]
EOF
  : >"$WORK/fetch/src/lib.rs"
  (cd "$WORK/fetch" && cargo fetch --quiet)
  local home="${CARGO_HOME:-$HOME/.cargo}" file=""
  for f in "$home"/registry/cache/*/"$CRATE-$VERSION.crate"; do
    [ -f "$f" ] && file="$f" && break
  done
  if [ -z "$file" ]; then
    echo "vendor $CRATE: $CRATE-$VERSION.crate not found under $home/registry/cache" >&2
    exit 1
  fi
  if ! echo "$SHA256  $file" | sha256sum --check --status; then
    echo "vendor $CRATE: $file does not have the crates.io checksum $SHA256" >&2
    exit 1
  fi
  mkdir -p "$WORK/unpack"
  tar -xzf "$file" -C "$WORK/unpack"
  mv "$WORK/unpack/$CRATE-$VERSION" "$WORK/a"
  for f in "${DROP[@]}"; do
    rm -rf "${WORK:?}/a/$f"
  done
}

# Pristine + patch, in $WORK/b.
patched() {
  cp -a "$WORK/a" "$WORK/b"
  if ! (cd "$WORK/b" && git apply --check -p1 "$PATCH"); then
    echo "vendor $CRATE: $PATCH does not apply cleanly to $CRATE $VERSION" >&2
    exit 1
  fi
  (cd "$WORK/b" && git apply -p1 "$PATCH")
}

case "$MODE" in
  apply)
    pristine
    patched
    rm -rf "$TREE"
    cp -a "$WORK/b" "$TREE"
    echo "third_party/$CRATE: $CRATE $VERSION + $(basename "$PATCH")"
    ;;
  check)
    pristine
    patched
    if ! diff -r "$WORK/b" "$TREE"; then
      echo "vendor $CRATE: third_party/$CRATE is not $CRATE $VERSION + $(basename "$PATCH") (run \`$0 $CRATE diff\` after editing the tree)" >&2
      exit 1
    fi
    echo "third_party/$CRATE is $CRATE $VERSION + $(basename "$PATCH")"
    ;;
  diff)
    pristine
    cp -a "$TREE" "$WORK/b"
    # Header: what the patch is; git apply skips everything before the first diff.
    {
      echo "Kafscale's changes to $CRATE $VERSION (crates.io), applied by"
      echo "scripts/vendor.sh $CRATE; why: third_party/$CRATE/KAFSCALE.md."
      echo
      # Run from $WORK, the two trees' own names (a/, b/) are the usual prefixes.
      (cd "$WORK" && git diff --no-index --no-prefix --no-color --no-renames a b || [ $? -eq 1 ])
    } >"$PATCH.tmp"
    mv "$PATCH.tmp" "$PATCH"
    echo "wrote third_party/$CRATE.patch"
    ;;
  *)
    echo "usage: $0 CRATE [apply|check|diff]" >&2
    exit 2
    ;;
esac
