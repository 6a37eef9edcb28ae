# The project's Consul agent double (integration-tests/consul-double), built on the host,
# on the local base image (scripts/docker/images.sh): no Consul image can be pulled here.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY consul-double /usr/local/bin/consul-double
ENTRYPOINT ["consul-double"]
