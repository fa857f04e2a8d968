# lib.sh - shell helpers for tests that drive the API server stand-in (source it; bash only).
# k8s_start DIR [apiserver options...]: starts tests/k8s/apiserver.py on a free loopback port and
# sets K8S_URL, K8S_PID; `kc` then runs the real kubectl against it with a private cache dir.
# k8s_stop ends exactly the server k8s_start began. k8s_admin HOOK [JSON] calls a test hook.

K8S_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

k8s_start() {
    local dir=$1
    shift
    K8S_DIR=$dir
    rm -f "$dir/k8s.port"
    python3 "$K8S_LIB_DIR/apiserver.py" --port-file "$dir/k8s.port" "$@" \
        >"$dir/k8s.log" 2>&1 &
    K8S_PID=$!
    local i
    for i in $(seq 1 100); do
        [ -s "$dir/k8s.port" ] && break
        kill -0 "$K8S_PID" 2>/dev/null || { cat "$dir/k8s.log" >&2; return 1; }
        sleep 0.1
    done
    [ -s "$dir/k8s.port" ] || { echo "k8s stand-in did not start" >&2; return 1; }
    K8S_URL=http://127.0.0.1:$(cat "$dir/k8s.port")
}

k8s_stop() {
    if [ -n "${K8S_PID:-}" ]; then
        kill "$K8S_PID" 2>/dev/null
        wait "$K8S_PID" 2>/dev/null
        K8S_PID=
    fi
}

kc() {
    kubectl --server "$K8S_URL" --cache-dir "$K8S_DIR/kube-cache" "$@"
}

k8s_admin() {
    local hook=$1 body=${2:-}
    if [ -n "$body" ]; then
        curl -sS -X POST -H 'Content-Type: application/json' -d "$body" "$K8S_URL/admin/$hook"
    elif [ "$hook" = stats ]; then
        curl -sS "$K8S_URL/admin/stats"
    else
        curl -sS -X POST "$K8S_URL/admin/$hook"
    fi
}

# wait_for SECONDS COMMAND...: retries COMMAND every 0.2 s until it succeeds or time is up.
wait_for() {
    local secs=$1
    shift
    local end=$((SECONDS + secs))
    until "$@"; do
        [ $SECONDS -ge $end ] && return 1
        sleep 0.2
    done
}

# k8s_tls_setup DIR TOKEN=NAMESPACE/SERVICEACCOUNT: when openssl is there, makes a CA and a
# server certificate for 127.0.0.1 in DIR and sets K8S_TLS_ARGS to the k8s_start options of a
# TLS listener that holds that token to the ServiceAccount's RBAC rules (port in DIR/k8s.tls-port,
# CA in DIR/ca.pem). Without openssl K8S_TLS_ARGS is empty.
k8s_tls_setup() {
    local dir=$1 token=$2
    K8S_TLS_ARGS=()
    command -v openssl >/dev/null || return 0
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=test-ca -keyout "$dir/ca.key" \
        -out "$dir/ca.pem" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout "$dir/srv.key" \
        -out "$dir/srv.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\n' >"$dir/san.ext"
    openssl x509 -req -in "$dir/srv.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
        -days 1 -extfile "$dir/san.ext" -out "$dir/srv.pem" 2>/dev/null
    K8S_TLS_ARGS=(--tls-cert "$dir/srv.pem" --tls-key "$dir/srv.key"
        --tls-port-file "$dir/k8s.tls-port" --sa-token "$token")
}

# k8s_running POD NAMESPACE: the stand-in creates pods Pending, as a scheduler would leave them.
k8s_running() {
    kc patch pod "$1" -n "$2" --subresource=status --type=merge \
        -p '{"status":{"phase":"Running"}}' >/dev/null
}

# k8s_restore_wait POD NAMESPACE STATE: the kubelet's report of the pod's restore-wait init
# container, STATE running, waiting or terminated (Velero restores only while it runs).
k8s_restore_wait() {
    kc patch pod "$1" -n "$2" --subresource=status --type=merge -p "{\"status\":{\"phase\":\"Pending\",
        \"initContainerStatuses\":[{\"name\":\"restore-wait\",\"ready\":false,\"restartCount\":0,
        \"image\":\"velero/velero-restore-helper\",\"imageID\":\"\",\"state\":{\"$3\":{}}}]}}" >/dev/null
}

# k8s_node_agent NODE: the DaemonSet node-agent in velero and its pod, running on NODE: how
# `podvault request` (as Velero's server) learns that the node has an agent, and that restores
# can be served at all.
k8s_node_agent() {
    kc apply -f - >/dev/null <<EOF2
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: node-agent, namespace: velero, labels: {name: node-agent, role: node-agent}}
spec:
  selector: {matchLabels: {name: node-agent}}
  template:
    metadata: {labels: {name: node-agent, role: node-agent}}
    spec: {containers: [{name: node-agent, image: podvault}]}
---
apiVersion: v1
kind: Pod
metadata: {name: node-agent-$1, namespace: velero, labels: {name: node-agent, role: node-agent}}
spec: {nodeName: $1, containers: [{name: node-agent, image: podvault}]}
EOF2
    k8s_running "node-agent-$1" velero
}

# k8s_tls_kubeconfig DIR TOKEN: after k8s_tls_setup DIR, writes DIR/kube/config (with the CA
# beside it) for the TLS listener and that ServiceAccount token, namespace velero.
k8s_tls_kubeconfig() {
    local dir=$1 token=$2
    mkdir -p "$dir/kube"
    cp "$dir/ca.pem" "$dir/kube/ca.pem"
    cat >"$dir/kube/config" <<EOF2
apiVersion: v1
kind: Config
current-context: sa
clusters: [{name: standin, cluster: {server: "https://127.0.0.1:$(cat "$dir/k8s.tls-port")", certificate-authority: ca.pem}}]
users: [{name: sa, user: {token: $token}}]
contexts: [{name: sa, context: {cluster: standin, user: sa, namespace: velero}}]
EOF2
}

# project_version SOURCE-DIR: the release's version, project(VERSION) in CMakeLists.txt, the one
# place it is written (README "Releasing"); the image tag in deploy/ follows it.
project_version() {
    sed -n 's/^project(podvault VERSION \([0-9][0-9.]*\)[ )].*/\1/p' "$1/CMakeLists.txt"
}
