#!/bin/sh
# Puts the local compose project's sample instances into etcd, as deploy/compose/seed/etcd.sh
# does: same service and instance names, each at its loopback address
# (deploy/local/compose.yml). Without a lease: they stay until deleted.
set -eu
etcd=${ETCD_URL:-http://127.28.0.3:2379}
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

put inventory etcd-inventory-1 127.28.0.25 5678
put inventory etcd-inventory-2 127.28.0.26 5678
