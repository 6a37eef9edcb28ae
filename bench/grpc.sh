#!/usr/bin/env bash
# bench/grpc.sh (make bench-grpc) — the gRPC rows: unary calls over h2c through Switchyard,
# nginx (grpc_pass with upstream keep-alive) and HAProxy (server proto h2), same backend,
# same run; and an HTTP/2 client to an HTTP/1.1 upstream through Switchyard and nginx.
#
# The load generator is h2load (Debian nghttp2-client) replaying one gRPC call: POST
# /bench.Echo/Unary, content-type application/grpc, te: trailers, a 5-byte framed message.
# The backend is nginx (cheaper than any of the proxies) speaking h2c and answering every
# call with a gRPC message and trailers `grpc-status: 0`; the HTTP/1.1 rows' backend is the
# same nginx on an HTTP/1.1 port (`return 200`).
#
# Environment (defaults in brackets):
#   REQUESTS [200000]  CLIENTS [16]  STREAMS [10: concurrent streams per client]
#   THREADS [1]  WORKERS [1: proxy threads]  SKIP_BUILD [0]  KEEP [0]
#   SWITCHYARD [target/release/switchyard]   TARGETS ["direct switchyard nginx haproxy"]
#   H1_TARGETS ["switchyard-h1 nginx-h1"]
# Prints h2load's requests/s, mean/p50/p99/max time per request (the percentiles from
# h2load's --log-file) and each core's busy % per target
# (nothing is pinned: the cores show whether the client or the machine was the limit), and
# writes the text to target/bench/grpc-<time>.md. Everything listens on 127.0.0.1 on free ports and is
# killed on exit. Needs h2load, nginx, haproxy (installed with apt-get when root).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
export PATH="$PATH:/usr/sbin:/sbin"

log() { printf '[bench-grpc] %s\n' "$*" >&2; }
die() { printf '[bench-grpc] error: %s\n' "$*" >&2; exit 1; }

REQUESTS=${REQUESTS:-200000}
CLIENTS=${CLIENTS:-16}
STREAMS=${STREAMS:-10}
THREADS=${THREADS:-1}
WORKERS=${WORKERS:-1}
KEEP=${KEEP:-0}
TARGETS=${TARGETS:-"direct switchyard nginx haproxy"}
H1_TARGETS=${H1_TARGETS:-"switchyard-h1 nginx-h1"}
OUT=${OUT:-$ROOT/target/bench}

missing=()
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v nginx >/dev/null || missing+=(nginx)
command -v haproxy >/dev/null || missing+=(haproxy)
install_missing "${missing[@]}"
release_switchyard

DIR=$(mktemp -d /tmp/switchyard-bench-grpc.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ $KEEP == 1 ]] || rm -rf "$DIR"
}
trap cleanup EXIT

port() { free_loopback_port; }
wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  die "nothing listens on 127.0.0.1:$1 ($2)"
}

# One framed gRPC message: flag 0, length 5, "hello".
printf '\x00\x00\x00\x00\x05hello' >"$DIR/call.bin"

BACKEND_H2=$(port) BACKEND_H1=$(port)
SY=$(port) SY_ADMIN=$(port) SY_H1=$(port) SY_H1_ADMIN=$(port)
NG=$(port) NG_H1=$(port) HA=$(port)
mkdir -p "$DIR/nginx-body" "$DIR/backend"

# The backend: nginx answering h2c gRPC calls and plain HTTP/1.1 GETs.
cat >"$DIR/backend.conf" <<CONF
worker_processes 1;
pid $DIR/backend/nginx.pid;
error_log $DIR/backend/error.log warn;
daemon off;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $DIR/nginx-body;
    keepalive_requests 10000000;
    server {
        listen 127.0.0.1:$BACKEND_H2 http2;
        location / {
            default_type application/grpc;
            add_trailer grpc-status 0 always;
            return 200 "\x00\x00\x00\x00\x02ok";
        }
    }
    server {
        listen 127.0.0.1:$BACKEND_H1;
        location / { return 200 "ok"; }
    }
}
CONF
nginx -c "$DIR/backend.conf" -p "$DIR/backend" & PIDS+=($!)
wait_port "$BACKEND_H2" backend

# Switchyard: h2c to the backend for the gRPC row; HTTP/1.1 for the translation row.
cat >"$DIR/switchyard.toml" <<CONF
[server]
listen = "127.0.0.1:$SY"
workers = $WORKERS
[admin]
listen = "127.0.0.1:$SY_ADMIN"
[registries.local]
type = "static"
services.grpc = ["127.0.0.1:$BACKEND_H2"]
[upstreams.grpc]
protocol = "h2c"
[[upstreams.grpc.sources]]
registry = "local"
service = "grpc"
[[routes]]
path_prefix = "/"
upstream = "grpc"
retries = 0
CONF
cat >"$DIR/switchyard-h1.toml" <<CONF
[server]
listen = "127.0.0.1:$SY_H1"
workers = $WORKERS
[admin]
listen = "127.0.0.1:$SY_H1_ADMIN"
[registries.local]
type = "static"
services.web = ["127.0.0.1:$BACKEND_H1"]
[upstreams.web]
[[upstreams.web.sources]]
registry = "local"
service = "web"
[[routes]]
path_prefix = "/"
upstream = "web"
CONF
"$SWITCHYARD" --config "$DIR/switchyard.toml" >/dev/null 2>"$DIR/switchyard.log" & PIDS+=($!)
"$SWITCHYARD" --config "$DIR/switchyard-h1.toml" >/dev/null 2>"$DIR/switchyard-h1.log" & PIDS+=($!)

