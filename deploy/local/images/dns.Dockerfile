# bind9 serving the demo zone example.test with dynamic updates from 127.0.0.1, on the
# local base image (scripts/docker/images.sh). The zone's journal lives in /var/lib/named.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY named.conf /etc/switchyard-dns/named.conf
COPY example.test.db /etc/switchyard-dns/example.test.db
RUN mkdir -p /var/lib/named \
    && cp /etc/switchyard-dns/example.test.db /var/lib/named/example.test.db \
    && named-checkconf /etc/switchyard-dns/named.conf \
    && named-checkzone example.test /var/lib/named/example.test.db
ENTRYPOINT ["named", "-g", "-c", "/etc/switchyard-dns/named.conf"]
