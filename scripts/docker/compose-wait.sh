#!/usr/bin/env bash
# Waits until the local compose project is serving: the gateway's /readyz says every
# source synced, and the seed containers exited 0. Fails (with their logs) after 120 s.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
compose="$root/scripts/docker/compose.sh"
admin="${SWITCHYARD_ADMIN:-http://127.0.0.1:9901}"
for _ in $(seq 1 240); do
  seeds_ok=1
  for seed in seed-consul seed-etcd seed-kubernetes; do
    id="$($compose ps -q "$seed" 2>/dev/null || true)"
    state="$( [ -n "$id" ] && docker inspect --format '{{.State.Status}} {{.State.ExitCode}}' "$id" 2>/dev/null || echo missing)"
    case "$state" in
      "exited 0") ;;
      exited*) echo "compose-wait: $seed failed:" >&2; $compose logs "$seed" >&2; exit 1 ;;
      *) seeds_ok=0 ;;
    esac
  done
  if [ "$seeds_ok" = 1 ] && curl -fsS -m 2 "$admin/readyz" >/dev/null 2>&1; then
    echo "compose-wait: the gateway is ready and every seed ran"
    exit 0
  fi
  sleep 0.5
done
echo "compose-wait: not ready within 120 s; the gateway says:" >&2
curl -sS -m 2 "$admin/readyz" >&2 || true
$compose ps >&2
$compose logs --tail 20 gateway >&2
exit 1
