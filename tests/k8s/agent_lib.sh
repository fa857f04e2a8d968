# agent_lib.sh - what the agent scripts share (source it after tests/k8s/lib.sh, with $tmp the
# test's directory, $pods the kubelet pods directory, $PODVAULT the program and the stand-in
# started): agents started and stopped (killed with their jobs on exit), pass and fail (with the
# logs' tails), pods and PodVolumeBackups / PodVolumeRestores created, phases awaited.

agents=() # "name pid" of running agents
# kill_tree PID: the agent and its jobs, which lead process groups of their own.
kill_tree() {
    local child
    for child in $(pgrep -P "$1" || true); do kill -9 -- "-$child" 2>/dev/null || true; done
    kill -9 "$1" 2>/dev/null || true
}
cleanup() {
    local a
    for a in "${agents[@]}"; do kill_tree "${a#* }"; done
    k8s_stop
    if [ -n "${KEEP_TMP:-}" ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*" >&2
    local f
    for f in "$tmp"/agent-*.log; do
        [ -f "$f" ] && { echo "--- $f (tail)" >&2; tail -n 25 "$f" >&2; }
    done
    echo "--- stand-in log (tail)" >&2
    tail -n 15 "$tmp/k8s.log" >&2
    exit 1
}
pass() { echo "ok - $*"; }

# mkpod NAME NODE VOLUME-YAML: creates a pod and returns its UID (the stand-in makes it up). Like
# a pod of Velero's restore it has the restore-wait init container, not started yet.
mkpod() {
    kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: default}
spec:
  nodeName: $2
  initContainers: [{name: restore-wait, image: velero/velero-restore-helper, volumeMounts: [{name: data, mountPath: /restores/data}]}]
  containers: [{name: app, image: busybox, volumeMounts: [{name: data, mountPath: /data}]}]
  volumes: [$3]
EOF
    kc get pod "$1" -o jsonpath='{.metadata.uid}'
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_agent NAME NODE [extra options]: runs an agent in a session of its own, connected by
# --server unless the options say otherwise.
start_agent() {
    local name=$1 node=$2
    shift 2
    local port conn=(--server "$K8S_URL")
    [[ " $* " == *" --kubeconfig "* ]] && conn=()
    port=$(free_port)
    eval "port_$name=$port"
    setsid "$PODVAULT" agent --node "$node" --namespace velero --host-pods "$pods" \
        "${conn[@]}" --metrics-address "127.0.0.1:$port" --cache-dir "$tmp/cache" \
        --scratch-dir "$tmp/scratch" --credentials-file "$tmp/cloud" --progress-interval 1 \
        --shutdown-grace 2 "$@" >>"$tmp/agent-$name.log" 2>&1 &
    agents+=("$name $!")
    wait_for 20 curl -sf "http://127.0.0.1:$port/healthz" >/dev/null ||
        fail "agent $name did not come up"
}
agent_pid() {
    local a
    for a in "${agents[@]}"; do [ "${a% *}" = "$1" ] && echo "${a#* }"; done
}
stop_agent() { # NAME TERM|KILL: TERM as the kubelet stops a pod; KILL as a node dies
    local pid
    pid=$(agent_pid "$1")
    if [ "$2" = KILL ]; then kill_tree "$pid"; else kill -TERM "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
    local keep=()
    local a
    for a in "${agents[@]}"; do [ "${a% *}" = "$1" ] || keep+=("$a"); done
    agents=("${keep[@]}")
}

field() { kc get "$1" "$2" -n velero -o jsonpath="{$3}"; }
phase_is() { [ "$(field "$1" "$2" .status.phase)" = "$3" ]; }
wait_phase() { # KIND NAME PHASE [SECONDS]
    wait_for "${4:-60}" phase_is "$1" "$2" "$3" ||
        fail "$1 $2: phase '$(field "$1" "$2" .status.phase)', wanted $3 (message: $(field "$1" "$2" .status.message))"
}

# create_pvb NAME NODE POD UID VOLUME [BSL]
create_pvb() {
    kc create -f - >/dev/null <<EOF
apiVersion: velero.io/v1
kind: PodVolumeBackup
metadata:
  name: $1
  namespace: velero
  labels: {velero.io/backup-name: nightly}
spec:
  node: $2
  pod: {kind: Pod, namespace: default, name: $3, uid: "$4"}
  volume: $5
  backupStorageLocation: ${6:-default}
  repoIdentifier: ""
  uploaderType: kopia
  tags: {backup: nightly, pod: $3, ns: default, volume: $5}
EOF
}

# create_pvr NAME POD UID VOLUME SNAPSHOT RESTORE-UID [MORE-SPEC-YAML]
create_pvr() {
    kc create -f - >/dev/null <<EOF
apiVersion: velero.io/v1
kind: PodVolumeRestore
metadata:
  name: $1
  namespace: velero
  labels: {velero.io/restore-name: r1, velero.io/restore-uid: "$6"}
  ownerReferences: [{apiVersion: velero.io/v1, kind: Restore, name: r1, uid: "$6", controller: true}]
spec:
  pod: {kind: Pod, namespace: default, name: $2, uid: "$3"}
  volume: $4
  backupStorageLocation: default
  repoIdentifier: ""
  uploaderType: kopia
  snapshotID: "$5"
  sourceNamespace: default
  ${7:-}
EOF
}

