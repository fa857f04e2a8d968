#!/usr/bin/env bash
# agent_request.sh - `podvault request` end to end against the API server stand-in, a directory
# laid out like a kubelet pods directory, a local repository and one agent: pods with Velero's
# annotations -> `request backup --wait` backs up exactly the chosen volumes and reports the
# skipped ones with their reasons -> `request restore --wait` brings the data back byte for byte
# into a new pod of the same name, with Velero's completion mark; a failed PodVolumeBackup and a
# --wait that times out make the request exit non-zero.
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
"$PODVAULT" request --help >/dev/null 2>&1 || skip "this podvault has no request command"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/pv-agent-request.XXXXXX")
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

k8s_start "$tmp" || fail "the stand-in did not start"
pods=$tmp/kubelet/pods
mkdir -p "$pods" "$tmp/scratch" "$tmp/cache"
: >"$tmp/cloud"
req() { timeout 120 "$PODVAULT" request "$@" --server "$K8S_URL" --velero-namespace velero; }

kc create namespace velero >/dev/null
kc create namespace shop >/dev/null
kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Secret
metadata: {name: velero-repo-credentials, namespace: velero}
stringData: {repository-password: static-passw0rd}
---
apiVersion: velero.io/v1
kind: BackupStorageLocation
metadata: {name: default, namespace: velero}
spec:
  provider: aws
  config: {podvaultPath: "$tmp/store"}
  objectStorage: {bucket: unused}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: pv-data}
spec: {capacity: {storage: 1Gi}, accessModes: [ReadWriteOnce], nfs: {server: nfs.example, path: /x}}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: pv-host}
spec: {capacity: {storage: 1Gi}, accessModes: [ReadWriteOnce], hostPath: {path: /mnt/disk}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: shop}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}, volumeName: pv-data}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: local, namespace: shop}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}, volumeName: pv-host}
EOF

k8s_node_agent n1

# mkapp NAME NODE ANNOTATION [restore]: a pod in shop with every kind of volume; prints its UID.
# With "restore" it is a pod of a restore: held in its running restore-wait init container.
mkapp() {
    local init=""
    [ "${4:-}" = restore ] && init="initContainers: [{name: restore-wait, image: velero/velero-restore-helper}]"
    kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $1
  namespace: shop
  labels: {app: shop}
  annotations: {$3}
spec:
  nodeName: $2
  $init
  containers:
  - name: app
    image: busybox
    volumeMounts:
    - {name: data, mountPath: /data}
    - {name: cache, mountPath: /cache}
    - {name: logs, mountPath: /logs}
    - {name: local, mountPath: /local}
    - {name: conf, mountPath: /conf}
  volumes:
  - {name: data, persistentVolumeClaim: {claimName: data}}
  - {name: cache, emptyDir: {}}
  - {name: logs, hostPath: {path: /var/log}}
  - {name: local, persistentVolumeClaim: {claimName: local}}
  - {name: conf, configMap: {name: app-conf}}
  - {name: unused, emptyDir: {}}
EOF
    if [ -n "$init" ]; then k8s_restore_wait "$1" shop running; else k8s_running "$1" shop; fi
    kc get pod "$1" -n shop -o jsonpath='{.metadata.uid}'
}
ann='backup.velero.io/backup-volumes: "data,cache,logs,local,unused"'
uid1=$(mkapp app-1 n1 "$ann")
mkapp app-2 n9 "$ann" >/dev/null                         # a node without an agent
kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: app-3, namespace: shop, annotations: {$ann}}
spec:
  nodeName: n1
  containers: [{name: app, image: busybox, volumeMounts: [{name: cache, mountPath: /cache}]}]
  volumes: [{name: cache, emptyDir: {}}]
EOF

