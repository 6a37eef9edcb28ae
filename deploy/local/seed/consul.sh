#!/bin/sh
# Registers the local compose project's sample services with the Consul double, as
# deploy/compose/seed/consul.sh does with a real agent: same IDs and names, each instance at
# its loopback address (deploy/local/compose.yml), with a passing TTL check (the double runs
# no HTTP checks; the gateway's own health checks watch the instances).
set -eu
consul=${CONSUL_HTTP_ADDR:-http://127.28.0.2:8500}

tries=0
until curl -fsS "$consul/v1/status/leader" | grep -q ':'; do
    tries=$((tries + 1))
    if [ "$tries" -gt 120 ]; then
        echo "seed-consul: no Consul leader at $consul within 120 s" >&2
        exit 1
    fi
    sleep 1
done

# register ID NAME HOST PORT
register() {
    curl -fsS -X PUT "$consul/v1/agent/service/register" -d "{
        \"ID\": \"$1\",
        \"Name\": \"$2\",
        \"Address\": \"$3\",
        \"Port\": $4,
        \"Check\": {\"TTL\": \"720h\", \"Status\": \"passing\"}
    }"
    echo "seed-consul: registered $1 ($2 at $3:$4)"
}

register consul-orders-1 orders 127.28.0.21 5678
register consul-orders-2 orders 127.28.0.22 5678
register consul-web-1 web 127.28.0.23 5678
register consul-web-2 web 127.28.0.24 5678
