# agent_lib.sh - what the agent scripts share. Source it first thing, with $src the source tree:
#     set -euo pipefail
#     src=${PV_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
#     . "$src/tests/k8s/agent_lib.sh"
#     agent_begin NAME    # $tmp, the clean-up on exit, $pods, $tmp/scratch, $tmp/cache, $tmp/cloud
# It sets $PODVAULT (absolute), sources tests/k8s/lib.sh (the stand-in, kc, wait_for) and skips
# (exit 0) where kubectl, python3 or the program is missing. Then: agents started and stopped
# (killed with their jobs on exit, after what on_exit registered), pass and fail (with the logs'
# tails), Velero's namespace, repository Secret and BackupStorageLocation, pods and
# PodVolumeBackups / PodVolumeRestores created, phases awaited, `podvault request` run.

PODVAULT=${PODVAULT:-${PV_BUILD_DIR:-$src/build}/podvault}
PODVAULT=$(cd "$(dirname "$PODVAULT")" 2>/dev/null && pwd)/$(basename "$PODVAULT")
. "$src/tests/k8s/lib.sh"

skip() {
    echo "SKIP: $*"
    exit 0
}
command -v kubectl >/dev/null || skip "kubectl is not installed"
command -v python3 >/dev/null || skip "python3 is not installed"
[ -x "$PODVAULT" ] || skip "no podvault program at $PODVAULT"

agents=()    # "name pid" of running agents
exit_cmds=() # what on_exit registered
# on_exit COMMAND: a command (a string, evaluated at exit) that cleanup runs before the rest.
on_exit() { exit_cmds+=("$1"); }
# kill_tree PID: the agent and its jobs, which lead process groups of their own.
kill_tree() {
    local child
    for child in $(pgrep -P "$1" || true); do kill -9 -- "-$child" 2>/dev/null || true; done
    kill -9 "$1" 2>/dev/null || true
}
cleanup() {
    local a c
    for c in "${exit_cmds[@]}"; do eval "$c" || true; done
    for a in "${agents[@]}"; do kill_tree "${a#* }"; done
    k8s_stop
    if [ -n "${KEEP_TMP:-}" ]; then echo "kept $tmp"; else rm -rf -- "${tmp:?}"; fi
}
# agent_begin NAME: the test's directory $tmp (pv-NAME.XXXXXX, removed on exit unless KEEP_TMP
# is set), the kubelet pods directory $pods, the agents' scratch and cache directories and an
# empty credentials file $tmp/cloud.
agent_begin() {
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/pv-$1.XXXXXX") || { echo "FAIL: mktemp failed" >&2; exit 1; }
    : "${tmp:?mktemp gave no work directory}"
    trap cleanup EXIT
    pods=$tmp/kubelet/pods
    mkdir -p "$pods" "$tmp/scratch" "$tmp/cache"
    : >"$tmp/cloud"
}
# fail MESSAGE: says it with the tails of the agents' logs and of the stand-in's; exits 1.
fail() {
    echo "FAIL: $*" >&2
    local f
    for f in "$tmp"/agent*.log; do
        [ -f "$f" ] && { echo "--- $f (tail)" >&2; tail -n 25 "$f" >&2; }
    done
    if [ -f "$tmp/k8s.log" ]; then
        echo "--- stand-in log (tail)" >&2
        tail -n 15 "$tmp/k8s.log" >&2
    fi
    exit 1
}
pass() { echo "ok - $*"; }
# expect FILE TEXT: FILE holds TEXT, or the test fails showing FILE.
expect() { grep -qF -- "$2" "$1" || { cat "$1" >&2; fail "$1 lacks: $2"; }; }
# req ARGS...: `podvault request` against the stand-in and Velero's namespace, at most 120 s.
req() { timeout 120 "$PODVAULT" request "$@" --server "$K8S_URL" --velero-namespace velero; }