# The kubelet's view of app-1's volumes.
vdata=$pods/$uid1/volumes/kubernetes.io~nfs/pv-data
vcache=$pods/$uid1/volumes/kubernetes.io~empty-dir/cache
mkdir -p "$vdata/sub" "$vcache" "$pods/$uid1/volumes/kubernetes.io~empty-dir/unused"
head -c 300000 /dev/urandom >"$vdata/sub/blob"
printf 'orders\n' >"$vdata/orders.csv"
head -c 5000 /dev/urandom >"$vcache/c.bin"
cp -a "$vdata" "$tmp/want-data"
cp -a "$vcache" "$tmp/want-cache"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
setsid "$PODVAULT" agent --node n1 --namespace velero --host-pods "$pods" --server "$K8S_URL" \
    --metrics-address "127.0.0.1:$port" --cache-dir "$tmp/cache" --scratch-dir "$tmp/scratch" \
    --credentials-file "$tmp/cloud" --progress-interval 1 --shutdown-grace 2 \
    >>"$tmp/agent.log" 2>&1 &
agent_pid=$!
wait_for 20 curl -sf "http://127.0.0.1:$port/healthz" >/dev/null || fail "the agent did not come up"

# --- backup: exactly data and cache of app-1; every other named volume reported with its reason
req backup --namespace shop --selector app=shop --name b1 --wait --timeout 60 \
    >"$tmp/backup.out" 2>"$tmp/backup.err" || {
    cat "$tmp/backup.out" "$tmp/backup.err" >&2
    fail "request backup failed"
}
expect() { grep -qF -- "$2" "$1" || { cat "$1" >&2; fail "$1 lacks: $2"; }; }
o=$tmp/backup.out
expect "$o" "skipped shop/app-1 volume logs: hostPath volume"
expect "$o" "skipped shop/app-1 volume local: PVC local is bound to hostPath PV pv-host"
expect "$o" "skipped shop/app-1 volume unused: no container mounts it"
expect "$o" "skipped shop/app-2 volume data: no running agent on node n9"
expect "$o" "skipped shop/app-2 volume cache: no running agent on node n9"
expect "$o" "2 volume(s) requested"
[ "$(grep -c ' Completed ' "$o")" = 2 ] || { cat "$o" >&2; fail "wanted 2 Completed rows"; }
grep -q 'app-3' "$o" && fail "app-3 has no selector label app=shop and must not appear"
[ "$(kc get podvolumebackups -n velero -l velero.io/backup-name=b1 -o name | wc -l)" = 2 ] ||
    fail "wanted exactly 2 PodVolumeBackups for b1"
pvb=$(kc get podvolumebackups -n velero -l velero.io/backup-name=b1 -o json)
python3 - "$pvb" "$uid1" <<'EOF' || fail "the PodVolumeBackups are not shaped like Velero's"
import json, sys
items = json.loads(sys.argv[1])["items"]
vols = sorted(i["spec"]["volume"] for i in items)
assert vols == ["cache", "data"], vols
for i in items:
    m, s = i["metadata"], i["spec"]
    assert m["generateName"] == "b1-" and m["name"].startswith("b1-"), m
    assert m["labels"]["velero.io/backup-uid"] == s["tags"]["backup-uid"], m
    assert s["node"] == "n1" and s["pod"]["uid"] == sys.argv[2], s
    assert s["backupStorageLocation"] == "default" and s["uploaderType"] == "kopia", s
    assert s["tags"]["pod"] == "app-1" and s["tags"]["ns"] == "shop", s
    assert (s["volume"] == "data") == ("velero.io/pvc-uid" in m["labels"]), m
    assert i["status"]["phase"] == "Completed" and i["status"]["snapshotID"], i["status"]
EOF
pass "request backup: the chosen volumes completed, the others reported with their reasons"

# status prints the same table again, and exits 0 since all completed.
req status b1 >"$tmp/status.out" || fail "request status b1 failed"
[ "$(grep -c ' Completed ' "$tmp/status.out")" = 2 ] || fail "status lacks the 2 Completed rows"
pass "request status"

