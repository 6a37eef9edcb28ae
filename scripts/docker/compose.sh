#!/usr/bin/env bash
# `docker compose` for the local compose project (deploy/local/compose.yml), whichever
# Compose this machine has:
#
#   scripts/docker/compose.sh up -d        # any docker compose subcommand and options
#
# Compose v2 (`docker compose`, or docker-compose 2.x) reads the file as it is. Debian
# bookworm's docker-compose 1.29 refuses the top-level `name` and `x-` keys it does not know
# in places; it gets a copy without `name` (target/docker/compose.v1.yml), the name as -p,
# and the file's folder as the project directory, so relative paths mean the same.
# COMPOSE_FILE_LOCAL overrides the file (the drift test runs the user-facing one too).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
file="${COMPOSE_FILE_LOCAL:-$root/deploy/local/compose.yml}"
name="$(awk '/^name:/ {print $2; exit}' "$file")"

if docker compose version >/dev/null 2>&1; then
  exec docker compose -f "$file" "$@"
fi
if ! command -v docker-compose >/dev/null 2>&1; then
  echo "compose: neither 'docker compose' nor docker-compose is installed:" \
       "run scripts/install-deps.sh (apt-get install docker-compose)" >&2
  exit 1
fi
if docker-compose version --short 2>/dev/null | grep -q '^2'; then
  exec docker-compose -f "$file" "$@"
fi
mkdir -p "$root/target/docker"
v1="$root/target/docker/compose.v1.yml"
grep -v '^name:' "$file" >"$v1"
exec docker-compose -p "$name" --project-directory "$(dirname "$file")" -f "$v1" "$@"
