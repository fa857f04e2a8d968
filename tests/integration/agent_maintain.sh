#!/usr/bin/env bash
# agent_maintain.sh - scheduled maintenance in a cluster, end to end against the API server
# stand-in: pods in two namespaces chosen by Velero's annotation -> `request backup --wait` (one
# agent) backs up exactly the chosen volumes into one repository per namespace -> `request restore
# --wait` brings them back byte for byte -> `podvault maintain --default-location`, connected as
# the ServiceAccount of deploy/maintenance under its RBAC (TLS, token), finds both repositories,
# runs a full maintenance of each and exits 0; `check --read-data` passes on each; a second run
# finds nothing due; a location that does not exist and a repository that cannot be opened give
# clear errors and exit 1 while the other repositories are still maintained.
set -euo pipefail
src=${PV_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
PODVAULT=${PODVAULT:-${PV_BUILD_DIR:-$src/build}/podvault}
. "$src/tests/k8s/lib.sh"

skip() {
    echo "SKIP: $*"
    exit 0
}
command -v kubectl >/dev/null || skip "kubectl is not installed"
command -v python3 >/dev/null || skip "python3 is not installed"
[ -x "$PODVAULT" ] || skip "no podvault program at $PODVAULT"
"$PODVAULT" maintain --help 2>/dev/null | grep -q -- --default-location ||
    skip "this podvault has no maintain --default-location"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/pv-agent-maintain.XXXXXX")
agent_pid=
cleanup() {
    if [ -n "$agent_pid" ]; then
        local child
        for child in $(pgrep -P "$agent_pid" || true); do kill -9 -- "-$child" 2>/dev/null || true; done
        kill -9 "$agent_pid" 2>/dev/null || true
    fi
    k8s_stop
    if [ -n "${KEEP_TMP:-}" ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*" >&2
    [ -f "$tmp/agent.log" ] && { echo "--- agent log (tail)" >&2; tail -n 25 "$tmp/agent.log" >&2; }
    echo "--- stand-in log (tail)" >&2
    tail -n 15 "$tmp/k8s.log" >&2
    exit 1
}
pass() { echo "ok - $*"; }
expect() { grep -qF -- "$2" "$1" || { cat "$1" >&2; fail "$1 lacks: $2"; }; }

# The stand-in's TLS listener holds the maintenance ServiceAccount's token to the RBAC rules of
# deploy/maintenance/rbac.yaml.
k8s_tls_setup "$tmp" "maint-token=velero/podvault-maintenance"
k8s_start "$tmp" "${K8S_TLS_ARGS[@]}" || fail "the stand-in did not start"
pods=$tmp/kubelet/pods
store=$tmp/store
mkdir -p "$pods" "$tmp/scratch" "$tmp/cache"
: >"$tmp/cloud"
req() { timeout 120 "$PODVAULT" request "$@" --server "$K8S_URL" --velero-namespace velero; }
repo_of() { echo "$store/plugins/podvault/$1"; }

kc create namespace velero >/dev/null
kc create namespace shop >/dev/null
kc create namespace crm >/dev/null
kc apply -f "$src/deploy/maintenance/rbac.yaml" >/dev/null
kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Secret
metadata: {name: velero-repo-credentials, namespace: velero}
stringData: {repository-password: static-passw0rd}
---
apiVersion: v1
kind: Secret
metadata: {name: unrelated, namespace: velero}
stringData: {x: y}
---
apiVersion: velero.io/v1
kind: BackupStorageLocation
metadata: {name: default, namespace: velero}
spec:
  provider: aws
  default: true
  config: {podvaultPath: "$store"}
  objectStorage: {bucket: unused}
---
apiVersion: velero.io/v1
kind: BackupStorageLocation
metadata: {name: other, namespace: velero}
spec:
  provider: aws
  config: {podvaultPath: "$tmp/other-store"}
  objectStorage: {bucket: unused}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: pv-data}
spec: {capacity: {storage: 1Gi}, accessModes: [ReadWriteOnce], nfs: {server: nfs.example, path: /x}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: shop}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}, volumeName: pv-data}
EOF

