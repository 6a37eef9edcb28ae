#!/bin/sh
# Exports k3s's admin kubeconfig for the docker-compose demo. k3s writes it (server
# https://127.0.0.1:6443) to the shared volume mounted at /output (K3S_KUBECONFIG_OUTPUT).
# This writes:
#   /kube/kubeconfig.yaml      server https://kubernetes:6443, for the gateway and the seed
#                              container (the k3s certificate names "kubernetes": --tls-san)
#   /host-out/kubeconfig.yaml  server https://127.0.0.1:6443 unchanged, for the host
#                              (port 6443 is published): kubectl and the integration tests
set -eu
src=/output/kubeconfig.yaml
tries=0
until [ -s "$src" ]; do
    tries=$((tries + 1))
    if [ "$tries" -gt 300 ]; then
        echo "export-kubeconfig: k3s wrote no $src within 300 s" >&2
        exit 1
    fi
    sleep 1
done
grep -q 'server: https://127.0.0.1:6443' "$src" || {
    echo "export-kubeconfig: unexpected server line in $src:" >&2
    grep 'server:' "$src" >&2
    exit 1
}
sed 's#server: https://127.0.0.1:6443#server: https://kubernetes:6443#' "$src" > /kube/kubeconfig.yaml.tmp
chmod 644 /kube/kubeconfig.yaml.tmp
mv /kube/kubeconfig.yaml.tmp /kube/kubeconfig.yaml
if [ -d /host-out ]; then
    cp "$src" /host-out/kubeconfig.yaml
    chmod 644 /host-out/kubeconfig.yaml
fi
echo "export-kubeconfig: wrote /kube/kubeconfig.yaml (server https://kubernetes:6443) and deploy/compose/out/kubeconfig.yaml (server https://127.0.0.1:6443)"
