#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need, when they are missing:
#   protobuf-compiler  protoc, for etcd-client's generated code
#   libprotobuf-dev    the well-known .proto files protoc imports (google/protobuf/descriptor.proto);
#                      only a Recommends of protobuf-compiler, so --no-install-recommends skips it
#   etcd-server, etcd-client   real etcd for the etcd registry tests (etcd, etcdctl)
#   bind9, bind9-dnsutils      real DNS server for the DNS registry tests (named, nsupdate)
#   openssl, curl              certificates for the TLS tests; the compose seed scripts
#   chromium, chromium-driver  the dashboard's browser test
#   redis-server               the distributed rate limit tests
#   zookeeper, python3-venv    real ZooKeeper for the zookeeper registry tests, and the
#                              virtualenv (target/kazoo-venv) holding kazoo from PyPI
#   python3-venv               the gRPC tests' virtualenv (grpcio from PyPI, under target/)
#   docker.io, docker-compose, debootstrap   the compose tests and the docker registry's
#                              (an engine, Compose, the local base image); skipped where an
#                              engine already answers with Compose (Docker Desktop)
#   python3-venv               target/otel-venv: the OTLP receiver of the tracing tests
#                              (opentelemetry-proto and grpcio from PyPI)
#   prometheus                 promtool, which checks the /metrics exposition in a test
#   python3-venv               target/metrics-venv: the OpenMetrics parser of PyPI's
#                              prometheus-client, which checks /metrics in OpenMetrics format
# Safe to run repeatedly; does nothing when everything is there.
set -euo pipefail

need=()
command -v protoc   >/dev/null 2>&1 || need+=(protobuf-compiler)
[ -e /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
command -v etcd     >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl  >/dev/null 2>&1 || need+=(etcd-client)
command -v named    >/dev/null 2>&1 || [ -x /usr/sbin/named ] || need+=(bind9)
command -v nsupdate >/dev/null 2>&1 || need+=(bind9-dnsutils)
command -v openssl  >/dev/null 2>&1 || need+=(openssl)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v curl     >/dev/null 2>&1 || need+=(curl)
[ -e /usr/share/java/zookeeper.jar ] || need+=(zookeeper)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
# The dashboard's browser test: headless Chromium driven over WebDriver, and a font.
command -v chromium     >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
# Docker: the engine (dockerd) unless one answers already, Compose v2 or v1, debootstrap.
if ! command -v dockerd >/dev/null 2>&1 && ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  need+=(docker.io)
fi
docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || need+=(iproute2)   # the docker registry tests' bridge
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v cargo-nextest >/dev/null 2>&1 || [ -x "$HOME/.cargo/bin/cargo-nextest" ] || NEXTEST_MISSING=1

if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: installing ${need[*]}"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "install-deps: need root (or sudo) to run: apt-get install -y ${need[*]}" >&2; exit 1; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The packaged services must not hold the ports or files the tests use.
for svc in etcd named bind9 redis-server prometheus; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done
if [ "${NEXTEST_MISSING:-0}" = 1 ]; then
  echo "install-deps: cargo-nextest missing; installing it from crates.io"
  cargo install --locked cargo-nextest >/dev/null
fi
# kazoo (Python ZooKeeper client) registers instances in the zookeeper registry tests.
KAZOO_VENV="$(cd "$(dirname "$0")/.." && pwd)/target/kazoo-venv"
if ! "$KAZOO_VENV/bin/python" -c 'import kazoo' >/dev/null 2>&1; then
  echo "install-deps: creating $KAZOO_VENV with kazoo from PyPI"
  python3 -m venv "$KAZOO_VENV"
  "$KAZOO_VENV/bin/python" -m pip install --quiet kazoo
fi
# The gRPC tests' peers: grpcio (+ tools, health checking) from PyPI wheels in a
# virtualenv under target/ (integration-tests/grpc/requirements.txt pins the versions).
command -v flock >/dev/null 2>&1 || { echo "install-deps: flock (util-linux) missing" >&2; exit 1; }
python3 -c 'import venv, ensurepip' 2>/dev/null || {
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
}
GRPC_VENV="$(cd "$(dirname "$0")/.." && pwd)/target/grpc-venv"
if [ ! -e "$GRPC_VENV/.installed" ]; then
  echo "install-deps: making $GRPC_VENV (grpcio)"
  mkdir -p "$(dirname "$GRPC_VENV")"
  flock "$GRPC_VENV.lock" sh -c "[ -e '$GRPC_VENV/.installed' ] || { rm -rf '$GRPC_VENV' && python3 -m venv '$GRPC_VENV' && '$GRPC_VENV/bin/pip' install -q --disable-pip-version-check --only-binary=:all: -r '$(dirname "$0")/../integration-tests/grpc/requirements.txt' && touch '$GRPC_VENV/.installed'; }"
fi
# The tracing tests' OTLP receiver: the official generated OTLP classes from PyPI, and
# grpcio for its OTLP/gRPC mode (the generated trace_service_pb2_grpc servicer).
venv="$(cd "$(dirname "$0")/.." && pwd)/target/otel-venv"
if ! "$venv/bin/python" -c 'import opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc' >/dev/null 2>&1; then
  echo "install-deps: creating $venv with opentelemetry-proto and grpcio"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q opentelemetry-proto grpcio
fi
# The OpenMetrics parser of the official Prometheus Python client (metrics_exposition.rs).
METRICS_VENV="$(cd "$(dirname "$0")/.." && pwd)/target/metrics-venv"
if [ ! -e "$METRICS_VENV/.installed" ]; then
  echo "install-deps: making $METRICS_VENV (prometheus-client)"
  mkdir -p "$(dirname "$METRICS_VENV")"
  flock "$METRICS_VENV.lock" sh -c "[ -e '$METRICS_VENV/.installed' ] || { rm -rf '$METRICS_VENV' && python3 -m venv '$METRICS_VENV' && '$METRICS_VENV/bin/pip' install -q --disable-pip-version-check -r '$(dirname "$0")/../integration-tests/openmetrics/requirements.txt' && touch '$METRICS_VENV/.installed'; }"
fi
echo "install-deps: ok"