k8s_node_agent n1

# mkpod NS NAME [restore]: a pod with a PVC volume (shop only), an emptyDir and an unchosen
# emptyDir; prints its UID. With "restore", a pod of a restore: held in its restore-wait init
# container, which runs.
mkpod() {
    local claim="" claimmount="" chosen=cache init=""
    [ "${3:-}" = restore ] && init="initContainers: [{name: restore-wait, image: velero/velero-restore-helper}]"
    if [ "$1" = shop ]; then
        claim="  - {name: data, persistentVolumeClaim: {claimName: data}}"
        claimmount="    - {name: data, mountPath: /data}"
        chosen=data,cache
    fi
    kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $2
  namespace: $1
  labels: {app: $2}
  annotations: {backup.velero.io/backup-volumes: "$chosen"}
spec:
  nodeName: n1
  $init
  containers:
  - name: app
    image: busybox
    volumeMounts:
$claimmount
    - {name: cache, mountPath: /cache}
    - {name: tmp, mountPath: /tmp}
  volumes:
$claim
  - {name: cache, emptyDir: {}}
  - {name: tmp, emptyDir: {}}
EOF
    if [ -n "$init" ]; then k8s_restore_wait "$2" "$1" running; else k8s_running "$2" "$1"; fi
    kc get pod "$2" -n "$1" -o jsonpath='{.metadata.uid}'
}
uid_shop=$(mkpod shop web)
uid_crm=$(mkpod crm db)
vdata=$pods/$uid_shop/volumes/kubernetes.io~nfs/pv-data
vcache=$pods/$uid_shop/volumes/kubernetes.io~empty-dir/cache
vcrm=$pods/$uid_crm/volumes/kubernetes.io~empty-dir/cache
mkdir -p "$vdata/sub" "$vcache" "$vcrm" "$pods/$uid_shop/volumes/kubernetes.io~empty-dir/tmp"
head -c 400000 /dev/urandom >"$vdata/sub/blob"
printf 'orders\n' >"$vdata/orders.csv"
head -c 5000 /dev/urandom >"$vcache/c.bin"
head -c 200000 /dev/urandom >"$vcrm/table"
echo skipped >"$pods/$uid_shop/volumes/kubernetes.io~empty-dir/tmp/not-chosen"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
setsid "$PODVAULT" agent --node n1 --namespace velero --host-pods "$pods" --server "$K8S_URL" \
    --metrics-address "127.0.0.1:$port" --cache-dir "$tmp/cache" --scratch-dir "$tmp/scratch" \
    --credentials-file "$tmp/cloud" --progress-interval 1 --shutdown-grace 2 \
    >>"$tmp/agent.log" 2>&1 &
agent_pid=$!
wait_for 20 curl -sf "http://127.0.0.1:$port/healthz" >/dev/null || fail "the agent did not come up"

# --- backups: two of shop's volumes and one of crm's, each namespace into its own repository
for ns_pod in shop:web crm:db; do
    ns=${ns_pod%%:*}
    req backup --namespace "$ns" --selector "app=${ns_pod#*:}" --name "b-$ns" --wait --timeout 60 \
        >"$tmp/b-$ns.out" 2>&1 || { cat "$tmp/b-$ns.out" >&2; fail "request backup in $ns failed"; }
done
[ "$(kc get podvolumebackups -n velero -l velero.io/backup-name=b-shop \
    -o jsonpath='{range .items[*]}{.spec.volume}{" "}{.status.phase}{"\n"}{end}' | sort)" = \
    "$(printf 'cache Completed\ndata Completed')" ] || fail "shop: not exactly data and cache"
