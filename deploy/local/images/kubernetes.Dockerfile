# The project's Kubernetes API-server double (integration-tests/kube-double), built on the
# host, on the local base image (scripts/docker/images.sh): no k3s image can be pulled here.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY switchyard-kube-double /usr/local/bin/switchyard-kube-double
RUN mkdir -p /kube
ENTRYPOINT ["switchyard-kube-double"]
