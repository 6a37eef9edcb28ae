#!/usr/bin/env bash
# bench/scale.sh — the scale run of issue 8: Switchyard with 10,000 routes, 1,000 upstreams
# and 100,000 endpoints from a real etcd, under wrk load, while 100 endpoint changes per
# second go into etcd; then the same at a small scale for comparison.
#
# What runs (everything on loopback, free ports, one temp dir, killed on exit):
#   - 100 `switchyard backend --body-size 1024` processes, one per loopback address
#     127.1.0.1 … 127.1.0.100 on one port (a backend binds one address, and dedup is per
#     upstream: every upstream lists the same 100 addresses, so 1,000 upstreams make
#     100,000 endpoints), plus two probe backends (`probe-a`, `probe-b`) on 127.1.1.1/2;
#   - a real etcd (Debian etcd-server) with a temp data dir; bench/scale/tool.py writes the
#     keys through its JSON gateway (`POST /v3/kv/txn`, 128 puts per transaction) in the
#     DESIGN §5 format `<prefix>/sNNNN/iAAA` → `{"host":"127.1.0.7","port":P,"weight":10}`;
#   - the gateway (target/release/switchyard, `switchyard check`ed first) with one etcd
#     registry, one upstream per service, ROUTES path-prefix routes per upstream
#     (`/sNNNN/rR/`), access log off, admin on a free port, pinned like bench/run.sh;
#   - per scale, two windows of DURATION under the same wrk load over random routes
#     (bench/scale/routes.lua): without churn, then with churn: tool.py makes CHANGES
#     endpoint changes per second (weight changes, deletes, re-adds a second later; open
#     loop, one keep-alive connection) and ~PROBES probe changes, each timed from the etcd
#     put's response until visible (admin API or data plane, printed).
# Time to apply one change comes from the gateway's `switchyard_upstream_apply_seconds`
# histogram (Δ between /metrics scrapes around the window; "n/a" when the binary has no
# such metric). Peak RSS is VmHWM over the window (reset through /proc/PID/clear_refs when
# allowed, so the /metrics scrapes outside the window do not count).
# The table goes to stdout and to target/bench/scale-<time>.md.
#
# Environment (defaults in brackets):
#   SCALE ["full small"]: full = 1000 upstreams, small = 10 upstreams (both × ADDRESSES)
#   DURATION [60s]  WARMUP [5s]  CONNECTIONS [64]  THREADS [cores of the load generator]
#   WORKERS [cores given to the gateway]  ADDRESSES [100]  ROUTES [10 per upstream]
#   CHANGES [100 per second]  PROBES [20]  CHURN_ONLY [0: 1 skips the no-churn window]
#   PIN [1]  SKIP_BUILD [0]  KEEP [0: keep the temp dir]  SWITCHYARD [target/release/switchyard]
#   PROFILE [0: 1 samples the gateway with `perf record -e cpu-clock -g` during each window;
#            the reports go to target/bench/perf-scale-<scale>-<row>-<time>.txt. Sampling
#            costs the gateway CPU: do not quote those runs' figures]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
export PATH="$PATH:/usr/sbin:/sbin"

# The command as given (only the knobs that were set), for the report.
COMMAND="$(for v in SCALE DURATION WARMUP CONNECTIONS THREADS WORKERS ADDRESSES ROUTES CHANGES PROBES CHURN_ONLY PROFILE PIN; do
  if [[ -n ${!v:-} ]]; then printf '%s=%q ' "$v" "${!v}"; fi; done)bash bench/scale.sh"

SCALE=${SCALE:-"full small"}
DURATION=${DURATION:-60s}
WARMUP=${WARMUP:-5s}
CONNECTIONS=${CONNECTIONS:-64}
ADDRESSES=${ADDRESSES:-100}
ROUTES=${ROUTES:-10}
CHANGES=${CHANGES:-100}
PROBES=${PROBES:-20}
CHURN_ONLY=${CHURN_ONLY:-0}
PROFILE=${PROFILE:-0}
PIN=${PIN:-1}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP=${KEEP:-0}
OUT=${OUT:-$ROOT/target/bench}
TOOL=$ROOT/bench/scale/tool.py
BODY_SIZE=1024
APPLY_METRIC=switchyard_upstream_apply_seconds

log() { printf '[scale] %s\n' "$*" >&2; }
die() { printf '[scale] error: %s\n' "$*" >&2; exit 1; }

# "10s" / "500ms" / "2m" / "7" → seconds (may be fractional).
seconds() {
  awk -v t="$1" 'BEGIN {
    if (t ~ /ms$/) { sub(/ms$/, "", t); print t / 1000 }
    else if (t ~ /m$/) { sub(/m$/, "", t); print t * 60 }
    else { sub(/s$/, "", t); print t + 0 } }'
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.2f", b - a}'; }

# --- tools -------------------------------------------------------------------------------

