#!/usr/bin/env bash
# Runs a command (a cargo build) with a protoc that etcd-client's build script can use, so that
# a machine with only Rust and make builds the gateway (ARCHITECTURE.md, "Building without
# protoc"):
#   - PROTOC already set, or `protoc` on the PATH: run the command as it is;
#   - otherwise: set PROTOC and PROTOC_INCLUDE to the protoc that the protoc-bin-vendored crate
#     ships (Linux x86_64/aarch64, macOS, Windows; tools/vendored-protoc prints where it is);
#   - where that fails (another platform, crates.io unreachable): stop before compiling with one
#     line saying what to install.
#
#   scripts/with-protoc.sh cargo run -p switchyard -- demo
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO="${CARGO:-cargo}"

if [ -z "${PROTOC:-}" ] && ! command -v protoc >/dev/null 2>&1; then
  if paths="$("$CARGO" run --quiet --locked -p switchyard-vendored-protoc 2>/dev/null)" \
     && [ -n "$paths" ]; then
    PROTOC="$(sed -n 1p <<<"$paths")"
    PROTOC_INCLUDE="$(sed -n 2p <<<"$paths")"
    export PROTOC PROTOC_INCLUDE
    echo "with-protoc: no protoc on the PATH; using the vendored $PROTOC" >&2
  else
    echo "switchyard's build needs protoc: install it (Debian/Ubuntu: apt-get install protobuf-compiler libprotobuf-dev; macOS: brew install protobuf) or set PROTOC to its path" >&2
    exit 1
  fi
fi
exec "$@"
