#!/usr/bin/env bash
# bench/cost.sh — what one proxied request costs, in counts that do not move with the
# machine's load: user-space instructions and system calls.
#
# bench/run.sh's timings move by ±15% between runs on a shared VM, so two proxies within
# 15% of each other cannot be ranked by them. Counts can: for each target, with the same
# configs as bench/run.sh (its templates, one worker each) and the project's backend,
#   instructions  the proxy runs under `valgrind --tool=callgrind` with instrumentation
#                 off; after a warm-up `callgrind_control -i on` starts counting, wrk sends load
#                 for CG_DURATION, `callgrind_control -d` dumps the total, divided by the
#                 requests wrk completed. User space only (the proxy's code, its libraries
#                 and libc), every thread of the process (the access-log writer too).
#   syscalls      the proxy runs natively; `perf stat` counts its system calls (in total and
#                 the kinds a proxy makes per request) while wrk sends load for DURATION,
#                 divided by the requests wrk completed. Kernel work per request follows
#                 the calls: on loopback most of a proxy's CPU time is the kernel's TCP.
# nginx runs as a single process for callgrind (`master_process off`), as nginx documents
# for debugging; HAProxy with -db. Valgrind slows a proxy ~50×: the request counts are
# small, the ratios are not affected.
#
# Environment (defaults in brackets):
#   TARGETS ["switchyard nginx haproxy switchyard-default"]  CONNECTIONS [16]
#   DURATION [5s]  CG_DURATION [10s]  SKIP_BUILD [0]  SWITCHYARD [target/release/switchyard]
#   KEEP [0: 1 keeps the temp dir, with the callgrind dumps for callgrind_annotate]
# Needs valgrind, linux-perf, wrk, nginx, haproxy (installed with apt-get when missing and
# running as root). Prints a table; the same text goes to target/bench/cost-<time>.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
export PATH="$PATH:/usr/sbin:/sbin"

TARGETS=${TARGETS:-"switchyard nginx haproxy switchyard-default"}
CONNECTIONS=${CONNECTIONS:-16}
DURATION=${DURATION:-5s}
CG_DURATION=${CG_DURATION:-10s}
SKIP_BUILD=${SKIP_BUILD:-0}
OUT=${OUT:-$ROOT/target/bench}

log() { printf '[cost] %s\n' "$*" >&2; }
die() { printf '[cost] error: %s\n' "$*" >&2; exit 1; }

missing=()
command -v valgrind >/dev/null || missing+=(valgrind)
command -v perf >/dev/null || missing+=(linux-perf)
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || missing+=(nginx-light)
command -v haproxy >/dev/null || missing+=(haproxy)
install_missing "${missing[@]}"
release_switchyard
mkdir -p "$OUT"

DIR=$(mktemp -d /tmp/switchyard-cost.XXXXXX)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ ${KEEP:-0} == 1 ]]; then log "kept $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT

# wait_http URL — until URL answers 200 (60 s at most: valgrind starts slowly).
wait_http() {
  for _ in $(seq 600); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true) == 200 ]] && return
    sleep 0.1
  done
  die "nothing answered 200 at $1 (logs in $DIR)"
}

# requests WRK_OUTPUT_FILE — the requests wrk completed.
requests() { awk '/requests in/ {print $1}' "$1"; }

BACKEND_PORT=$(free_loopback_port)
"$SWITCHYARD" backend --listen "127.0.0.1:$BACKEND_PORT" --body-size 1024 --workers 1 \
  >"$DIR/backend.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$BACKEND_PORT/"

# config TEMPLATE PORT — prints the bench's config TEMPLATE for one worker listening on PORT.
config() {
  fill_template "$1" "127.0.0.1:$2" "127.0.0.1:$BACKEND_PORT" 1 "$DIR" \
    "127.0.0.1:$(free_loopback_port)"
}

# start TARGET MODE — starts TARGET (MODE: native or callgrind) on a fresh port; sets
# TARGET_PID and TARGET_URL.
start() {
  local t=$1 mode=$2 port cmd=()
  port=$(free_loopback_port)
  TARGET_URL="http://127.0.0.1:$port/"
  case $t in
    switchyard | switchyard-default)
      config switchyard.toml.in "$port" >"$DIR/$t.toml"
      [[ $t == switchyard ]] && printf '\n[log]\naccess = false\n' >>"$DIR/$t.toml"
      cmd=("$SWITCHYARD" --config "$DIR/$t.toml")
      ;;
    nginx)
      mkdir -p "$DIR/nginx"
      config nginx.conf.in "$port" | sed 's#^master_process on;#master_process off;#' >"$DIR/nginx.conf"
      cmd=(nginx -p "$DIR/nginx/" -e "$DIR/nginx-error.log" -c "$DIR/nginx.conf")
      ;;
    haproxy)
      config haproxy.cfg.in "$port" >"$DIR/haproxy.cfg"
      cmd=(haproxy -db -f "$DIR/haproxy.cfg")
      ;;
    *) die "unknown target $t (known: switchyard nginx haproxy switchyard-default)" ;;
  esac
  if [[ $mode == callgrind ]]; then
    cmd=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$DIR/cg-$t.out"
      "${cmd[@]}")
  fi
  # Its stdout is the access log for switchyard-default: a real file, as in bench/run.sh.
  "${cmd[@]}" >"$DIR/$t-$mode.log" 2>&1 &
  TARGET_PID=$!
  PIDS+=("$TARGET_PID")
  wait_http "$TARGET_URL"
}