ensure_tools() {
  local missing=()
  command -v etcd >/dev/null || missing+=(etcd-server)
  command -v etcdctl >/dev/null || missing+=(etcd-client)
  command -v wrk >/dev/null || missing+=(wrk)
  command -v curl >/dev/null || missing+=(curl)
  command -v python3 >/dev/null || missing+=(python3)
  command -v pgrep >/dev/null || missing+=(procps)
  command -v ss >/dev/null || missing+=(iproute2)
  command -v taskset >/dev/null || missing+=(util-linux)
  [[ $PROFILE != 1 ]] || command -v perf >/dev/null || missing+=(linux-perf)
  install_missing "${missing[@]}"
  command -v cargo >/dev/null || die "cargo not found (install Rust: https://rustup.rs)"
}

build() {
  mkdir -p "$OUT"
  if [[ $SKIP_BUILD != 1 ]]; then
    log "cargo build --release -p switchyard (waits for the build lock when others compile)"
    (cd "$ROOT" && cargo build --release -p switchyard)
  fi
  SWITCHYARD=${SWITCHYARD:-$ROOT/target/release/switchyard}
  [[ -x $SWITCHYARD ]] || die "$SWITCHYARD not built"
}

# --- cores (as bench/run.sh) -------------------------------------------------------------

allowed_cpus() {
  local list part
  list=$(awk '/^Cpus_allowed_list/ {print $2}' /proc/self/status)
  IFS=, read -ra parts <<<"$list"
  for part in "${parts[@]}"; do
    if [[ $part == *-* ]]; then seq "${part%-*}" "${part#*-}"; else echo "$part"; fi
  done
}

join_by_comma() { local IFS=,; echo "$*"; }

