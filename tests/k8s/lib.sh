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
