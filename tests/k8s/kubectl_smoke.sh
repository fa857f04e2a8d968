#!/usr/bin/env bash
# kubectl_smoke.sh - proves the real kubectl can drive the API server stand-in (apiserver.py):
# create/get/list/watch/patch/replace/delete of every kind the agent uses, 409 and 410.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

command -v kubectl >/dev/null || { echo "SKIP: kubectl not installed"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/pv-kubectl-smoke.XXXXXX")
: "${tmp:?mktemp gave no work directory}"
watch_pid=
cleanup() {
    [ -n "$watch_pid" ] && kill "$watch_pid" 2>/dev/null
    k8s_stop
    rm -rf -- "${tmp:?}"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*" >&2
    echo "--- server log (tail)" >&2
    tail -n 30 "$tmp/k8s.log" >&2 || true
    exit 1
}
eq() { [ "$1" = "$2" ] || fail "$3: expected '$2', got '$1'"; }

k8s_start "$tmp" --verbose
kc create namespace velero >/dev/null # typed commands send protobuf bodies
kc create secret generic s1 -n velero --from-literal=k=v >/dev/null
eq "$(kc get secret s1 -n velero -o jsonpath='{.data.k}/{.type}')" "dg==/Opaque" "protobuf Secret"

# --- Every kind the agent reads or writes: create from YAML, get, list.
cat >"$tmp/objects.yaml" <<'EOF'
apiVersion: v1
kind: PersistentVolume
metadata: {name: pv-data}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  csi: {driver: hostpath.csi.k8s.io, volumeHandle: h1}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: default}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
  volumeName: pv-data
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, labels: {app: web}}
spec:
  nodeName: node-a
  containers:
  - {name: c, image: busybox, volumeMounts: [{name: data, mountPath: /data}]}
  volumes:
  - {name: data, persistentVolumeClaim: {claimName: data}}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: default, labels: {app: other}}
spec:
  nodeName: node-b
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Secret
metadata: {name: velero-repo-credentials, namespace: velero}
stringData: {repository-password: static-passw0rd}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: node-agent-config, namespace: velero}
data: {config.json: '{"loadConcurrency":{"globalConfig":2}}'}
---
apiVersion: velero.io/v1
kind: BackupStorageLocation
metadata: {name: default, namespace: velero}
spec:
  provider: aws
  objectStorage: {bucket: backups, prefix: cluster1}
  config: {region: us-east-1, s3Url: "http://127.0.0.1:9000", s3ForcePathStyle: "true"}
EOF
kc create -f "$tmp/objects.yaml" >/dev/null
eq "$(kc get pv pv-data -o jsonpath='{.spec.csi.driver}')" hostpath.csi.k8s.io "PV get"
eq "$(kc get pvc data -o jsonpath='{.spec.volumeName}')" pv-data "PVC get"
eq "$(kc get secret -n velero velero-repo-credentials -o jsonpath='{.metadata.name}')" \
    velero-repo-credentials "Secret get"
eq "$(kc get cm -n velero node-agent-config -o jsonpath='{.data.config\.json}')" \
    '{"loadConcurrency":{"globalConfig":2}}' "ConfigMap get"
eq "$(kc get bsl -n velero default -o jsonpath='{.spec.objectStorage.bucket}')" backups "BSL get"
eq "$(kc get pods -o name | sort | tr '\n' ' ')" "pod/other pod/web " "pod list"
eq "$(kc get pods -A -o name | wc -l)" 2 "pod list across namespaces"
eq "$(kc get pods -l app=web -o name)" pod/web "label selector"
eq "$(kc get pods -l 'app in (x,other)' -o name)" pod/other "set-based label selector"
eq "$(kc get pods --field-selector spec.nodeName=node-b -o name)" pod/other "field selector"
eq "$(kc get pods --field-selector spec.nodeName!=node-b -o name)" pod/web "field selector !="
kc get pod web >/dev/null  # the default table printer works on a plain list

# --- PodVolumeBackup with generateName, watched from the side.
kc get podvolumebackups -n velero -w -o json --output-watch-events >"$tmp/watch.json" 2>&1 &
watch_pid=$!
watching() { k8s_admin stats | grep -q '"watches": [1-9]'; }
wait_for 10 watching || fail "kubectl -w never watched"
cat >"$tmp/pvb.yaml" <<'EOF'
apiVersion: velero.io/v1
kind: PodVolumeBackup
metadata:
  generateName: nightly-
  namespace: velero
  labels: {velero.io/backup-name: nightly}
spec:
  node: node-a
  pod: {kind: Pod, namespace: default, name: web, uid: "1234"}
  volume: data
  backupStorageLocation: default
  repoIdentifier: ""
  uploaderType: kopia
  tags: {backup: nightly, ns: default}
EOF
pvb=$(kc create -f "$tmp/pvb.yaml" -o jsonpath='{.metadata.name}')
[[ $pvb == nightly-?????  ]] || fail "generateName gave '$pvb'"

