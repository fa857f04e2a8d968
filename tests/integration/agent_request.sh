#!/usr/bin/env bash
# agent_request.sh - `podvault request` end to end against the API server stand-in, a directory
# laid out like a kubelet pods directory, a local repository and one agent: pods with Velero's
# annotations -> `request backup --wait` backs up exactly the chosen volumes and reports the
# skipped ones with their reasons -> `request restore --wait` brings the data back byte for byte
# into a new pod of the same name, with Velero's completion mark; a failed PodVolumeBackup and a
# --wait that times out make the request exit non-zero.
set -euo pipefail
src=${PV_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$src/tests/k8s/agent_lib.sh"
"$PODVAULT" request --help >/dev/null 2>&1 || skip "this podvault has no request command"

agent_begin agent-request
k8s_start "$tmp" || fail "the stand-in did not start"

velero_setup
kc create namespace shop >/dev/null
bound_claim shop data pv-data "nfs: {server: nfs.example, path: /x}"
bound_claim shop local pv-host "hostPath: {path: /mnt/disk}"

k8s_node_agent n1

# mkapp NAME NODE ANNOTATION [restore]: a pod in shop with every kind of volume; prints its UID.
# With "restore" it is a pod of a restore: held in its running restore-wait init container.
mkapp() {
    app_pod shop "$1" "$2" "app: shop" "$3" "${4:-}" <<EOF
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

start_agent a n1

# --- backup: exactly data and cache of app-1; every other named volume reported with its reason
req backup --namespace shop --selector app=shop --name b1 --wait --timeout 60 \
    >"$tmp/backup.out" 2>"$tmp/backup.err" || {
    cat "$tmp/backup.out" "$tmp/backup.err" >&2
    fail "request backup failed"
}
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
stop_agent a
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

# --- no DaemonSet node-agent: Velero's restorer would create no PodVolumeRestores, nor does request
kc delete daemonset node-agent -n velero >/dev/null
if req restore --from b1 --namespace shop --name r-nods >"$tmp/r-nods.out" 2>&1; then
    fail "a restore without the DaemonSet node-agent exited 0"
fi
expect "$tmp/r-nods.out" "there is no DaemonSet node-agent in namespace velero"
[ -z "$(kc get podvolumerestores -n velero -l velero.io/restore-name=r-nods -o name)" ] ||
    fail "PodVolumeRestores were created without the DaemonSet node-agent"
pass "request restore, as Velero's restorer, wants the DaemonSet node-agent"