plan_cores() {
  mapfile -t CPUS < <(allowed_cpus)
  local n=${#CPUS[@]}
  LOAD_CPUS="" BACKEND_CPUS="" PROXY_CPUS=""
  local load=1 proxy=1
  if [[ $PIN == 1 && $n -ge 2 ]]; then
    if ((n == 2)); then
      LOAD_CPUS=${CPUS[0]} BACKEND_CPUS=${CPUS[0]} PROXY_CPUS=${CPUS[1]}
    elif ((n == 3)); then
      LOAD_CPUS=${CPUS[0]} BACKEND_CPUS=${CPUS[1]} PROXY_CPUS=${CPUS[2]}
    else
      local q=$((n / 4))
      LOAD_CPUS=$(join_by_comma "${CPUS[@]:0:q}")
      BACKEND_CPUS=$(join_by_comma "${CPUS[@]:q:q}")
      PROXY_CPUS=$(join_by_comma "${CPUS[@]:2*q}")
      load=$q proxy=$((n - 2 * q))
    fi
    PIN_NOTE="wrk, etcd, churn and probe on CPU $LOAD_CPUS; the $((ADDRESSES + 2)) backends on CPU $BACKEND_CPUS; gateway on CPU $PROXY_CPUS"
  else
    load=$n proxy=$n
    PIN_NOTE="not pinned ($n CPUs allowed, PIN=$PIN)"
  fi
  WORKERS=${WORKERS:-$proxy}
  THREADS=${THREADS:-$load}
  ((THREADS <= CONNECTIONS)) || THREADS=$CONNECTIONS
}

# --- processes ---------------------------------------------------------------------------

PIDS=()
DIR=""

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local pid all=()
  for pid in "${PIDS[@]}"; do
    all+=("$pid")
    mapfile -t -O "${#all[@]}" all < <(pgrep -P "$pid" || true)
  done
  if ((${#all[@]})); then
    kill -TERM "${all[@]}" 2>/dev/null || true
    for _ in $(seq 50); do
      local alive=0
      for pid in "${all[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
      ((alive)) || break
      sleep 0.1
    done
    kill -KILL "${all[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
  fi
  if [[ -n $DIR && -d $DIR ]]; then
    if [[ $KEEP == 1 ]]; then log "kept $DIR"; else rm -rf "$DIR"; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_bg NAME CPUS CMD... — runs CMD in the background (pinned to CPUS when set), output
# to $DIR/NAME.log; its PID goes to LAST_PID and into PIDS (killed on exit).
start_bg() {
  local name=$1 cpus=$2
  shift 2
  if [[ -n $cpus ]]; then
    (exec taskset -c "$cpus" "$@" >"$DIR/$name.log" 2>&1) &
  else
    (exec "$@" >"$DIR/$name.log" 2>&1) &
  fi
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

pinned() {
  local cpus=$1
  shift
  if [[ -n $cpus ]]; then taskset -c "$cpus" "$@"; else "$@"; fi
}

# stop_pid PID — SIGTERM, up to 10 s, then SIGKILL; drops it from PIDS.
stop_pid() {
  local pid=$1 keep=() p
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

USED_PORTS=" "
free_port() {
  local port
  for _ in $(seq 200); do
    port=$((20000 + RANDOM % 12000))
    [[ $USED_PORTS == *" $port "* ]] && continue
    if ! ss -Htan "( sport = :$port )" | grep -q .; then
      USED_PORTS+="$port "
      FREE_PORT=$port
      return
    fi
  done
  die "no free port found"
}

# wait_http NAME PID URL [TRIES] — until URL answers 200 (TRIES × 0.1 s, default 200) while PID lives.
wait_http() {
  local name=$1 pid=$2 url=$3 tries=${4:-200}
  for _ in $(seq "$tries"); do
    kill -0 "$pid" 2>/dev/null || { tail -20 "$DIR/$name.log" >&2 || true; die "$name exited"; }
    if [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true) == 200 ]]; then
      return
    fi
    sleep 0.1
  done
  tail -20 "$DIR/$name.log" >&2 || true
  die "$name did not answer 200 at $url"
}

cpu_ticks() { # utime + stime of PID
  local fields
  fields=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
  awk '{print $12 + $13}' <<<"$fields"
}

status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

# reset_peak PID — resets VmHWM to the current RSS (clear_refs "5"); sets HWM_RESET.
HWM_RESET=1
reset_peak() { echo 5 2>/dev/null >"/proc/$1/clear_refs" || HWM_RESET=0; }

kv() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k {print $2}'; }

# --- fixed parts: backends and etcd ------------------------------------------------------

start_backends() {
  free_port
  BACKEND_PORT=$FREE_PORT
  local i pids=()
  for ((i = 1; i <= ADDRESSES; i++)); do
    start_bg "backend-$i" "$BACKEND_CPUS" "$SWITCHYARD" backend --listen "127.1.0.$i:$BACKEND_PORT" \
      --name bench --body-size "$BODY_SIZE" --workers 1
    pids+=("$LAST_PID")
  done
  PROBE_A=127.1.1.1 PROBE_B=127.1.1.2
  start_bg probe-a "$BACKEND_CPUS" "$SWITCHYARD" backend --listen "$PROBE_A:$BACKEND_PORT" \
    --name probe-a --body-size "$BODY_SIZE" --workers 1
  pids+=("$LAST_PID")
  start_bg probe-b "$BACKEND_CPUS" "$SWITCHYARD" backend --listen "$PROBE_B:$BACKEND_PORT" \
    --name probe-b --body-size "$BODY_SIZE" --workers 1
  pids+=("$LAST_PID")
  for ((i = 1; i <= ADDRESSES; i++)); do
    wait_http "backend-$i" "${pids[i - 1]}" "http://127.1.0.$i:$BACKEND_PORT/"
  done
  wait_http probe-a "${pids[ADDRESSES]}" "http://$PROBE_A:$BACKEND_PORT/"
  wait_http probe-b "${pids[ADDRESSES + 1]}" "http://$PROBE_B:$BACKEND_PORT/"
  local rss=0 pid
  for pid in "${pids[@]}"; do rss=$((rss + $(status_kib "$pid" VmRSS))); done
  log "backends: $((ADDRESSES + 2)) processes on 127.1.0.1-127.1.0.$ADDRESSES, $PROBE_A, $PROBE_B port $BACKEND_PORT ($(mib "$rss") MiB RSS in all)"
}

start_etcd() {
  free_port
  local client=$FREE_PORT
  free_port
  local peer=$FREE_PORT
  ETCD_URL=http://127.0.0.1:$client
  start_bg etcd "$LOAD_CPUS" etcd --name scale --data-dir "$DIR/etcd-data" \
    --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "scale=http://127.0.0.1:$peer" --initial-cluster-state new \
    --log-level warn --logger zap
  ETCD_PID=$LAST_PID
  wait_http etcd "$ETCD_PID" "$ETCD_URL/health" 300
  log "etcd $(etcd --version | awk 'NR == 1 {print $3}') on $ETCD_URL (data in $DIR/etcd-data)"
}

# --- one scale ---------------------------------------------------------------------------

declare -A R # results, keyed "scale/row/field"

# scrape FILE — the apply histogram's lines of the gateway's /metrics into FILE (3 tries,
# 30 s each). Only those lines are kept: at full scale /metrics is ~13 MB.
scrape() {
  local try
  for try in 1 2 3; do
    # pipefail: the pipeline fails when curl does (the grep group never does).
    if curl -sf --max-time 30 "http://$ADMIN/metrics" | { grep "^$APPLY_METRIC" || true; } >"$1"; then
      return 0
    fi
    log "scraping /metrics failed (try $try; free space in $DIR: $(df -h --output=avail "$DIR" | tail -1))"
  done
  gateway_diagnostics
  die "cannot scrape /metrics"
}

# What the gateway looks like when it stopped answering.
gateway_diagnostics() {
  if kill -0 "$GATEWAY_PID" 2>/dev/null; then
    log "gateway $GATEWAY_PID is alive: $(awk '/^State|^Threads|^VmRSS/ {printf "%s ", $0}' "/proc/$GATEWAY_PID/status")"
    log "readyz: $(curl -s --max-time 5 -w ' (%{http_code})' "http://$ADMIN/readyz" || echo 'no answer')"
  else
    log "gateway $GATEWAY_PID is gone"
  fi
  log "gateway log tail:"
  tail -20 "$DIR/gateway-$CURRENT_SCALE.log" >&2 || true
}

# window SCALE ROW CHURN(0|1)
window() {
  local s=$1 row=$2 churn=$3 k="$1/$2" before after line churn_pid="" probe_pid="" t0
  scrape "$DIR/metrics-$s-$row-before.txt"
  reset_peak "$GATEWAY_PID"
  before=$(cpu_ticks "$GATEWAY_PID")
  if ((churn)); then
    start_bg "churn-$s" "$LOAD_CPUS" python3 "$TOOL" churn --etcd "$ETCD_URL" --prefix "$PREFIX" \
      --upstreams "$UPSTREAMS" --addresses "$ADDRESSES" --port "$BACKEND_PORT" \
      --rate "$CHANGES" --duration "$DURATION_S"
    churn_pid=$LAST_PID
    local interval
    interval=$(awk -v d="$DURATION_S" -v n="$PROBES" 'BEGIN {printf "%.3f", (d - 2) / n}')
    start_bg "probe-$s" "$LOAD_CPUS" python3 "$TOOL" probe --etcd "$ETCD_URL" --prefix "$PREFIX" \
      --port "$BACKEND_PORT" --gateway "$LISTEN" --admin "$ADMIN" --probe-a "$PROBE_A" \
      --probe-b "$PROBE_B" --count "$PROBES" --first 1 --interval "$interval"
    probe_pid=$LAST_PID
  fi
  local perf_pid=""
  if [[ $PROFILE == 1 ]]; then
    perf record -q -e cpu-clock -F 999 -g -p "$GATEWAY_PID" -o "$DIR/perf-$s-$row.data" \
      -- sleep "$DURATION_S" >/dev/null 2>&1 &
    perf_pid=$!
  fi
  t0=$(now)
  line=$(pinned "$LOAD_CPUS" timeout $((${DURATION_S%.*} + 60)) wrk -t "$THREADS" -c "$CONNECTIONS" \
    -d "$DURATION" --timeout 5s -s "$ROOT/bench/scale/routes.lua" "http://$LISTEN" \
    -- "$UPSTREAMS" "$ROUTES" | grep '^WRK ') || die "wrk failed"
  local wrk_s
  wrk_s=$(elapsed "$t0")
  if ((churn)); then
    local i
    for i in $(seq 600); do kill -0 "$churn_pid" 2>/dev/null || break; sleep 0.1; done
    for i in $(seq 600); do kill -0 "$probe_pid" 2>/dev/null || break; sleep 0.1; done
    local rc=0
    wait "$churn_pid" || rc=$?
    ((rc == 0)) || { log "churn exited with status $rc; its log:"; tail -5 "$DIR/churn-$s.log" >&2; }
    rc=0
    wait "$probe_pid" || rc=$?
    ((rc == 0)) || { log "probe exited with status $rc; its log:"; tail -5 "$DIR/probe-$s.log" >&2; }
    local cl pl
    cl=$(grep '^CHURN ' "$DIR/churn-$s.log" || true)
    pl=$(grep '^PROBE ' "$DIR/probe-$s.log" || true)
    R[$k/changes]=$(kv "$cl" changes) R[$k/change_rate]=$(kv "$cl" rate)
    R[$k/change_detail]="weight $(kv "$cl" weight), delete $(kv "$cl" delete), re-add $(kv "$cl" readd) in $(kv "$cl" txns) txns over $(kv "$cl" seconds) s, late max $(kv "$cl" late_max_ms) ms, etcd errors $(kv "$cl" errors)"
    R[$k/probe_mode]=$(kv "$pl" mode) R[$k/probe_n]=$(kv "$pl" n) R[$k/probe_timeouts]=$(kv "$pl" timeouts)
    R[$k/probe_p50]=$(kv "$pl" p50_ms) R[$k/probe_max]=$(kv "$pl" max_ms) R[$k/probe_samples]=$(kv "$pl" samples_ms)
    R[$k/probe_rtt]=$(kv "$pl" poll_rtt_p50_ms) R[$k/probe_polls]=$(kv "$pl" polls)
    R[$k/probe_first]=$(kv "$pl" first_poll) R[$k/probe_lower]=$(kv "$pl" lower_p50_ms)
  fi
  after=$(cpu_ticks "$GATEWAY_PID")
  if [[ -n $perf_pid ]]; then
    wait "$perf_pid" || true
    local report
    report=$OUT/perf-scale-$s-$row-$(date -u +%Y%m%d-%H%M%S).txt
    perf report -i "$DIR/perf-$s-$row.data" --stdio --no-children --percent-limit 0.5 >"$report" 2>/dev/null \
      && log "$k profile: $report"
    R[$k/perf_report]=$report
    # The control plane's share of the samples: everything not on the request path.
    R[$k/cp_share]=$(perf report -i "$DIR/perf-$s-$row.data" --stdio --no-children --sort symbol -g none \
      --percent-limit 0 2>/dev/null | grep -E '^ +[0-9.]+%' | grep -v '::pick' \
      | grep -E 'switchyard_upstream::|switchyard_etcd|switchyard_registry|etcd_client|tonic::|prost::|[^a-z_]h2::|SelectorFactory' \
      | awk '{sub("%", "", $1); t += $1} END {printf "%.2f", t}')
  fi
  R[$k/peak]=$(mib "$(status_kib "$GATEWAY_PID" VmHWM)")
  R[$k/rss_end]=$(mib "$(status_kib "$GATEWAY_PID" VmRSS)")
  R[$k/fds]=$(find "/proc/$GATEWAY_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
  kill -0 "$GATEWAY_PID" 2>/dev/null || { gateway_diagnostics; die "the gateway exited during $k"; }
  scrape "$DIR/metrics-$s-$row-after.txt"
  local hl
  hl=$(python3 "$TOOL" hist --name "$APPLY_METRIC" "$DIR/metrics-$s-$row-before.txt" "$DIR/metrics-$s-$row-after.txt")
  if [[ $(kv "$hl" present) == 1 && $(kv "$hl" count) != 0 ]]; then
    R[$k/apply_n]=$(kv "$hl" count) R[$k/apply_mean]=$(kv "$hl" mean_us)
    R[$k/apply_p50]=$(kv "$hl" p50_us) R[$k/apply_p99]=$(kv "$hl" p99_us) R[$k/apply_le1ms]=$(kv "$hl" le_1ms)
  elif [[ $(kv "$hl" present) == 1 ]]; then
    R[$k/apply_n]=0
  fi
  local requests dur
  requests=$(kv "$line" requests)
  dur=$(kv "$line" duration_us)
  R[$k/requests]=$requests
  R[$k/rps]=$(awk -v r="$requests" -v d="$dur" 'BEGIN {printf "%.0f", r / (d / 1e6)}')
  R[$k/p50]=$(kv "$line" p50_us) R[$k/p99]=$(kv "$line" p99_us) R[$k/p999]=$(kv "$line" p999_us)
  R[$k/errors]=$(($(kv "$line" connect) + $(kv "$line" read) + $(kv "$line" write) + $(kv "$line" status) + $(kv "$line" timeout)))
  R[$k/error_detail]="connect $(kv "$line" connect), read $(kv "$line" read), write $(kv "$line" write), non-2xx $(kv "$line" status), timeout $(kv "$line" timeout)"
  R[$k/cpu]=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", t / hz}')
  R[$k/cpureq]=$(awk -v c="${R[$k/cpu]}" -v r="$requests" 'BEGIN {printf "%.1f", r ? c * 1e6 / r : 0}')
  log "$k: ${R[$k/rps]} req/s, p99 ${R[$k/p99]} µs, errors ${R[$k/errors]}, CPU ${R[$k/cpu]} s, peak RSS ${R[$k/peak]} MiB, changes ${R[$k/changes]:-0}, apply mean ${R[$k/apply_mean]:-n/a} µs, probe p50 ${R[$k/probe_p50]:-n/a} ms (wrk ran ${wrk_s} s)"
}

run_scale() {
  local s=$1
  case $s in
    full) UPSTREAMS=1000 ;;
    small) UPSTREAMS=10 ;;
    *) die "unknown SCALE $s (known: full small)" ;;
  esac
  PREFIX=/switchyard/scale-$s
  CURRENT_SCALE=$s
  R[$s/upstreams]=$UPSTREAMS
  R[$s/endpoints]=$((UPSTREAMS * ADDRESSES))
  R[$s/routes]=$((UPSTREAMS * ROUTES))
  local expected=$((UPSTREAMS * ADDRESSES + ADDRESSES)) # + the probe upstream's
  log "$s: $UPSTREAMS upstreams × $ADDRESSES endpoints, $((UPSTREAMS * ROUTES)) routes"

  local line
  line=$(python3 "$TOOL" load --etcd "$ETCD_URL" --prefix "$PREFIX" --upstreams "$UPSTREAMS" \
    --addresses "$ADDRESSES" --port "$BACKEND_PORT" --probe-a "$PROBE_A" | grep '^LOAD ') || die "loading etcd failed"
  R[$s/load]="$(kv "$line" keys) keys in $(kv "$line" txns) txns, $(kv "$line" seconds) s ($(kv "$line" keys_per_s) keys/s)"
  log "$s: etcd loaded: ${R[$s/load]}"

  free_port
  LISTEN=127.0.0.1:$FREE_PORT
  free_port
  ADMIN=127.0.0.1:$FREE_PORT
  local config=$DIR/gateway-$s.toml
  python3 "$TOOL" config --etcd "$ETCD_URL" --prefix "$PREFIX" --upstreams "$UPSTREAMS" \
    --addresses "$ADDRESSES" --routes "$ROUTES" --listen "$LISTEN" --admin "$ADMIN" \
    --workers "$WORKERS" >"$config"
  local t0
  t0=$(now)
  "$SWITCHYARD" check --config "$config" >"$DIR/check-$s.log" 2>&1 || { cat "$DIR/check-$s.log" >&2; die "switchyard check refused $config"; }
  R[$s/check]=$(elapsed "$t0")
  log "$s: switchyard check ok ($(du -h "$config" | cut -f1) config, ${R[$s/check]} s)"

  # The same routes and upstreams with no endpoints (an empty etcd prefix): what the
  # endpoints cost in RSS is the difference.
  python3 "$TOOL" config --etcd "$ETCD_URL" --prefix "/switchyard/scale-empty" --upstreams "$UPSTREAMS" \
    --addresses "$ADDRESSES" --routes "$ROUTES" --listen "$LISTEN" --admin "$ADMIN" \
    --workers "$WORKERS" >"$DIR/gateway-$s-empty.toml"
  start_bg "gateway-$s-empty" "$PROXY_CPUS" "$SWITCHYARD" --config "$DIR/gateway-$s-empty.toml"
  wait_http "gateway-$s-empty" "$LAST_PID" "http://$ADMIN/readyz" 3000
  sleep 1
  R[$s/rss_empty]=$(mib "$(status_kib "$LAST_PID" VmRSS)")
  stop_pid "$LAST_PID"
  log "$s: the same config without endpoints: RSS ${R[$s/rss_empty]} MiB once ready"

  t0=$(now)
  start_bg "gateway-$s" "$PROXY_CPUS" "$SWITCHYARD" --config "$config"
  GATEWAY_PID=$LAST_PID
  local i ready="" registries="" count=""
  for i in $(seq 6000); do # 10 minutes at most
    kill -0 "$GATEWAY_PID" 2>/dev/null || { tail -20 "$DIR/gateway-$s.log" >&2; die "the gateway exited"; }
    if [[ -z $ready ]]; then
      [[ $(curl -s --max-time 2 "http://$ADMIN/readyz" || true) == ready ]] && ready=$(elapsed "$t0")
    fi
    if [[ -n $ready ]]; then
      registries=$(curl -s --max-time 5 "http://$ADMIN/api/registries" || true)
      count=$(grep -o '"endpoints":[0-9]*' <<<"$registries" | head -1 | cut -d: -f2)
      [[ $count == "$expected" ]] && break
    fi
    sleep 0.05
  done
  [[ $count == "$expected" ]] || die "$s: not synced within 10 min (readyz after ${ready:-never} s; /api/registries: ${registries:0:300})"
  R[$s/sync]=$(elapsed "$t0")
  R[$s/ready]=$ready
  R[$s/rss_start]=$(mib "$(status_kib "$GATEWAY_PID" VmRSS)")
  R[$s/peak_sync]=$(mib "$(status_kib "$GATEWAY_PID" VmHWM)")
  R[$s/rss_anon]=$(mib "$(status_kib "$GATEWAY_PID" RssAnon)")
  R[$s/rss_file]=$(mib "$(status_kib "$GATEWAY_PID" RssFile)")
  log "$s: synced $count endpoints in ${R[$s/sync]} s (/readyz at $ready s); RSS ${R[$s/rss_start]} MiB (anonymous ${R[$s/rss_anon]}, file-backed ${R[$s/rss_file]}; peak so far ${R[$s/peak_sync]})"
  local check
  check=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "http://$LISTEN/s0000/r0/x")
  [[ $check == "200 $BODY_SIZE" ]] || die "$s: GET /s0000/r0/x answered '$check', expected '200 $BODY_SIZE'"

  pinned "$LOAD_CPUS" wrk -t "$THREADS" -c "$CONNECTIONS" -d "$WARMUP" -s "$ROOT/bench/scale/routes.lua" \
    "http://$LISTEN" -- "$UPSTREAMS" "$ROUTES" >/dev/null
  R[$s/metrics_kib]=$(( $(curl -s --max-time 30 "http://$ADMIN/metrics" | wc -c) / 1024 ))
  ((CHURN_ONLY)) || window "$s" steady 0
  window "$s" churn 1
  stop_pid "$GATEWAY_PID"
}

# --- report ------------------------------------------------------------------------------

ms() { [[ -n $1 ]] && awk -v u="$1" 'BEGIN {printf "%.2f", u / 1000}' || echo n/a; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a != "" && b > 0) printf "%.2f×", a / b; else printf "n/a"}'; }
or_na() { [[ -n ${1:-} ]] && echo "$1" || echo n/a; }
verdict() { # verdict VALUE LIMIT → "met" / "missed (x×)"
  awk -v v="$1" -v l="$2" 'BEGIN {if (v == "" || v == "n/a") print "n/a"; else if (v + 0 < l + 0) print "met"; else printf "MISSED (%.1f× the target)", v / l}'
}

