# Switchyard: the two commands a newcomer needs are `make demo` and `make test`.
.PHONY: demo demo-build test build lint fmt bench bench-pinned bench-unpinned bench-h2 bench-tls bench-idle bench-scale bench-allocs bench-cost bench-grpc fuzz clean images compose-up compose-down compose-test

CARGO ?= cargo

## Run the gateway on its embedded demo config, with three local echo instances.
# scripts/with-protoc.sh finds a protoc for etcd-client's build script (the vendored one when
# none is installed), or stops with one line saying what to install.
demo:
	scripts/with-protoc.sh $(CARGO) run -p switchyard -- demo

## What `make demo` builds, without running it (CI builds it with no protoc on the PATH:
## scripts/check-build-without-protoc.sh).
demo-build:
	scripts/with-protoc.sh $(CARGO) build -p switchyard

## Install what the tests need (Debian), build, and run every test.
# The workspace's test build also builds target/debug/switchyard (crates/switchyard has
# integration tests), which the end-to-end tests start: no separate build step.
# The compose drills need the composed project: `make compose-test` runs them after it.
test:
	scripts/install-deps.sh
	$(CARGO) nextest run --workspace --no-fail-fast -E 'not binary(compose_drills)'
	$(MAKE) compose-test

build:
	scripts/with-protoc.sh $(CARGO) build --release -p switchyard

## Loopback comparison with nginx, HAProxy and Caddy in front of one nginx backend
## (BENCHMARKS.md): the pinned set-up, then the unpinned one, then the micro-benchmarks.
## BENCH_ROUNDS=5 for the rotated rounds the "where it stands" table quotes.
BENCH_ROUNDS ?= 1
bench: bench-pinned bench-unpinned
	$(CARGO) bench -p switchyard-proxy

## 1 proxy worker pinned to CPU 1; wrk -t1 and the backend on CPU 0; 32 connections.
bench-pinned:
	SETUP=pinned ROUNDS=$(BENCH_ROUNDS) bash bench/run.sh

## 2 proxy workers, nothing pinned; wrk -t1; 64 connections.
bench-unpinned:
	SETUP=unpinned ROUNDS=$(BENCH_ROUNDS) bash bench/run.sh

## HTTP/2 clients (h2load, h2c with prior knowledge) to the HTTP/1.1 backend, 1 and 100
## streams per connection; MODE=h2 in bench/run.sh for TLS with ALPN h2.
bench-h2:
	SETUP=pinned MODE=h2c STREAMS=1 ROUNDS=$(BENCH_ROUNDS) bash bench/run.sh
	SETUP=pinned MODE=h2c STREAMS=100 ROUNDS=$(BENCH_ROUNDS) bash bench/run.sh

## TLS termination (ECDSA P-256): keep-alive HTTPS requests/s (wrk), then full handshakes/s
## (openssl s_time -new).
bench-tls:
	SETUP=pinned MODE=https ROUNDS=$(BENCH_ROUNDS) bash bench/run.sh
	SETUP=pinned MODE=handshake ROUNDS=$(BENCH_ROUNDS) bash bench/run.sh

## 10,000 idle keep-alive client connections: RSS per connection.
bench-idle:
	SETUP=pinned MODE=idle ROUNDS=$(BENCH_ROUNDS) bash bench/run.sh

## The scale run (BENCHMARKS.md §3): real etcd, 10,000 routes, 1,000 upstreams, 100,000
## endpoints, 100 endpoint changes/s under wrk load; ~8 minutes.
bench-scale:
	bash bench/scale.sh

## Heap allocations per proxied request, counted by heaptrack (BENCHMARKS.md §1).
bench-allocs:
	bash bench/allocs.sh

## Instructions (callgrind) and system calls (perf stat) per proxied request, against nginx
## and HAProxy: counts that do not move with the machine's load (BENCHMARKS.md §1).
bench-cost:
	bash bench/cost.sh

## The gRPC rows: unary calls over h2c through Switchyard, nginx grpc_pass and HAProxy proto h2
## (h2load), and an HTTP/2 client to an HTTP/1.1 upstream (docs/grpc.md).
bench-grpc:
	bash bench/grpc.sh

## Longer fuzzing with cargo-fuzz (nightly); CI runs the short stable smoke run (docs/fuzzing.md).
fuzz:
	fuzz/run.sh

## Formatting and lints, as CI checks them.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean

## Every image of the local compose project, built without a registry (docs/compose.md):
## a Debian base by debootstrap (once), then the gateway, etcd, bind9 and the doubles on it.
images:
	scripts/docker/engine.sh ensure
	$(CARGO) build -p switchyard -p switchyard-consul-double -p switchyard-kube-double
	scripts/docker/images.sh

## The docker-compose.yml demo from local images: gateway 127.0.0.1:8080, admin 127.0.0.1:9901.
compose-up: images
	scripts/docker/compose.sh up -d
	scripts/docker/compose-wait.sh

compose-down:
	scripts/docker/compose.sh down -v --remove-orphans

## The mixed-registry tests and the drills against the local compose project (make test runs it).
compose-test:
	scripts/docker/compose-test.sh
