# bench/lib.sh — sourced by the bench scripts (run.sh, scale.sh, allocs.sh, cost.sh); the caller
# defines `log` and `die`.
# shellcheck shell=bash

# install_missing PACKAGE... — installs the Debian packages given (none: nothing to do)
# with apt-get when running as root, or dies naming the command to run.
install_missing() {
  (($#)) || return 0
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    log "installing $*"
    apt-get update -qq || log "apt-get update failed; installing from the package lists already here"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  else
    die "missing tools; run: sudo apt-get install -y $*"
  fi
}

# free_loopback_port — prints a TCP port on 127.0.0.1 that nothing listens on (the kernel's
# pick: bind to port 0, read the port, close).
free_loopback_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# release_switchyard — builds the release gateway (unless SKIP_BUILD=1) and sets SWITCHYARD,
# the binary to measure (the caller's SWITCHYARD wins); the caller defines ROOT.
release_switchyard() {
  if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    (cd "$ROOT" && cargo build --release -p switchyard)
  fi
  SWITCHYARD=${SWITCHYARD:-$ROOT/target/release/switchyard}
  [[ -x $SWITCHYARD ]] || die "$SWITCHYARD not built"
}

# fill_template TEMPLATE LISTEN BACKEND WORKERS DIR ADMIN — prints bench/TEMPLATE (one of the
# `.in` configs) with its @LISTEN@, @BACKEND@, @WORKERS@, @DIR@ and @ADMIN@ filled in; the
# caller defines ROOT. Optional, from the environment (run.sh's modes set them; empty or
# the default otherwise): TPL_LISTEN_OPTS [""] appended to the plain listener (nginx
# " http2": h2c), TPL_TLS [""] a line adding the TLS listener (GNU sed: "\n" starts a new
# line), TPL_MAXCONN [4096] connections per worker / in all, TPL_GLOBAL [""] a line in
# HAProxy's global section.
fill_template() {
  sed -e "s#@LISTEN@#$2#g" -e "s#@BACKEND@#$3#g" -e "s#@WORKERS@#$4#g" -e "s#@DIR@#$5#g" \
    -e "s#@ADMIN@#$6#g" -e "s#@LISTEN_OPTS@#${TPL_LISTEN_OPTS:-}#g" -e "s#@TLS@#${TPL_TLS:-}#g" \
    -e "s#@MAXCONN@#${TPL_MAXCONN:-4096}#g" -e "s#@GLOBAL@#${TPL_GLOBAL:-}#g" "$ROOT/bench/$1"
}

# core_ticks — one line per CPU since boot: "N busy other total", busy = user + system +
# irq + softirq, other = nice + steal, total = every field but guest (counted in user).
core_ticks() {
  awk '/^cpu[0-9]/ {print substr($1, 4), $2 + $4 + $7 + $8, $3 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat
}

# core_busy BEFORE AFTER — from two core_ticks samples, one line per CPU: "N busy% other%".
core_busy() {
  join <(sort -k1,1 <<<"$1") <(sort -k1,1 <<<"$2") |
    awk '{d = $7 - $4; if (d <= 0) d = 1; printf "%s %.0f %.0f\n", $1, ($5 - $2) * 100 / d, ($6 - $3) * 100 / d}' | sort -n
}