# Patches: merge, strategic (taken as merge for custom resources) and JSON patch.
kc patch podvolumebackup "$pvb" -n velero --type merge -p '{"status":{"phase":"InProgress"}}' >/dev/null
kc patch podvolumebackup "$pvb" -n velero -p '{"spec":{"cancel":true}}' >/dev/null
kc patch podvolumebackup "$pvb" -n velero --type json \
    -p '[{"op":"add","path":"/spec/tags/extra","value":"1"}]' >/dev/null
eq "$(kc get podvolumebackup "$pvb" -n velero -o jsonpath='{.status.phase}/{.spec.cancel}/{.spec.tags.extra}')" \
    "InProgress/true/1" "patched PVB"

# Replace: with the current resourceVersion it works; with a stale one it is a 409 Conflict.
kc get podvolumebackup "$pvb" -n velero -o json >"$tmp/cur.json"
sed -i 's/"phase": "InProgress"/"phase": "Completed"/' "$tmp/cur.json"
kc replace -f "$tmp/cur.json" >/dev/null
eq "$(kc get podvolumebackup "$pvb" -n velero -o jsonpath='{.status.phase}')" Completed "replace"
if kc replace -f "$tmp/cur.json" 2>"$tmp/err"; then fail "a stale replace was accepted"; fi
grep -q Conflict "$tmp/err" || fail "a stale replace did not answer Conflict: $(cat "$tmp/err")"

kc delete podvolumebackup "$pvb" -n velero >/dev/null
wait_for 10 grep -q '"type": *"DELETED"' "$tmp/watch.json" || fail "no DELETED event in kubectl -w"
kill "$watch_pid"
wait "$watch_pid" 2>/dev/null || true
watch_pid=
for t in ADDED MODIFIED DELETED; do
    grep -q "\"type\": *\"$t\"" "$tmp/watch.json" || fail "kubectl -w saw no $t event"
done

# PodVolumeRestore: create, strategic merge on a built-in kind (containers merge by name).
cat >"$tmp/pvr.yaml" <<'EOF'
apiVersion: velero.io/v1
kind: PodVolumeRestore
metadata:
  name: restore-1
  namespace: velero
  ownerReferences: [{apiVersion: velero.io/v1, kind: Restore, name: r1, uid: "abcd", controller: true}]
spec:
  pod: {kind: Pod, namespace: default, name: web, uid: "1234"}
  volume: data
  backupStorageLocation: default
  repoIdentifier: ""
  uploaderType: kopia
  snapshotID: "0123"
  sourceNamespace: default
EOF
kc apply -f "$tmp/pvr.yaml" >/dev/null
kc apply -f "$tmp/pvr.yaml" | grep -q unchanged || fail "a second apply changed the PVR"
kc patch pod web -p '{"spec":{"containers":[{"name":"c","image":"alpine"}]}}' >/dev/null
eq "$(kc get pod web -o jsonpath='{.spec.containers[0].image}/{.spec.containers[0].volumeMounts[0].mountPath}')" \
    "alpine//data" "strategic merge of containers"
kc patch pod web --subresource=status --type merge -p '{"status":{"phase":"Running"}}' >/dev/null
eq "$(kc get pod web -o jsonpath='{.status.phase}')" Running "status subresource patch"

# Deletes, including one held by a finalizer until it is removed.
kc patch podvolumerestore restore-1 -n velero --type merge \
    -p '{"metadata":{"finalizers":["velero.io/pod-volume-finalizer"]}}' >/dev/null
kc delete podvolumerestore restore-1 -n velero --wait=false >/dev/null
[ -n "$(kc get podvolumerestore restore-1 -n velero -o jsonpath='{.metadata.deletionTimestamp}')" ] ||
    fail "a finalizer did not hold the delete"
kc patch podvolumerestore restore-1 -n velero --type json -p '[{"op":"remove","path":"/metadata/finalizers"}]' \
    >/dev/null
if kc get podvolumerestore restore-1 -n velero 2>/dev/null; then fail "the PVR outlived its finalizer"; fi
kc delete pod/other secret/nonexistent -n default --ignore-not-found >/dev/null
kc delete pvc data >/dev/null
kc delete pv pv-data >/dev/null
kc delete cm node-agent-config -n velero >/dev/null
eq "$(kc get pods -o name)" pod/web "after deletes"

# --- 410 Gone: a watch from a version older than the retained window gets an ERROR event.
k8s_admin compact >/dev/null
kc get --raw '/api/v1/namespaces/default/pods?watch=1&resourceVersion=1&timeoutSeconds=2' \
    >"$tmp/gone.json"
grep -q '"code": *410' "$tmp/gone.json" || fail "no 410 after compaction: $(cat "$tmp/gone.json")"
rv=$(kc get --raw /api/v1/namespaces/default/pods |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["metadata"]["resourceVersion"])')
kc get --raw "/api/v1/namespaces/default/pods?watch=1&resourceVersion=$rv&timeoutSeconds=1" \
    >"$tmp/fresh.json"
[ ! -s "$tmp/fresh.json" ] || fail "a watch from a fresh list was not quiet: $(cat "$tmp/fresh.json")"

echo "kubectl smoke: ok"