# store_spec DIR [default]: the spec (below provider) of a BackupStorageLocation whose
# repositories live in DIR (podvault's podvaultPath); "default" marks it the default location.
store_spec() {
    [ "${2:-}" = default ] && printf 'default: true\n  '
    printf 'config: {podvaultPath: "%s"}\n  objectStorage: {bucket: unused}' "$1"
}
# test_location TAG: where the test's location is: the S3 bucket of PV_TEST_S3 (with the AWS_*
# keys of tests/s3-env.sh) under a prefix of its own, else (PV_TEST_AZURE and
# AZURE_STORAGE_CONNECTION_STRING, from tests/azure-env.sh) an azure location in that container,
# with its key in a Velero-style AZURE_*=... credentials file, else the directory $tmp/store. Sets
# location_provider (aws, or azure), location_config (the BackupStorageLocation spec below
# provider), loc_root (the location's root
# as podvault names it: where Velero's backups/ and podvault's plugins/ are), repo_of NS (a
# namespace's repository), s3_opts (the podvault options for it), and writes the keys into
# $tmp/cloud, the agent's credentials file. objs ARGS... runs tests/tools/pv_objects on loc_root,
# to do to the location what Velero's server does.
test_location() {
    if [ -n "${PV_TEST_S3:-}" ]; then
        local s3=${PV_TEST_S3#s3:} # http://host:port/bucket[/prefix]
        local s3url=${s3%%://*}://$(cut -d/ -f3 <<<"$s3") bucket prefix
        bucket=$(cut -d/ -f4 <<<"$s3")
        prefix=$(cut -d/ -f5- <<<"$s3")
        prefix=${prefix:+$prefix/}$1-$$-$RANDOM
        printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' \
            "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >"$tmp/cloud"
        location_config="config: {region: us-east-1, s3Url: \"$s3url\", s3ForcePathStyle: \"true\"}
  objectStorage: {bucket: $bucket, prefix: \"$prefix\"}"
        loc_root=s3:$s3url/$bucket/$prefix
        s3_opts=(--s3-path-style --s3-region us-east-1)
    elif [ -n "${PV_TEST_AZURE:-}" ] && [ -n "${AZURE_STORAGE_CONNECTION_STRING:-}" ]; then
        local az=${PV_TEST_AZURE#azure:} container prefix account key endpoint
        container=${az%%/*}
        prefix=$([ "$az" != "$container" ] && echo "${az#*/}/")$1-$$-$RANDOM
        account=$(sed -n 's/.*AccountName=\([^;]*\).*/\1/p' <<<"$AZURE_STORAGE_CONNECTION_STRING")
        key=$(sed -n 's/.*AccountKey=\([^;]*\).*/\1/p' <<<"$AZURE_STORAGE_CONNECTION_STRING")
        endpoint=$(sed -n 's/.*BlobEndpoint=\([^;]*\).*/\1/p' <<<"$AZURE_STORAGE_CONNECTION_STRING")
        printf 'AZURE_SUBSCRIPTION_ID=unused\nAZURE_STORAGE_ACCOUNT_ACCESS_KEY=%s\nAZURE_CLOUD_NAME=AzurePublicCloud\n' \
            "$key" >"$tmp/cloud"
        location_provider=azure
        location_config="config: {storageAccount: $account, storageAccountURI: \"$endpoint\", storageAccountKeyEnvVar: AZURE_STORAGE_ACCOUNT_ACCESS_KEY}
  objectStorage: {bucket: $container, prefix: \"$prefix\"}"
        loc_root=azure:$container/$prefix
        s3_opts=()
    else
        mkdir -p "$tmp/store"
        location_config=$(store_spec "$tmp/store")
        loc_root=$tmp/store
        s3_opts=()
    fi
}
repo_of() { echo "$loc_root/plugins/podvault/$1"; }
objs() { "$(dirname "$PODVAULT")/pv_objects" "$loc_root" "$@"; }

# velero_location [NAME [SPEC]]: the repositories' password Secret (static-passw0rd) and the
# BackupStorageLocation NAME (default "default") of provider aws with SPEC (default: its
# repositories in $tmp/store).
velero_location() {
    local name=${1:-default} spec=${2:-}
    [ -n "$spec" ] || spec=$(store_spec "$tmp/store")
    kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Secret
metadata: {name: velero-repo-credentials, namespace: velero}
stringData: {repository-password: static-passw0rd}
---
apiVersion: velero.io/v1
kind: BackupStorageLocation
metadata: {name: $name, namespace: velero}
spec:
  provider: ${location_provider:-aws}
  $spec
EOF
}
# velero_setup [RBAC-FILE...]: Velero's namespace, the RBAC files (of deploy/) applied, and
# velero_location's Secret and default location in $tmp/store.
velero_setup() {
    local f
    kc create namespace velero >/dev/null
    for f in "$@"; do kc apply -f "$f" >/dev/null; done
    velero_location
}

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

# bound_claim NS CLAIM PV SOURCE [PV-ANNOTATIONS]: a PersistentVolume PV of 1Gi with the volume
# source SOURCE (e.g. "nfs: {server: nfs.example, path: /x}") and the annotations (the insides
# of a flow map), and the claim CLAIM in NS bound to it.
bound_claim() {
    kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata:
  name: $3
  annotations: {${5:-}}
spec: {capacity: {storage: 1Gi}, accessModes: [ReadWriteOnce], $4}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $2, namespace: $1}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}, volumeName: $3}
EOF
}

# vol_of UID: where the kubelet mounts the emptyDir volume "data" of pod UID.
vol_of() { echo "$pods/$1/volumes/kubernetes.io~empty-dir/data"; }

# app_pod NS NAME NODE LABELS ANNOTATIONS [restore] <SPEC: a pod with those labels and
# annotations (the insides of flow maps, "app: web") whose containers and volumes are the YAML on
# stdin (two spaces in, under spec); prints its UID once it runs, or, with "restore", once it is
# a pod of a restore held in its running restore-wait init container.
app_pod() {
    local init=""
    [ "${6:-}" = restore ] && init="initContainers: [{name: restore-wait, image: velero/velero-restore-helper}]"
    {
        cat <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $2
  namespace: $1
  labels: {$4}
  annotations: {$5}
spec:
  nodeName: $3
  $init
EOF
        cat
    } | kc apply -f - >/dev/null
    if [ -n "$init" ]; then k8s_restore_wait "$2" "$1" running; else k8s_running "$2" "$1"; fi
    kc get pod "$2" -n "$1" -o jsonpath='{.metadata.uid}'
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
agent_pid() { # NAME: the pid of that running agent
    local a
    for a in "${agents[@]}"; do
        if [ "${a% *}" = "$1" ]; then echo "${a#* }"; fi
    done
}
stop_agent() { # NAME [TERM|KILL]: TERM (the default) as the kubelet stops a pod; KILL as a node dies
    local pid
    pid=$(agent_pid "$1")
    if [ "${2:-TERM}" = KILL ]; then kill_tree "$pid"; else kill -TERM "$pid" 2>/dev/null || true; fi
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

