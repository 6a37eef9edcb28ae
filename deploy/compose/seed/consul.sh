#!/bin/sh
# Registers the docker-compose demo's sample services with the Consul agent, through its
# HTTP API (PUT /v1/agent/service/register), each with an HTTP check the agent runs every
# 5 s. Instances are named by their compose host names; Switchyard resolves them.
# SEED_CONSUL_CHECK=ttl registers passing TTL checks instead (for agents that cannot run
# HTTP checks, such as the test double: integration-tests/tests/mixed_compose.rs).
set -eu
consul=${CONSUL_HTTP_ADDR:-http://consul:8500}
check_kind=${SEED_CONSUL_CHECK:-http}

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
    if [ "$check_kind" = ttl ]; then
        check='{"TTL": "30m", "Status": "passing"}'
    else
        check="{\"HTTP\": \"http://$3:$4/\", \"Interval\": \"5s\", \"Timeout\": \"1s\"}"
    fi
    curl -fsS -X PUT "$consul/v1/agent/service/register" -d "{
        \"ID\": \"$1\",
        \"Name\": \"$2\",
        \"Address\": \"$3\",
        \"Port\": $4,
        \"Check\": $check
    }"
    echo "seed-consul: registered $1 ($2 at $3:$4)"
}

register consul-orders-1 orders consul-orders-1 5678
register consul-orders-2 orders consul-orders-2 5678
register consul-web-1 web consul-web-1 5678
register consul-web-2 web consul-web-2 5678
