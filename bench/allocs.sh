#!/usr/bin/env bash
# bench/allocs.sh — heap allocations per proxied request, counted by heaptrack.
#
# Timings on a shared machine move by ±15% between runs; the number of allocations a
# request costs does not. This runs the release gateway under heaptrack with the bench's
# like-for-like config (access log off), sends wrk load for DURATION, and divides the
# allocation calls heaptrack saw (start-up included, a few thousand) by the requests served.
# Twice: an upstream with one endpoint, and with two (a request that could be retried on
# another endpoint used to copy its headers first).
#
# Environment: DURATION [5s]  CONNECTIONS [16]  SKIP_BUILD [0]
#              SWITCHYARD [target/release/switchyard]
# Needs heaptrack and wrk (installed with apt-get when run as root on Debian).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-16}
SKIP_BUILD=${SKIP_BUILD:-0}

log() { echo "[allocs] $*" >&2; }
die() { log "$*"; exit 1; }

missing=()
command -v heaptrack_print >/dev/null || missing+=(heaptrack)
command -v wrk >/dev/null || missing+=(wrk)
install_missing "${missing[@]}"
release_switchyard

DIR=$(mktemp -d /tmp/switchyard-allocs.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

# wait_port PORT — until something listens on 127.0.0.1:PORT (10 s at most).
wait_port() {
  for _ in $(seq 1 200); do
    (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  die "nothing listens on port $1"
}

BACKENDS=()
for i in 1 2; do
  port=$(free_loopback_port)
  "$SWITCHYARD" backend --listen "127.0.0.1:$port" --body-size 1024 >"$DIR/backend-$i.log" 2>&1 &
  PIDS+=($!)
  wait_port "$port"
  BACKENDS+=("\"127.0.0.1:$port\"")
done

# measure ENDPOINTS — prints "ENDPOINTS endpoint(s): N requests, M allocations, M/N each".
measure() {
  local endpoints=$1 listen admin services
  listen=$(free_loopback_port)
  admin=$(free_loopback_port)
  services=$(IFS=,; echo "${BACKENDS[*]:0:$endpoints}")
  cat >"$DIR/gateway-$endpoints.toml" <<EOF
[server]
listen = "127.0.0.1:$listen"
workers = 1
[admin]
listen = "127.0.0.1:$admin"
[log]
access = false
[registries.local]
type = "static"
services.b = [$services]
[upstreams.b]
[[upstreams.b.sources]]
registry = "local"
service = "b"
[[routes]]
name = "all"
path_prefix = "/"
upstream = "b"
EOF
  heaptrack -o "$DIR/heap-$endpoints" "$SWITCHYARD" --config "$DIR/gateway-$endpoints.toml" \
    >"$DIR/heaptrack-$endpoints.log" 2>&1 &
  local tracker=$!
  wait_port "$listen"
  wrk -t 1 -c "$CONNECTIONS" -d "$DURATION" "http://127.0.0.1:$listen/" >"$DIR/wrk-$endpoints.txt"
  pkill -TERM -f "gateway-$endpoints.toml" || true
  wait "$tracker" || true
  local requests calls
  requests=$(awk '/requests in/ {print $1}' "$DIR/wrk-$endpoints.txt")
  calls=$(heaptrack_print -f "$DIR/heap-$endpoints.zst" 2>/dev/null |
    awk '/^calls to allocation functions:/ {print $5}')
  [[ -n $requests && -n $calls ]] || die "no figures (see $DIR)"
  awk -v e="$endpoints" -v r="$requests" -v c="$calls" \
    'BEGIN {printf "%d endpoint(s): %d requests, %d allocation calls, %.2f per request\n", e, r, c, c / r}'
}

echo "- $SWITCHYARD, switchyard $("$SWITCHYARD" --version 2>/dev/null | awk '{print $2}') (source tree $(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo unknown)), wrk -t 1 -c $CONNECTIONS -d $DURATION, 1 worker, access log off"
measure 1
measure 2
