#!/usr/bin/env bash
# CI step: `make demo`'s build path on a machine with no protoc on the PATH.
#   1. With the PATH stripped of every `protoc` (a directory of links to everything else) and
#      PROTOC unset, `make demo-build` must build the gateway; etcd-client's build script is made
#      to run again first (`cargo clean -p etcd-client`), so it compiles etcd's .proto files
#      with the vendored protoc that scripts/with-protoc.sh finds.
#   2. When no vendored protoc can be had either (a cargo that fails), scripts/with-protoc.sh
#      stops before running the build, with one line naming what to install.
set -euo pipefail
cd "$(dirname "$0")/.."

shadow="$(mktemp -d)"
trap 'rm -rf "$shadow"' EXIT
mkdir "$shadow/bin" "$shadow/fail"
IFS=: read -r -a dirs <<<"$PATH"
for dir in "${dirs[@]}"; do
  [ -d "$dir" ] || continue
  for f in "$dir"/*; do
    name="$(basename "$f")"
    [ "$name" = protoc ] && continue
    [ -x "$f" ] && [ ! -e "$shadow/bin/$name" ] && ln -s "$f" "$shadow/bin/$name"
  done
done
export PATH="$shadow/bin"
unset PROTOC PROTOC_INCLUDE
if command -v protoc >/dev/null 2>&1; then
  echo "check-build-without-protoc: protoc is still on the PATH" >&2; exit 1
fi

# 1. The build works with no protoc installed.
cargo clean --quiet -p etcd-client
make --no-print-directory demo-build

# 2. Nothing to build with: one line, before compiling.
printf '#!/bin/sh\nexit 1\n' >"$shadow/fail/cargo"
chmod +x "$shadow/fail/cargo"
if out="$(CARGO="$shadow/fail/cargo" scripts/with-protoc.sh sh -c 'echo COMPILED' 2>&1)"; then
  echo "check-build-without-protoc: with-protoc.sh ran the build with no protoc: $out" >&2; exit 1
fi
case "$out" in
  *COMPILED*) echo "check-build-without-protoc: the build ran: $out" >&2; exit 1 ;;
  "switchyard's build needs protoc: install it"*) ;;
  *) echo "check-build-without-protoc: unexpected message: $out" >&2; exit 1 ;;
esac
[ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] || { echo "not one line: $out" >&2; exit 1; }
echo "check-build-without-protoc: ok (built with the vendored protoc; without one: $out)"