# nginx: grpc_pass with keep-alive; proxy_pass HTTP/1.1 with keep-alive.
mkdir -p "$DIR/proxy"
cat >"$DIR/proxy.conf" <<CONF
worker_processes $WORKERS;
pid $DIR/proxy/nginx.pid;
error_log $DIR/proxy/error.log warn;
daemon off;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $DIR/nginx-body;
    keepalive_requests 10000000;
    upstream grpc_backend { server 127.0.0.1:$BACKEND_H2; keepalive 64; }
    upstream h1_backend { server 127.0.0.1:$BACKEND_H1; keepalive 64; }
    server {
        listen 127.0.0.1:$NG http2;
        location / { grpc_pass grpc://grpc_backend; }
    }
    server {
        listen 127.0.0.1:$NG_H1 http2;
        location / {
            proxy_pass http://h1_backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CONF
nginx -c "$DIR/proxy.conf" -p "$DIR/proxy" & PIDS+=($!)

# HAProxy: h2c on both sides (proto h2 to the server).
cat >"$DIR/haproxy.cfg" <<CONF
global
    nbthread $WORKERS
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 15s
frontend grpc
    bind 127.0.0.1:$HA proto h2
    default_backend grpc
backend grpc
    http-reuse always
    server b1 127.0.0.1:$BACKEND_H2 proto h2
CONF
haproxy -f "$DIR/haproxy.cfg" & PIDS+=($!)

for p in "$SY" "$SY_H1" "$NG" "$NG_H1" "$HA"; do wait_port "$p" proxy; done

url() {
  case $1 in
    direct) echo "http://127.0.0.1:$BACKEND_H2/bench.Echo/Unary" ;;
    switchyard) echo "http://127.0.0.1:$SY/bench.Echo/Unary" ;;
    nginx) echo "http://127.0.0.1:$NG/bench.Echo/Unary" ;;
    haproxy) echo "http://127.0.0.1:$HA/bench.Echo/Unary" ;;
    switchyard-h1) echo "http://127.0.0.1:$SY_H1/" ;;
    nginx-h1) echo "http://127.0.0.1:$NG_H1/" ;;
  esac
}

mkdir -p "$OUT"
REPORT="$OUT/grpc-$(date -u +%Y%m%dT%H%M%SZ).md"
{
  echo "# gRPC rows: $REQUESTS calls, $CLIENTS clients x $STREAMS streams, $WORKERS proxy worker(s)"
  echo
  echo "| target | requests/s | mean | p50 | p99 | max | failed | cores busy % |"
  echo "|---|---|---|---|---|---|---|---|"
} | tee "$REPORT"
row() {
  local name=$1; shift
  local text before cores
  before=$(core_ticks)
  # --log-file: one line a request (start µs, status, duration µs), for the percentiles.
  text=$(h2load -n "$REQUESTS" -c "$CLIENTS" -m "$STREAMS" -t "$THREADS" \
    --log-file="$DIR/h2load.log" "$@" 2>&1) || die "h2load $name: $text"
  # Each core's busy % (user+system+irq+softirq; +N: nice+steal) during the run (bench/lib.sh).
  cores=$(core_busy "$before" "$(core_ticks)" | awk '{printf "%scpu%s %s%s", (NR > 1 ? " · " : ""), $1, $2, ($3 > 0 ? "+" $3 : "")}')
  local rps mean max failed
  rps=$(awk '/^finished in/ {print $4}' <<<"$text")
  failed=$(awk '/^requests:/ {for (i=1;i<=NF;i++) if ($(i+1)=="failed,") print $i}' <<<"$text")
  read -r mean max < <(awk '/^time for request:/ {print $6, $5}' <<<"$text")
  local p50 p99
  read -r p50 p99 < <(awk '{print $3}' "$DIR/h2load.log" | sort -n | awk '
    { d[NR] = $1 }
    END { if (NR == 0) { print "? ?"; exit }
          printf "%.2fms %.2fms\n", d[int((NR - 1) * 0.50) + 1] / 1000, d[int((NR - 1) * 0.99) + 1] / 1000 }')
  rm -f "$DIR/h2load.log"
  echo "| $name | $rps | $mean | $p50 | $p99 | $max | ${failed:-?} | $cores |" | tee -a "$REPORT"
}
for target in $TARGETS; do
  row "$target (gRPC unary, h2c)" -d "$DIR/call.bin" \
    -H 'content-type: application/grpc' -H 'te: trailers' "$(url "$target")"
done
for target in $H1_TARGETS; do
  row "$target (h2 client, HTTP/1.1 upstream)" "$(url "$target")"
done
log "report: $REPORT"
