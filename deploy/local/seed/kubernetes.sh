#!/bin/sh
# Creates the local compose project's Kubernetes objects in the API-server double, through
# the real API (POST .../endpointslices): what k3s makes from deploy/compose/k3s/manifests in
# docker-compose.yml. Services demo/orders and demo/web, each one EndpointSlice with its
# instance (k8s-orders-1, k8s-web-1) on its loopback address, port "http" 5678.
set -eu
api=${KUBE_API:-http://127.28.0.10:6443}

tries=0
until curl -fsS "$api/version" >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -gt 120 ]; then
        echo "seed-kubernetes: no API server at $api within 120 s" >&2
        exit 1
    fi
    sleep 1
done

# slice NAMESPACE SERVICE INSTANCE ADDRESS PORT
slice() {
    curl -fsS -X POST -H 'Content-Type: application/json' \
        "$api/apis/discovery.k8s.io/v1/namespaces/$1/endpointslices" -d "{
        \"apiVersion\": \"discovery.k8s.io/v1\",
        \"kind\": \"EndpointSlice\",
        \"metadata\": {\"name\": \"$2-local\", \"namespace\": \"$1\",
                     \"labels\": {\"kubernetes.io/service-name\": \"$2\"}},
        \"addressType\": \"IPv4\",
        \"endpoints\": [{\"addresses\": [\"$4\"], \"conditions\": {\"ready\": true},
                        \"targetRef\": {\"kind\": \"Pod\", \"name\": \"$3\", \"namespace\": \"$1\"}}],
        \"ports\": [{\"name\": \"http\", \"port\": $5, \"protocol\": \"TCP\"}]
    }" >/dev/null
    echo "seed-kubernetes: $1/$2 -> $3 at $4:$5"
}

slice demo orders k8s-orders-1 127.28.0.41 5678
slice demo web k8s-web-1 127.28.0.42 5678
