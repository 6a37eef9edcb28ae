#!/usr/bin/env bash
# `make compose-test`: the local compose project (deploy/local/compose.yml) as the test
# environment. Starts an engine if none answers, builds the images (cached), brings the
# project up, runs
#   1. the mixed-registry tests (integration-tests/tests/mixed_tiers.rs) against the composed
#      Consul, etcd, DNS and Kubernetes (the SWITCHYARD_TEST_* targets);
#   2. the drills (integration-tests/tests/compose_drills.rs), one at a time, since they stop,
#      kill, restart and scale the project's services;
# then takes the project down (volumes too) and stops the engine if it started it.
# Prints the time each phase took. KEEP_COMPOSE=1 leaves the project running.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
CARGO="${CARGO:-cargo}"
compose=scripts/docker/compose.sh
t0=$(date +%s)
phase() { echo "compose-test: $1 ($(( $(date +%s) - t0 )) s so far)"; }

scripts/docker/engine.sh ensure
cleanup() {
  local rc=$?
  if [ "${KEEP_COMPOSE:-0}" != 1 ]; then
    $compose down -v --remove-orphans >/dev/null 2>&1 || true
    scripts/docker/engine.sh stop || true
  fi
  phase "done (exit $rc)"
}
trap cleanup EXIT

# The workspace's test build, as `make test` makes it just before (then this is a no-op): it
# also builds the binaries the images hold (target/debug/switchyard, consul-double,
# switchyard-kube-double). Selecting the same packages as `make test` keeps cargo from
# rebuilding dependencies with another feature set.
phase "building the tests and the binaries the images hold"
$CARGO nextest run --workspace --no-run
phase "images"
scripts/docker/images.sh
phase "compose up"
$compose down -v --remove-orphans >/dev/null 2>&1 || true
$compose up -d 2>&1 | grep -v -e '^Creating' -e '^Starting' || true
scripts/docker/compose-wait.sh
phase "the project is up"

# The Kubernetes double's kubeconfig, for the tests on the host.
mkdir -p target/docker
docker cp "$($compose ps -q kubernetes)":/kube/kubeconfig.yaml target/docker/kubeconfig.yaml

export SWITCHYARD_COMPOSE=1
export SWITCHYARD_TEST_CONSUL=http://127.28.0.2:8500
export SWITCHYARD_TEST_ETCD=http://127.28.0.3:2379
export SWITCHYARD_TEST_DNS=127.0.0.1:1053
export SWITCHYARD_TEST_KUBECONFIG="$root/target/docker/kubeconfig.yaml"
phase "mixed-registry tests against the composed registries"
$CARGO nextest run --workspace -E 'binary(mixed_tiers)' --no-fail-fast
phase "drills"
# --no-capture: the drills' counts in the output, and one test at a time.
$CARGO nextest run --workspace -E 'binary(compose_drills)' --no-fail-fast --no-capture
