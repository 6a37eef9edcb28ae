#!/usr/bin/env bash
# Builds every image the local compose project (deploy/local/compose.yml) uses, without a
# container registry: `make images`.
#
#   base      switchyard-local/base:<hash>  debootstrap of Debian (the suite and mirror apt
#             uses on this machine) with deploy/local/base-packages.txt, `docker import`ed;
#             built once per hash of that list, suite and mirror
#   switchyard-local/switchyard:local  the repository's Dockerfile, stage `runtime`, on the
#             base, with target/debug/switchyard built on the host (gateway and sample
#             services: `switchyard backend`, `switchyard register`)
#   switchyard-local/etcd:local        etcd-server from the base
#   switchyard-local/dns:local         bind9 with the example.test zone, dynamic updates on
#   switchyard-local/consul:local      the project's Consul agent double
#   switchyard-local/kubernetes:local  the project's Kubernetes API-server double
#
# Each image is rebuilt only when its inputs changed (a label holds their hash), so a warm
# run takes seconds. Needs a Docker engine (scripts/docker/engine.sh ensure), debootstrap
# (as root, for the base) and the binaries: cargo build -p switchyard -p
# switchyard-consul-double -p switchyard-kube-double.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
local_dir="$root/deploy/local"
work="$root/target/docker"
bin="${SWITCHYARD_BIN_DIR:-$root/target/debug}"
mkdir -p "$work"
# The classic builder: it needs no BuildKit frontend image, which no registry could give.
export DOCKER_BUILDKIT=0

# --- the Debian mirror and suite apt uses here ---------------------------------------------
mirror_and_suite() {
  local mirror="" suite=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)"
    suite="$(awk '/^Suites:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)"
  fi
  if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    read -r mirror suite < <(awk '$1 == "deb" && $2 !~ /security/ {
      for (i = 2; i <= NF; i++) if ($i !~ /^\[/) { print $i, $(i + 1); exit } }' /etc/apt/sources.list) || true
  fi
  echo "${SWITCHYARD_DEBIAN_MIRROR:-${mirror:-http://deb.debian.org/debian}}" \
       "${SWITCHYARD_DEBIAN_SUITE:-${suite:-bookworm}}"
}

hash_of() { cat "$@" | sha256sum | cut -c1-16; }

# The hash label of an image, or nothing when it does not exist.
label_of() { docker image inspect --format '{{ index .Config.Labels "switchyard.inputs" }}' "$1" 2>/dev/null || true; }

# --- base -----------------------------------------------------------------------------------
build_base() {
  read -r mirror suite < <(mirror_and_suite)
  local packages hash
  packages="$(grep -v '^#' "$local_dir/base-packages.txt" | tr -s ' \n' ',' | sed 's/^,//; s/,$//')"
  hash="$(printf '%s\n%s\n%s\n' "$packages" "$suite" "$mirror" | sha256sum | cut -c1-16)"
  BASE="switchyard-local/base:$hash"
  if docker image inspect "$BASE" >/dev/null 2>&1; then
    echo "images: $BASE (cached)"
    return
  fi
  command -v debootstrap >/dev/null 2>&1 || {
    echo "images: debootstrap missing: run scripts/install-deps.sh (apt-get install debootstrap)" >&2; exit 1; }
  [ "$(id -u)" -eq 0 ] || { echo "images: the base image's debootstrap needs root" >&2; exit 1; }
  local rootfs="$work/base-$hash"
  echo "images: debootstrap $suite from $mirror with $packages (a few minutes, once)"
  rm -rf "$rootfs"
  debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || {
    echo "images: debootstrap failed; the end of $work/debootstrap.log:" >&2
    tail -20 "$work/debootstrap.log" >&2; exit 1; }
  # The packaged services are not started by an init here; apt lists and caches go.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["bash"]' - "$BASE" >/dev/null
  rm -rf "$rootfs"
  echo "images: $BASE built"
}

# build NAME CONTEXT DOCKERFILE [docker build args...]: builds when the context changed.
build() {
  local image="$1" context="$2" dockerfile="$3"; shift 3
  local hash
  hash="$( (cd "$context" && find . -type f -print0 | sort -z | xargs -0 sha256sum);
           sha256sum "$dockerfile"; echo "$BASE $*" ) | sha256sum | cut -c1-16)"
  if [ "$(label_of "$image")" = "$hash" ]; then
    echo "images: $image (cached)"
    return
  fi
  local log="$work/build-${image//[\/:]/-}.log"
  # --network host: build steps need no bridge (and every container here is host-network).
  docker build --network host -f "$dockerfile" --build-arg "BASE_IMAGE=$BASE" --label "switchyard.inputs=$hash" \
    -t "$image" "$@" "$context" >"$log" 2>&1 || {
    echo "images: building $image failed; the end of $log:" >&2; tail -20 "$log" >&2; exit 1; }
  echo "images: $image built"
}

# context NAME FILES...: a build context folder holding copies of FILES (hard links where
# the file system allows), so a build sends only what the image needs.
context() {
  local dir="$work/context/$1"; shift
  rm -rf "$dir"; mkdir -p "$dir"
  local f
  for f in "$@"; do cp -rl "$f" "$dir/" 2>/dev/null || cp -r "$f" "$dir/"; done
  echo "$dir"
}

need_bin() {
  [ -x "$bin/$1" ] || { echo "images: $bin/$1 missing: cargo build -p $2" >&2; exit 1; }
}

if [ "${1:-}" = base ]; then build_base; exit 0; fi
need_bin switchyard switchyard
need_bin consul-double switchyard-consul-double
need_bin switchyard-kube-double switchyard-kube-double

build_base
build switchyard-local/switchyard:local \
  "$(context switchyard "$bin/switchyard" "$root/config")" "$root/Dockerfile" --target runtime
build switchyard-local/etcd:local "$(context etcd)" "$local_dir/images/etcd.Dockerfile"
build switchyard-local/dns:local "$(context dns "$local_dir/dns/named.conf" "$local_dir/dns/example.test.db")" \
  "$local_dir/images/dns.Dockerfile"
build switchyard-local/consul:local "$(context consul "$bin/consul-double")" \
  "$local_dir/images/consul.Dockerfile"
build switchyard-local/kubernetes:local "$(context kubernetes "$bin/switchyard-kube-double")" \
  "$local_dir/images/kubernetes.Dockerfile"
