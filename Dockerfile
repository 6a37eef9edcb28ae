# syntax=docker/dockerfile:1
# The switchyard gateway image (docker-compose.yml builds it as switchyard:local).
#
#   docker build -t switchyard .
#   docker run -p 8080:8080 -p 9901:9901 \
#     -e SWITCHYARD__SERVER__LISTEN=0.0.0.0:8080 -e SWITCHYARD__ADMIN__LISTEN=0.0.0.0:9901 \
#     switchyard --config /etc/switchyard/switchyard.toml
#
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

# Runtime stage: the binary, CA roots for https registries, the example configs, and a
# non-root user owning the state directory ([state] dir = /var/lib/switchyard).
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 switchyard \
    && useradd --system --uid 10001 --gid switchyard --home-dir /var/lib/switchyard \
       --shell /usr/sbin/nologin switchyard \
    && mkdir -p /var/lib/switchyard /etc/switchyard \
    && chown switchyard:switchyard /var/lib/switchyard
COPY --from=build /usr/local/bin/switchyard /usr/local/bin/switchyard
COPY config/ /etc/switchyard/
USER switchyard:switchyard
WORKDIR /var/lib/switchyard
EXPOSE 8080 9901
ENTRYPOINT ["switchyard"]
CMD ["--config", "/etc/switchyard/mixed.toml"]
