#!/bin/sh
# Puts the docker-compose demo's sample instances into etcd, in Switchyard's format
# (<prefix>/<service>/<instance> = {"host","port"}), through etcd's HTTP/JSON gateway
# (POST /v3/kv/put, key and value base64-encoded). Without a lease: they stay until deleted.
set -eu
etcd=${ETCD_URL:-http://etcd:2379}
prefix=${SWITCHYARD_PREFIX:-/switchyard/services}

tries=0
until curl -fsS "$etcd/health" | grep -q '"health":"true"'; do
    tries=$((tries + 1))
    if [ "$tries" -gt 120 ]; then
        echo "seed-etcd: etcd at $etcd not healthy within 120 s" >&2
        exit 1
    fi
    sleep 1
done

b64() {
    printf '%s' "$1" | base64 | tr -d '\n'
}

# put SERVICE INSTANCE HOST PORT
put() {
    key="$prefix/$1/$2"
    value="{\"host\":\"$3\",\"port\":$4}"
    curl -fsS -X POST "$etcd/v3/kv/put" -d "{\"key\":\"$(b64 "$key")\",\"value\":\"$(b64 "$value")\"}" >/dev/null
    echo "seed-etcd: put $key = $value"
}

put inventory etcd-inventory-1 etcd-inventory-1 5678
put inventory etcd-inventory-2 etcd-inventory-2 5678
