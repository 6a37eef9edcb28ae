#!/usr/bin/env bash
# A Docker engine the compose tests can count on.
#
#   scripts/docker/engine.sh ensure   # an engine answers (starts dockerd when none does)
#   scripts/docker/engine.sh stop     # stops dockerd if `ensure` started it, else nothing
#   scripts/docker/engine.sh status   # exit 0 when an engine answers
#
# Works on a fresh Debian machine (docker.io installed by scripts/install-deps.sh, no
# systemd, as on CI), on a machine whose systemd runs docker.service, and on a laptop with
# Docker Desktop (whose engine always answers: nothing is started or stopped there).
# dockerd started here logs to target/docker/dockerd.log; its pid is kept in
# target/docker/dockerd.pid, which is how `stop` knows the engine is ours.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
state="${SWITCHYARD_DOCKER_STATE:-$root/target/docker}"
pidfile="$state/dockerd.pid"

answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

ensure() {
  if answers; then return 0; fi
  if ! command -v dockerd >/dev/null 2>&1; then
    echo "engine: no Docker engine answers and dockerd is not installed:" \
         "run scripts/install-deps.sh (apt-get install docker.io), or start Docker Desktop" >&2
    exit 1
  fi
  if [ "$(id -u)" -ne 0 ]; then
    if command -v systemctl >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo systemctl start docker && answers && return 0
    fi
    echo "engine: no Docker engine answers; start one (sudo systemctl start docker," \
         "or sudo dockerd) or add yourself to the docker group" >&2
    exit 1
  fi
  # systemd's docker.service when systemd runs this machine, else dockerd of our own.
  if [ -d /run/systemd/system ] && systemctl start docker 2>/dev/null && wait_engine 30; then
    return 0
  fi
  mkdir -p "$state"
  echo "engine: starting dockerd (log: $state/dockerd.log)"
  nohup dockerd >"$state/dockerd.log" 2>&1 &
  echo $! >"$pidfile"
  if ! wait_engine 60; then
    echo "engine: dockerd did not answer within 60 s; its log:" >&2
    tail -20 "$state/dockerd.log" >&2
    exit 1
  fi
}

wait_engine() {
  local i
  for ((i = 0; i < $1 * 4; i++)); do
    answers && return 0
    sleep 0.25
  done
  return 1
}

stop() {
  [ -f "$pidfile" ] || return 0
  local pid
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null && grep -q dockerd "/proc/$pid/cmdline" 2>/dev/null; then
    echo "engine: stopping the dockerd started here (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  fi
  rm -f "$pidfile"
}

case "${1:-}" in
  ensure) ensure ;;
  stop) stop ;;
  status) answers ;;
  *) echo "usage: $0 ensure|stop|status" >&2; exit 2 ;;
esac
