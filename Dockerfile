# syntax=docker/dockerfile:1
# The switchyard gateway image (docker-compose.yml builds it as switchyard:local).
#
#   docker build -t switchyard .
#   docker run -p 8080:8080 -p 9901:9901 \
#     -e SWITCHYARD__SERVER__LISTEN=0.0.0.0:8080 -e SWITCHYARD__ADMIN__LISTEN=0.0.0.0:9901 \
#     switchyard --config /etc/switchyard/switchyard.toml
#
# Without a container registry (the tests, `make images`): stage `runtime` takes a binary
# built on the host from the build context's root, on a base image given by BASE_IMAGE:
#
#   docker build --target runtime --build-arg BASE_IMAGE=switchyard-local/base:HASH CONTEXT
#
# where CONTEXT holds `switchyard` and `config/` (scripts/docker/images.sh makes it). It comes
# before the build stage so that the classic builder, which builds every stage up to the
# target, never needs the Rust image; BuildKit skips it in a plain `docker build .`.
ARG BASE_IMAGE=debian:bookworm-slim

# The runtime image without its binary: CA roots for https registries, the example configs,
# and a non-root user owning the state directory ([state] dir = /var/lib/switchyard).
FROM ${BASE_IMAGE} AS base
RUN if [ ! -e /etc/ssl/certs/ca-certificates.crt ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && groupadd --system --gid 10001 switchyard \
    && useradd --system --uid 10001 --gid switchyard --home-dir /var/lib/switchyard \
       --shell /usr/sbin/nologin switchyard \
    && mkdir -p /var/lib/switchyard /etc/switchyard \
    && chown switchyard:switchyard /var/lib/switchyard
COPY config/ /etc/switchyard/
WORKDIR /var/lib/switchyard
EXPOSE 8080 9901
ENTRYPOINT ["switchyard"]
CMD ["--config", "/etc/switchyard/mixed.toml"]

# Stage `runtime`: the binary built on the host.
FROM base AS runtime
COPY switchyard /usr/local/bin/switchyard
USER switchyard:switchyard

# Build stage: the workspace with the Rust toolchain. etcd-client's generated gRPC code needs
# protoc: scripts/with-protoc.sh takes the one the protoc-bin-vendored crate ships, as
# `make demo` does (ARCHITECTURE.md, "Building without protoc").
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    scripts/with-protoc.sh cargo build --release --locked -p switchyard \
    && cp target/release/switchyard /usr/local/bin/switchyard

# The image users build: the base with the binary of the build stage.
FROM base
COPY --from=build /usr/local/bin/switchyard /usr/local/bin/switchyard
USER switchyard:switchyard