# --- restore into a new app-1 (a new UID and empty volumes)
kc delete pod app-1 -n shop >/dev/null
uid2=$(mkapp app-1 n1 "" restore)
[ "$uid2" != "$uid1" ] || fail "the new pod kept its UID"
ndata=$pods/$uid2/volumes/kubernetes.io~nfs/pv-data
ncache=$pods/$uid2/volumes/kubernetes.io~empty-dir/cache
mkdir -p "$ndata" "$ncache"
req restore --from b1 --namespace shop --name r1 --wait --timeout 60 \
    >"$tmp/restore.out" 2>"$tmp/restore.err" || {
    cat "$tmp/restore.out" "$tmp/restore.err" >&2
    fail "request restore failed"
}
[ "$(grep -c ' Completed ' "$tmp/restore.out")" = 2 ] || fail "wanted 2 Completed restores"
diff -r --exclude=.velero "$tmp/want-data" "$ndata" || fail "data differs after restore"
diff -r --exclude=.velero "$tmp/want-cache" "$ncache" || fail "cache differs after restore"
ruid=$(kc get podvolumerestores -n velero -l velero.io/restore-name=r1 \
    -o jsonpath='{.items[0].metadata.ownerReferences[0].uid}')
[ -n "$ruid" ] && [ -f "$ndata/.velero/$ruid" ] && [ -f "$ncache/.velero/$ruid" ] ||
    fail "the completion marks for restore uid '$ruid' are missing"
pass "request restore: the data came back byte for byte, with the completion marks"
# restore-wait saw its marks and ended: the application runs.
k8s_restore_wait app-1 shop terminated
k8s_running app-1 shop

# --- a backup with nothing chosen by opt-out except what is excluded, and a failing request
req backup --namespace shop --selector app=shop --name b2 --default-volumes \
    >"$tmp/b2.out" 2>&1 || { cat "$tmp/b2.out" >&2; fail "opt-out request failed"; }
expect "$tmp/b2.out" "skipped shop/app-1 volume conf: configMap volume"
expect "$tmp/b2.out" "2 volume(s) requested"
if req restore --from no-such-backup --namespace shop >"$tmp/none.out" 2>&1; then
    fail "a restore from a backup that does not exist succeeded"
fi
expect "$tmp/none.out" "no PodVolumeBackups of backup no-such-backup"
pass "opt-out mode and a restore from an unknown backup"

# --- a volume the agent cannot find fails its PodVolumeBackup, and the request exits non-zero
kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: lost
  namespace: shop
  labels: {app: lost}
  annotations: {backup.velero.io/backup-volumes: cache}
spec:
  nodeName: n1
  containers: [{name: app, image: busybox, volumeMounts: [{name: cache, mountPath: /cache}]}]
  volumes: [{name: cache, emptyDir: {}}]
EOF
k8s_running lost shop
if req backup --namespace shop --selector app=lost --name b3 --wait --timeout 60 \
    >"$tmp/b3.out" 2>&1; then
    cat "$tmp/b3.out" >&2
    fail "a backup whose volume is missing exited 0"
fi
expect "$tmp/b3.out" " Failed "
expect "$tmp/b3.out" "expected one matching path"
expect "$tmp/b3.out" "1 of 1 did not complete"
pass "a failed PodVolumeBackup makes the request fail, with the agent's message"

# --- with no agent serving, --wait gives up after --timeout and says so
kill -TERM "$agent_pid"
wait "$agent_pid" 2>/dev/null || true
agent_pid=
start=$SECONDS
if req backup --namespace shop --selector app=shop --name b4 --default-volumes --wait --timeout 2 \
    >"$tmp/b4.out" 2>&1; then
    fail "a backup nobody served exited 0"
fi
[ $((SECONDS - start)) -le 10 ] || fail "--timeout 2 took $((SECONDS - start)) s"
expect "$tmp/b4.out" "2 of 2 did not complete"
pass "--wait is bounded by --timeout"

# --- no restore over a running application: a target pod without restore-wait is skipped
kc delete pod app-1 -n shop >/dev/null
mkapp app-1 n1 "" >/dev/null # an application's pod, as deployed: no restore-wait
if req restore --from b1 --namespace shop --name r-live >"$tmp/r-live.out" 2>&1; then
    fail "a restore into pods without restore-wait exited 0"
fi
expect "$tmp/r-live.out" "skipped app-1 volume data: pod shop/app-1 has no restore-wait init container"
expect "$tmp/r-live.out" "nothing to restore from backup b1"
[ -z "$(kc get podvolumerestores -n velero -l velero.io/restore-name=r-live -o name)" ] ||
    fail "PodVolumeRestores were created for pods without restore-wait"
pass "request restore skips target pods that are not held in restore-wait"