report() {
  local s row k
  echo "## Scale run, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- command: \`$COMMAND\`"
  echo "- machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), kernel $(uname -r); load average at start / end: $LOADAVG_START / $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- versions: $("$SWITCHYARD" --version 2>/dev/null | head -1) (tree $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)), etcd $(etcd --version | awk 'NR == 1 {print $3}'), $(wrk -v 2>&1 | head -1 | awk '{print "wrk " $2}')"
  echo "- pinning: $PIN_NOTE; gateway [server] workers = $WORKERS"
  echo "- endpoints: $ADDRESSES \`switchyard backend --body-size $BODY_SIZE --workers 1\` processes, one per address 127.1.0.1 … 127.1.0.$ADDRESSES on port $BACKEND_PORT; every upstream lists all $ADDRESSES (dedup is per upstream), so N upstreams × $ADDRESSES endpoints. Plus a probe upstream (99 backup endpoints at priority 1 + one at priority 0 that the probe moves between two more backends, \`probe-a\`/\`probe-b\`) and its route"
  echo "- etcd: one registry, keys \`/switchyard/scale-SCALE/sNNNN/iAAA\` → \`{\"host\":\"127.1.0.A\",\"port\":$BACKEND_PORT,\"weight\":10}\`; loaded through the JSON gateway (\`/v3/kv/txn\`, 128 puts each)"
  echo "- load: wrk -t $THREADS -c $CONNECTIONS -d $DURATION (after a $WARMUP warm-up) over random routes \`/sNNNN/rR/x\` (bench/scale/routes.lua), ${BODY_SIZE}-byte bodies; access log off"
  echo "- churn: $CHANGES endpoint changes/s for the whole window (weight change 1–20, delete, re-add 1 s after its delete; all due at once in one txn of at most 128 ops, keep-alive); $PROBES probe changes timed from the etcd put's response until visible ($(or_na "${R[full/churn/probe_mode]:-${R[small/churn/probe_mode]:-}}"))"
  echo "- CPU s = utime+stime of the gateway over the window; RSS start = VmRSS once synced; peak = VmHWM over the window ($( ((HWM_RESET)) && echo "reset via /proc/PID/clear_refs at its start" || echo "since start: clear_refs not writable")); RSS end = VmRSS after the window"
  echo "- apply = \`$APPLY_METRIC\` (Δ between /metrics scrapes around the window: mean = Δsum/Δcount; p50/p99 interpolated linearly within its coarse buckets 10, 50, 100, 500 µs, 1, 5 ms …, so only the mean is exact; wall time, so it includes any time the gateway thread was preempted); e2e = the probe changes, etcd put's response → visible, upper bounds (details below)"
  echo
  echo "| scale | upstreams / endpoints / routes | churn | req/s | p50 ms | p99 ms | p99.9 ms | errors | CPU s | CPU µs/req | RSS start MiB | peak RSS MiB | RSS end MiB | changes (/s) | apply mean µs | apply p50 µs | apply p99 µs | e2e p50 ms | e2e max ms |"
  echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for s in $SCALE; do
    for row in steady churn; do
      k=$s/$row
      [[ -n ${R[$k/rps]:-} ]] || continue
      local changes="0" apply_mean=n/a apply_p50=n/a apply_p99=n/a
      [[ $row == churn ]] && changes="${R[$k/changes]} (${R[$k/change_rate]})"
      if [[ -n ${R[$k/apply_mean]:-} ]]; then
        apply_mean=${R[$k/apply_mean]} apply_p50=${R[$k/apply_p50]} apply_p99=${R[$k/apply_p99]}
      elif [[ -n ${R[$k/apply_n]:-} ]]; then
        apply_mean="none" apply_p50="none" apply_p99="none"
      fi
      printf '| %s | %s / %s / %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
        "$s" "${R[$s/upstreams]}" "${R[$s/endpoints]}" "${R[$s/routes]}" \
        "$([[ $row == churn ]] && echo "$CHANGES/s" || echo none)" \
        "${R[$k/rps]}" "$(ms "${R[$k/p50]}")" "$(ms "${R[$k/p99]}")" "$(ms "${R[$k/p999]}")" \
        "${R[$k/errors]}" "${R[$k/cpu]}" "${R[$k/cpureq]}" "${R[$s/rss_start]}" "${R[$k/peak]}" \
        "${R[$k/rss_end]}" "$changes" "$apply_mean" "$apply_p50" "$apply_p99" \
        "$(or_na "${R[$k/probe_p50]:-}")" "$(or_na "${R[$k/probe_max]:-}")"
    done
  done
  echo
  for s in $SCALE; do
    echo "- $s: etcd load ${R[$s/load]}; \`switchyard check\` ${R[$s/check]} s; start to synced (/readyz \"ready\" and /api/registries counting every endpoint) ${R[$s/sync]} s (/readyz at ${R[$s/ready]} s); peak RSS up to sync ${R[$s/peak_sync]} MiB; RSS once synced ${R[$s/rss_start]} MiB = ${R[$s/rss_anon]} anonymous + ${R[$s/rss_file]} file-backed (the binary's code and read-only data as mapped); the same routes and upstreams without endpoints: RSS ${R[$s/rss_empty]} MiB (so the endpoints take $(awk -v a="${R[$s/rss_start]}" -v b="${R[$s/rss_empty]}" -v n="$((R[$s/endpoints] + ADDRESSES))" 'BEGIN {printf "%.1f MiB, %.0f bytes each", a - b, (a - b) * 1048576 / n}')); /metrics is ${R[$s/metrics_kib]} KiB"
    for row in steady churn; do
      k=$s/$row
      [[ -n ${R[$k/rps]:-} ]] || continue
      echo "  - $row: errors: ${R[$k/error_detail]}; gateway file descriptors open at the end (client + upstream connections): ${R[$k/fds]}; $(awk -v c="${R[$k/cpu]}" -v d="$DURATION_S" -v w="$WORKERS" 'BEGIN {u = c / (d * w) * 100; printf "gateway busy %.0f%% of its %d core(s)", u, w; if (u < 90) printf " — not saturated: requests/s was limited by the load side (wrk, backends, etcd, churn on their cores, or other jobs), so compare CPU µs/req"}')"
      if [[ $row == churn ]]; then
        echo "  - churn: ${R[$k/change_detail]}; apply samples in the histogram: $(or_na "${R[$k/apply_n]:-}")$( [[ -n ${R[$k/apply_le1ms]:-} ]] && echo " (${R[$k/apply_le1ms]}% ≤ 1 ms)")"
        echo "  - probe ($(or_na "${R[$k/probe_mode]}")): ${R[$k/probe_n]} seen, ${R[$k/probe_timeouts]} not seen within 10 s; ms: ${R[$k/probe_samples]}; each an upper bound: taken when the first poll that saw it returned (${R[$k/probe_polls]} polls, round trip p50 ${R[$k/probe_rtt]} ms; the first poll already saw it in ${R[$k/probe_first]} of ${R[$k/probe_n]}; lower bound p50 ${R[$k/probe_lower]} ms)"
      fi
    done
  done
  for s in $SCALE; do
    [[ -n ${R[$s/churn/cp_share]:-} ]] || continue
    echo "- $s profile (PROFILE=1): control-plane symbols (etcd client/gRPC, registry hub, upstream cache and merge, selector builds; flat, allocator time not included) took ${R[$s/churn/cp_share]}% of the gateway's samples in the churn window ($(or_na "${R[$s/steady/cp_share]:-}")% without churn) ≈ $(awk -v p="${R[$s/churn/cp_share]}" -v c="${R[$s/churn/cpu]}" -v n="${R[$s/churn/changes]}" 'BEGIN {printf "%.0f", p / 100 * c / n * 1e6}') µs of gateway CPU per change (a lower bound); reports: $(or_na "${R[$s/steady/perf_report]:-}") ${R[$s/churn/perf_report]}"
  done
  if [[ -n ${R[full/steady/rps]:-} && -n ${R[full/churn/rps]:-} ]]; then
    echo "- cost of churn at full scale: req/s $(ratio "${R[full/churn/rps]}" "${R[full/steady/rps]}"), p99 $(ratio "${R[full/churn/p99]}" "${R[full/steady/p99]}"), CPU µs/req $(ratio "${R[full/churn/cpureq]}" "${R[full/steady/cpureq]}") (churn / no churn)"
  fi
  echo
  echo "Targets (issue 8):"
  if [[ -n ${R[full/churn/peak]:-} ]]; then
    local worst=${R[full/churn/peak]}
    [[ -n ${R[full/steady/peak]:-} ]] && worst=$(awk -v a="$worst" -v b="${R[full/steady/peak]}" 'BEGIN {print (a > b ? a : b)}')
    echo "- RSS < 60 MiB at full scale: peak under load $worst MiB → $(verdict "$worst" 60); RSS once synced ${R[full/rss_start]} MiB; peak up to sync ${R[full/peak_sync]} MiB → $(verdict "${R[full/peak_sync]}" 60)"
    echo "- one change applied < 1 ms at 100,000 endpoints: apply p99 $(or_na "${R[full/churn/apply_p99]:-}") µs → $(verdict "${R[full/churn/apply_p99]:-}" 1000); mean $(or_na "${R[full/churn/apply_mean]:-}") µs → $(verdict "${R[full/churn/apply_mean]:-}" 1000); end to end (etcd → watch → gateway → visible) p50 ${R[full/churn/probe_p50]} ms, max ${R[full/churn/probe_max]} ms"
  fi
  if [[ -n ${R[full/churn/rps]:-} && -n ${R[small/churn/rps]:-} ]]; then
    echo "- cost of one change must not grow with the number of other upstreams: full (1,000 upstreams) / small (10), same 100 endpoints per upstream: apply mean $(ratio "${R[full/churn/apply_mean]:-}" "${R[small/churn/apply_mean]:-}"), p50 $(ratio "${R[full/churn/apply_p50]:-}" "${R[small/churn/apply_p50]:-}"), p99 $(ratio "${R[full/churn/apply_p99]:-}" "${R[small/churn/apply_p99]:-}"); end to end p50 $(ratio "${R[full/churn/probe_p50]}" "${R[small/churn/probe_p50]}")"
  fi
  for s in $SCALE; do
    for row in steady churn; do
      k=$s/$row
      [[ -n ${R[$k/errors]:-} ]] || continue
      ((${R[$k/errors]} == 0)) || echo "- WARNING: $k had ${R[$k/errors]} errors (${R[$k/error_detail]})"
    done
  done
}

# --- main --------------------------------------------------------------------------------

main() {
  ensure_tools
  build
  plan_cores
  DURATION_S=$(seconds "$DURATION")
  CLK_TCK=$(getconf CLK_TCK)
  LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
  DIR=$(mktemp -d /tmp/switchyard-scale.XXXXXX)
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  log "pinning: $PIN_NOTE; load average $LOADAVG_START"
  start_backends
  start_etcd
  local s
  for s in $SCALE; do run_scale "$s"; done
  local file
  file=$OUT/scale-$(date -u +%Y%m%d-%H%M%S).md
  report | tee "$file"
  log "written to $file"
}

main "$@"
