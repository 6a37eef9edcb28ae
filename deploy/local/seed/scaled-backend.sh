#!/bin/bash
# A sample instance that registers itself in etcd (`switchyard register`, under a lease), for
# `docker compose up --scale inventory-scaled=N`: every replica runs on the host network, so
# each picks its own loopback address 127.28.1.X (retrying when one is taken) and reports
# itself as SERVICE@ADDRESS (on the host network every replica has the host's hostname).
# Stopped, it deregisters; killed, its lease (5 s) runs out.
set -u
etcd=${ETCD_URL:-http://127.28.0.3:2379}
service=${SERVICE:-inventory}
for _ in $(seq 1 20); do
    address="127.28.1.$(shuf -i 2-250 -n 1):5678"
    name="$service-scaled@$address"
    switchyard backend --listen "$address" --name "$name" &
    backend=$!
    sleep 0.5
    if kill -0 "$backend" 2>/dev/null; then
        switchyard register --etcd "$etcd" --service "$service" --address "$address" \
            --ttl 5s &
        register=$!
        trap 'kill -TERM $register $backend; wait $register' TERM INT
        echo "scaled-backend: $name serving $service at $address"
        wait -n "$backend" "$register"
        kill -TERM "$register" "$backend" 2>/dev/null
        exit 1
    fi
done
echo "scaled-backend: no free loopback address found" >&2
exit 1