# stop PID — stops a target and waits for it.
stop() {
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

declare -A INSTR SYSCALLS KINDS SYS_REQ CG_REQ

# instructions TARGET — user-space instructions per request under callgrind.
instructions() {
  local t=$1
  start "$t" callgrind
  wrk -t 1 -c "$CONNECTIONS" -d 3s "$TARGET_URL" >/dev/null
  callgrind_control -i on "$TARGET_PID" >/dev/null 2>&1
  wrk -t 1 -c "$CONNECTIONS" -d "$CG_DURATION" --timeout 10s "$TARGET_URL" >"$DIR/wrk-cg-$t.txt"
  callgrind_control -d "$TARGET_PID" >/dev/null 2>&1
  stop "$TARGET_PID"
  local total
  # The dump asked for is `.1` (the rest, at exit, goes to the file itself).
  total=$(awk '/^summary:/ {print $2}' "$DIR/cg-$t.out.1" 2>/dev/null || echo 0)
  CG_REQ[$t]=$(requests "$DIR/wrk-cg-$t.txt")
  ((total > 0 && CG_REQ[$t] > 0)) || die "$t: no instruction count (see $DIR)"
  INSTR[$t]=$(awk -v i="$total" -v r="${CG_REQ[$t]}" 'BEGIN {printf "%.0f", i / r}')
  log "$t: ${INSTR[$t]} instructions per request (${CG_REQ[$t]} requests under callgrind)"
}

# Shares of switchyard's instructions per request spent in parts of its request path, from
# the same callgrind dump: `callgrind_annotate --inclusive=yes` gives each function's cost
# with its callees'. Each entry is `label|pattern` (an extended regex on the function name).
# A function is listed once per source file its inlined code came from, the whole inclusive
# cost on the largest line: the largest is taken per function; when several functions
# match, theirs are added (an upper bound, should one call another).
#   hardening    hygiene::admit (kept out of line for this count): identity headers
#                removed, the one Host validated, the path normalized (issue 19: ≤ 2%)
#   host, normalize  grammar::host and path::normalize, within it
#   tracing-off  OpenTelemetry code run with no [tracing] section (crates/proxy/src/trace.rs,
#                the opentelemetry crates; issue 23: within 1%)
SHARES=(
  "hardening|switchyard_proxy::hygiene::admit"
  "host|switchyard_proxy::grammar::host"
  "normalize|switchyard_proxy::path::normalize"
  "tracing-off|switchyard_proxy::trace::|opentelemetry"
)
declare -A SHARE

# shares TARGET — fills SHARE[label] with "instructions per request (percent)" for SHARES.
shares() {
  local t=$1 total entry label pattern
  command -v callgrind_annotate >/dev/null || return 0
  callgrind_annotate --inclusive=yes --threshold=100 "$DIR/cg-$t.out.1" >"$DIR/cg-$t.inclusive.txt" 2>/dev/null || return 0
  total=$(awk '/^summary:/ {print $2}' "$DIR/cg-$t.out.1")
  for entry in "${SHARES[@]}"; do
    label=${entry%%|*}
    pattern=${entry#*|}
    SHARE[$label]=$(awk -v p="$pattern" -v total="$total" -v r="${CG_REQ[$t]}" '
      $1 ~ /^[0-9][0-9,]*$/ && $0 ~ p {
        n = $1; gsub(",", "", n)
        f = $0; sub(/^ *[0-9,]+ +(\( *[0-9.]+%\) +)?/, "", f); sub(/ *\[[^]]*\] *$/, "", f); sub(/ +$/, "", f); sub(/ \([0-9,]+x\)$/, "", f); sub(/^[^:]*:/, "", f)
        if (n + 0 > most[f] + 0) most[f] = n
      }
      END { for (f in most) sum += most[f]; printf "%.0f (%.2f%%)", sum / r, 100 * sum / total }' "$DIR/cg-$t.inclusive.txt")
    log "$t: $label ${SHARE[$label]} instructions per request"
  done
}

# The system calls a proxy makes per request, counted apart (the total counts every kind).
CALLS=(read recvfrom write writev sendto epoll_wait)

# perf_count TARGET EVENT — EVENT's count in TARGET's `perf stat -x,` output.
perf_count() { awk -F, -v e="$2" '$3 == e {print $1 + 0}' "$DIR/perf-$1.csv"; }

# syscalls TARGET — system calls per request, natively.
syscalls() {
  local t=$1 pids events=(-e raw_syscalls:sys_enter) c
  start "$t" native
  pids=$(
    echo "$TARGET_PID"
    pgrep -P "$TARGET_PID" || true
  )
  for c in "${CALLS[@]}"; do events+=(-e "syscalls:sys_enter_$c"); done
  wrk -t 1 -c "$CONNECTIONS" -d 2s "$TARGET_URL" >/dev/null
  perf stat -x, "${events[@]}" -p "$(paste -sd, <<<"$pids")" -o "$DIR/perf-$t.csv" &
  local perf=$!
  sleep 0.2
  wrk -t 1 -c "$CONNECTIONS" -d "$DURATION" "$TARGET_URL" >"$DIR/wrk-sys-$t.txt"
  kill -INT "$perf"
  wait "$perf" || true
  stop "$TARGET_PID"
  SYS_REQ[$t]=$(requests "$DIR/wrk-sys-$t.txt")
  SYSCALLS[$t]=$(awk -v n="$(perf_count "$t" raw_syscalls:sys_enter)" -v r="${SYS_REQ[$t]}" 'BEGIN {printf "%.2f", n / r}')
  KINDS[$t]=""
  for c in "${CALLS[@]}"; do
    local n
    n=$(perf_count "$t" "syscalls:sys_enter_$c")
    [[ -n $n && $n != 0 ]] || continue
    # A kind under one call in 200 requests is start-up or housekeeping: left out.
    KINDS[$t]+="$(awk -v n="$n" -v r="${SYS_REQ[$t]}" -v c="$c" 'BEGIN {if (n / r >= 0.005) printf "%s %.2f, ", c, n / r}')"
  done
  KINDS[$t]=${KINDS[$t]%, }
  log "$t: ${SYSCALLS[$t]} system calls per request (${KINDS[$t]})"
}

for t in $TARGETS; do
  instructions "$t"
  [[ $t == switchyard ]] && shares "$t"
  syscalls "$t"
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f×", a / b; else printf "n/a"}'; }

report() {
  echo "## Cost per request, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), kernel $(uname -r)"
  echo "- versions: $("$SWITCHYARD" --version 2>/dev/null | head -1) (tree $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)), $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(haproxy -v 2>/dev/null | head -1 | awk '{print "HAProxy " $3}'), $(valgrind --version)"
  echo "- load: wrk -t 1 -c $CONNECTIONS, GET / → 1024-byte body from the project's backend; each proxy with 1 worker, bench/run.sh's configs"
  echo "- instructions: user space (the process's own code, libraries, libc; every thread), callgrind, $CG_DURATION of load after a 3 s warm-up; syscalls: perf stat, $DURATION of load after a 2 s warm-up"
  echo
  echo "| target | instructions / request | ÷ nginx | syscalls / request | ÷ nginx | of which | requests (callgrind / native) |"
  echo "|---|---:|---:|---:|---:|---|---:|"
  for t in $TARGETS; do
    printf '| %s | %s | %s | %s | %s | %s | %s / %s |\n' "$t" "${INSTR[$t]}" \
      "$(ratio "${INSTR[$t]}" "${INSTR[nginx]:-0}")" "${SYSCALLS[$t]}" \
      "$(ratio "${SYSCALLS[$t]}" "${SYSCALLS[nginx]:-0}")" "${KINDS[$t]}" "${CG_REQ[$t]}" "${SYS_REQ[$t]}"
  done
  if ((${#SHARE[@]})); then
    echo
    echo "Of switchyard's instructions per request (inclusive, with callees; callgrind counts do not move with the machine's load):"
    echo
    echo "| part of the request path | instructions / request (share) |"
    echo "|---|---:|"
    echo "| hardening: identity headers, Host validation, path normalization (hygiene::admit) | ${SHARE[hardening]} |"
    echo "| of which Host grammar (grammar::host) | ${SHARE[host]} |"
    echo "| of which path normalization (path::normalize) | ${SHARE[normalize]} |"
    echo "| OpenTelemetry code with no [tracing] (trace.rs, opentelemetry crates) | ${SHARE[tracing-off]} |"
  fi
}

file=$OUT/cost-$(date -u +%Y%m%d-%H%M%S).md
report | tee "$file"
log "written to $file"