[ "$(kc get podvolumebackups -n velero -l velero.io/backup-name=b-crm \
    -o jsonpath='{range .items[*]}{.spec.volume}{" "}{.status.phase}{"\n"}{end}')" = \
    "cache Completed" ] || fail "crm: not exactly cache"
[ -f "$(repo_of shop)/config" ] && [ -f "$(repo_of crm)/config" ] || fail "no repository per namespace"
snaps() { PODVAULT_PASSWORD=static-passw0rd "$PODVAULT" --json --no-cache -r "$(repo_of "$1")" snapshots; }
[ "$(snaps shop | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 2 ] ||
    fail "shop's repository does not hold 2 snapshots"
if snaps shop | grep -q not-chosen; then fail "an unchosen volume was backed up"; fi
pass "request backup: exactly the chosen volumes, one repository per namespace"

# --- restore shop's pod into a new pod of the same name
cp -a "$vdata" "$tmp/want-data"
cp -a "$vcache" "$tmp/want-cache"
kc delete pod web -n shop >/dev/null
uid2=$(mkpod shop web restore)
ndata=$pods/$uid2/volumes/kubernetes.io~nfs/pv-data
ncache=$pods/$uid2/volumes/kubernetes.io~empty-dir/cache
mkdir -p "$ndata" "$ncache"
req restore --from b-shop --namespace shop --name r-shop --wait --timeout 60 \
    >"$tmp/r.out" 2>&1 || { cat "$tmp/r.out" >&2; fail "request restore failed"; }
diff -r --exclude=.velero "$tmp/want-data" "$ndata" || fail "data differs after restore"
diff -r --exclude=.velero "$tmp/want-cache" "$ncache" || fail "cache differs after restore"
pass "request restore: byte for byte"
k8s_restore_wait web shop terminated # its marks seen, restore-wait ended: the application runs
k8s_running web shop

# A second backup of shop after a change and a forget leaves something for prune to free.
head -c 300000 /dev/urandom >"$ndata/sub/blob"
req backup --namespace shop --selector app=web --name b-shop2 --wait --timeout 60 \
    >"$tmp/b2.out" 2>&1 || { cat "$tmp/b2.out" >&2; fail "the second backup failed"; }
oldest=$(snaps shop | python3 -c 'import json,sys; print(sorted(json.load(sys.stdin), key=lambda s: s["time"])[0]["id"])')
PODVAULT_PASSWORD=static-passw0rd "$PODVAULT" -q --no-cache -r "$(repo_of shop)" forget "$oldest" ||
    fail "forget failed"

# --- maintenance, connected as deploy/maintenance's ServiceAccount when TLS is there
conn=(--server "$K8S_URL")
if [ ${#K8S_TLS_ARGS[@]} -gt 0 ]; then
    k8s_tls_kubeconfig "$tmp" maint-token
    conn=(--kubeconfig "$tmp/kube/config")
fi
timer=()
[ -x /usr/bin/time ] && timer=(/usr/bin/time -f 'maxrss %M KiB')
maint() { # LOG ARGS...: the maintenance job's command line, as the CronJob runs it
    local log=$1
    shift
    TMPDIR=$tmp/scratch timeout 300 "${timer[@]}" "$PODVAULT" maintain \
        "${conn[@]}" --namespace velero --credentials-file "$tmp/cloud" \
        --cache-dir "$tmp/maint-cache" "$@" >"$log" 2>&1
}
maint "$tmp/m1.log" --default-location || { cat "$tmp/m1.log" >&2; fail "maintain exited non-zero"; }
expect "$tmp/m1.log" "2 podvault repositories at $store/plugins/podvault"
expect "$tmp/m1.log" "maintenance of $(repo_of crm): full run done"
expect "$tmp/m1.log" "maintenance of $(repo_of shop): full run done"
expect "$tmp/m1.log" "2 of 2 repositories maintained"
python3 - "$tmp/m1.log" <<'EOF' || fail "maintain's log is not one JSON object a line"
import json, re, sys
n = 0
for line in open(sys.argv[1]):
    if line.startswith("maxrss"):
        continue
    o = json.loads(line)
    assert o["level"] in ("info", "debug"), o
    n += 1
assert n >= 4, n
freed = [json.loads(l) for l in open(sys.argv[1]) if '"name":"shop"' in l and "run done" in l]
assert freed and not re.search(r": 0 packs deleted", freed[0]["msg"]), freed
EOF
grep maxrss "$tmp/m1.log" | sed 's/^/# maintain peak RSS: /'
for ns in shop crm; do
    PODVAULT_PASSWORD=static-passw0rd "$PODVAULT" -q --no-cache -r "$(repo_of "$ns")" check \
        --read-data || fail "check --read-data of $ns failed after maintenance"
done
ls "$tmp/scratch" | grep -q podvault-maintain && fail "the scratch directory was left behind"
pass "maintain --default-location: both repositories maintained (full), check --read-data passes"

maint "$tmp/m2.log" --location default --quick || { cat "$tmp/m2.log" >&2; fail "second run failed"; }
expect "$tmp/m2.log" "maintenance of $(repo_of shop): nothing was due"
expect "$tmp/m2.log" "maintenance of $(repo_of crm): nothing was due"
pass "maintain --location default --quick: nothing due right after a full run"

# --- failures: a location that does not exist; a repository that cannot be opened
if maint "$tmp/m3.log" --location nope; then fail "a missing location exited 0"; fi
expect "$tmp/m3.log" "BackupStorageLocation nope does not exist in namespace velero"
kc patch backupstoragelocation default -n velero --type merge -p '{"spec":{"default":false}}' \
    >/dev/null
if maint "$tmp/m4.log" --default-location; then fail "no default location exited 0"; fi
expect "$tmp/m4.log" "no BackupStorageLocation in namespace velero is marked default"
PODVAULT_PASSWORD=another-password "$PODVAULT" -q --no-cache -r "$(repo_of zz-foreign)" init ||
    fail "init of a foreign repository failed"
if maint "$tmp/m5.log" --location default --quick --force; then
    fail "a repository with another password exited 0"
fi
expect "$tmp/m5.log" "3 podvault repositories"
expect "$tmp/m5.log" "maintenance of $(repo_of zz-foreign) FAILED (exit code 12): wrong repository password"
expect "$tmp/m5.log" "maintenance of $(repo_of shop): quick run done"
expect "$tmp/m5.log" "maintenance of $(repo_of crm): quick run done"
expect "$tmp/m5.log" "2 of 3 repositories maintained; failed: zz-foreign"
# An empty location (nothing backed up yet) is fine.
maint "$tmp/m6.log" --location other || { cat "$tmp/m6.log" >&2; fail "an empty location failed"; }
expect "$tmp/m6.log" "0 podvault repositories"
if maint "$tmp/m7.log" --location default --default-location; then fail "both options exited 0"; fi
pass "a missing location, no default, a foreign repository (the others still maintained), an empty location"

if [ ${#K8S_TLS_ARGS[@]} -gt 0 ]; then # the RBAC is enforced: what the rules leave out is refused
    tls_get() {
        curl -s -o /dev/null -w '%{http_code}' --cacert "$tmp/ca.pem" \
            -H "Authorization: Bearer maint-token" "https://127.0.0.1:$(cat "$tmp/k8s.tls-port")$1"
    }
    [ "$(tls_get /api/v1/namespaces/velero/secrets/unrelated)" = 403 ] || fail "RBAC: other secrets"
    [ "$(tls_get /api/v1/namespaces/velero/pods)" = 403 ] || fail "RBAC: pods can be listed"
    [ "$(tls_get /apis/velero.io/v1/namespaces/velero/backupstoragelocations)" = 200 ] ||
        fail "RBAC: locations cannot be listed"
    pass "maintenance ran under deploy/maintenance/rbac.yaml, which refuses the rest"
fi
echo "agent maintain: all ok"
