# etcd from Debian's etcd-server, on the local base image (scripts/docker/images.sh).
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN etcd --version >/dev/null && mkdir -p /var/lib/etcd
ENTRYPOINT ["etcd"]
