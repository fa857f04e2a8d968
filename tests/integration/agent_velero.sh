#!/usr/bin/env bash
# agent_velero.sh - what podvault's agent does as Velero's node-agent beyond PodVolumeBackups and
# PodVolumeRestores, against the API server stand-in with the real kubectl and two agents (n1 by
# plain HTTP; n2 through TLS, a kubeconfig and the ServiceAccount token held to
# deploy/agent/rbac.yaml):
# - DataUploads and DataDownloads (CSI snapshot data movement, not served) end within seconds:
#   Failed with a message saying so, written by exactly one agent; canceled ones Canceled; another
#   data mover's and another node-agent's left alone; this node's orphan Failed;
# - the pod annotation podvault.io/backup-excludes: excluded folders and files are absent from
#   the restored volume and the rest is byte for byte; a bad pattern fails the PVB naming it;
# - `podvault request cancel` of a running backup and of a running restore (jobs kept running by
#   tests/k8s/slow-podvault.sh): the objects end Canceled, the restore says it is partial and
#   leaves no completion mark.
set -euo pipefail
src=${PV_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$src/tests/k8s/agent_lib.sh"
"$PODVAULT" request --help >/dev/null 2>&1 || skip "this podvault has no request command"

agent_begin agent-velero
k8s_tls_setup "$tmp" "agent-token=velero/podvault-agent"
k8s_start "$tmp" "${K8S_TLS_ARGS[@]}" || fail "the stand-in did not start"
velero_setup "$src/deploy/agent/rbac.yaml"
kc create namespace shop >/dev/null
k8s_node_agent n1

start_agent a n1
if [ ${#K8S_TLS_ARGS[@]} -gt 0 ]; then
    k8s_tls_kubeconfig "$tmp" agent-token
    start_agent b n2 --kubeconfig "$tmp/kube/config"
else
    start_agent b n2
fi

# --- 1. CSI snapshot data movement is declined at once, by one agent
# mkdm KIND NAME [spec lines] [status]: a DataUpload or DataDownload as Velero's server makes it.
mkdm() {
    local kind=$1 name=$2 extra=${3:-} status=${4:-}
    local spec
    if [ "$kind" = DataUpload ]; then
        spec="snapshotType: CSI
  csiSnapshot: {volumeSnapshot: vs-1, storageClass: csi, snapshotClass: csi-snap}
  sourcePVC: data
  sourceNamespace: shop"
    else
        spec="targetVolume: {pvc: data, pv: \"\", namespace: shop}
  snapshotID: 0123abcd
  sourceNamespace: shop"
    fi
    kc create -f - >/dev/null <<EOF
apiVersion: velero.io/v2alpha1
kind: $kind
metadata: {name: $name, namespace: velero}
spec:
  $spec
  backupStorageLocation: default
  operationTimeout: 10m0s
  $extra
$status
EOF
}
t0=$SECONDS
mkdm DataUpload du-new
mkdm DataDownload dd-new
mkdm DataDownload dd-cancel "cancel: true"
mkdm DataUpload du-other "datamover: acme"
mkdm DataUpload du-orphan "" "status: {phase: InProgress, node: n1, acceptedByNode: n1}"
mkdm DataUpload du-elsewhere "" "status: {phase: InProgress, node: n7, acceptedByNode: n7}"
wait_phase dataupload du-new Failed 10
wait_phase datadownload dd-new Failed 10
wait_phase datadownload dd-cancel Canceled 10
wait_phase dataupload du-orphan Failed 10
[ $((SECONDS - t0)) -le 10 ] || fail "declining took $((SECONDS - t0)) s"
for o in "dataupload du-new" "datadownload dd-new"; do
    # shellcheck disable=SC2086
    m=$(field $o .status.message)
    [[ $m == *"does not serve CSI snapshot data movement"* ]] || fail "$o: message '$m'"
    # shellcheck disable=SC2086
    [ -n "$(field $o .status.completionTimestamp)" ] || fail "$o: no completionTimestamp"
done
[[ $(field dataupload du-orphan .status.message) == *"replaced by podvault"* ]] ||
    fail "du-orphan: message $(field dataupload du-orphan .status.message)"
sleep 2 # the objects left alone stay so
[ -z "$(field dataupload du-other .status.phase)" ] || fail "another data mover's DataUpload was touched"
phase_is dataupload du-elsewhere InProgress || fail "another node's DataUpload was touched"
# Exactly one agent wrote each declined object; the other lost the race (409) or saw it final.
for n in du-new dd-new dd-cancel; do
    c=$(cat "$tmp"/agent-*.log | grep '"msg":"\(declined\|canceled\)' | grep -c "\"name\":\"$n\"" || true)
    [ "$c" = 1 ] || fail "$n was written by $c agents"
done
c=$(cat "$tmp"/agent-*.log | grep '"msg":"declined' | grep -c '"name":"du-orphan"' || true)
[ "$c" = 1 ] || fail "du-orphan was written $c times"
grep -q '"name":"du-orphan"' "$tmp/agent-b.log" && fail "agent b (n2) wrote n1's orphan"
pass "DataUploads and DataDownloads declined within seconds by one agent; others left alone"

# Agent b alone (through the deploy RBAC when TLS is there) declines too.
stop_agent a
mkdm DataUpload du-b
wait_phase dataupload du-b Failed 10
grep '"msg":"declined' "$tmp/agent-b.log" | grep -q '"name":"du-b"' || fail "agent b did not write du-b"
start_agent a n1
pass "the other agent, under deploy/agent/rbac.yaml, declines as well"

# --- 2. excludes by annotation
# mkapp NAME ANNOTATIONS [restore]: a pod on n1 with an emptyDir volume "data"; prints its UID.
# With "restore" it is a pod of a restore: held in its running restore-wait init container.
mkapp() {
    local uid
    uid=$(app_pod shop "$1" n1 "app: $1" "$2" "${3:-}" <<EOF
  containers: [{name: app, image: busybox, volumeMounts: [{name: data, mountPath: /data}]}]
  volumes: [{name: data, emptyDir: {}}]
EOF
)
    mkdir -p "$(vol_of "$uid")"
    echo "$uid"
}
ann='backup.velero.io/backup-volumes: data, podvault.io/backup-excludes: "data:cache, data:/logs/*.log , data:tmp/x"'
uid1=$(mkapp app "$ann")
v1=$(vol_of "$uid1")
mkdir -p "$v1/cache" "$v1/sub/cache" "$v1/logs/old" "$v1/tmp/x" "$v1/keep"
head -c 200000 /dev/urandom >"$v1/cache/blob"
echo inner >"$v1/sub/cache/c.txt"
echo log >"$v1/logs/a.log"
echo old >"$v1/logs/old/b.log" # '*' does not cross '/': kept
echo notes >"$v1/logs/notes.txt"
echo x >"$v1/tmp/x/y"
head -c 300000 /dev/urandom >"$v1/keep/data.bin"
echo top >"$v1/top.txt"
cp -a "$v1" "$tmp/want"
rm -rf -- "${tmp:?}/want/cache" "${tmp:?}/want/sub/cache" "${tmp:?}/want/logs/a.log" "${tmp:?}/want/tmp/x"
req backup --namespace shop --selector app=app --name b-ex --wait --timeout 60 \
    >"$tmp/b-ex.out" 2>&1 || { cat "$tmp/b-ex.out" >&2; fail "request backup b-ex failed"; }
kc delete pod app -n shop >/dev/null
uid2=$(mkapp app "" restore)
req restore --from b-ex --namespace shop --name r-ex --wait --timeout 60 >"$tmp/r-ex.out" 2>&1 ||
    { cat "$tmp/r-ex.out" >&2; fail "request restore r-ex failed"; }
v2=$(vol_of "$uid2")
[ -d "$v2/.velero" ] || fail "no completion mark after the restore"
diff -r --exclude=.velero "$tmp/want" "$v2" || fail "the restored volume is not the source less the excludes"
[ ! -e "$v2/cache" ] && [ ! -e "$v2/sub/cache" ] && [ ! -e "$v2/logs/a.log" ] && [ -f "$v2/logs/old/b.log" ] ||
    fail "excludes not applied as documented"
pass "excludes by annotation: excluded folders absent, the rest byte for byte"
k8s_restore_wait app shop terminated # its marks seen, restore-wait ended: the application runs
k8s_running app shop

uid_bad=$(mkapp bad 'backup.velero.io/backup-volumes: data, podvault.io/backup-excludes: "data:ok,data:../etc"')
echo x >"$(vol_of "$uid_bad")/f"
if req backup --namespace shop --selector app=bad --name b-bad --wait --timeout 60 >"$tmp/b-bad.out" 2>&1; then
    fail "a backup with a bad exclude pattern succeeded"
fi
grep -qF "item 2 \"data:../etc\"" "$tmp/b-bad.out" && grep -qF "'..' component" "$tmp/b-bad.out" ||
    { cat "$tmp/b-bad.out" >&2; fail "the bad pattern is not named"; }
grep -q ' Failed ' "$tmp/b-bad.out" || fail "the PVB with a bad pattern did not fail"
pass "a bad exclude pattern fails the PodVolumeBackup, naming the item"

# --- 3. request cancel of a running backup and of a running restore
stop_agent a
PV_SLOW_SECONDS=60 PODVAULT_REAL=$PODVAULT start_agent a n1 --podvault "$src/tests/k8s/slow-podvault.sh"
req backup --namespace shop --selector app=app --name b-slow --default-volumes >"$tmp/b-slow.out" 2>&1 ||
    { cat "$tmp/b-slow.out" >&2; fail "request backup b-slow failed"; }
pvb=$(kc get podvolumebackups -n velero -l velero.io/backup-name=b-slow -o jsonpath='{.items[0].metadata.name}')
wait_phase podvolumebackup "$pvb" InProgress 20
sleep 1
t0=$SECONDS
req cancel b-slow --wait --timeout 40 >"$tmp/c-b.out" 2>&1 || { cat "$tmp/c-b.out" >&2; fail "request cancel b-slow failed"; }
[ $((SECONDS - t0)) -le 20 ] || fail "canceling the backup took $((SECONDS - t0)) s"
phase_is podvolumebackup "$pvb" Canceled || fail "PVB $pvb is $(field podvolumebackup "$pvb" .status.phase)"
grep -q ' Canceled ' "$tmp/c-b.out" || { cat "$tmp/c-b.out" >&2; fail "the cancel table lacks Canceled"; }
[ "$(field podvolumebackup "$pvb" .spec.cancel)" = true ] || fail "spec.cancel not set"
pass "request cancel of a running backup: Canceled"

kc delete pod app -n shop >/dev/null
uid3=$(mkapp app "" restore)
req restore --from b-ex --namespace shop --name r-slow >"$tmp/r-slow.out" 2>&1 ||
    { cat "$tmp/r-slow.out" >&2; fail "request restore r-slow failed"; }
pvr=$(kc get podvolumerestores -n velero -l velero.io/restore-name=r-slow -o jsonpath='{.items[0].metadata.name}')
wait_phase podvolumerestore "$pvr" InProgress 20
sleep 1
req cancel r-slow --wait --timeout 40 >"$tmp/c-r.out" 2>&1 || { cat "$tmp/c-r.out" >&2; fail "request cancel r-slow failed"; }
phase_is podvolumerestore "$pvr" Canceled || fail "PVR $pvr is $(field podvolumerestore "$pvr" .status.phase)"
m=$(field podvolumerestore "$pvr" .status.message)
[[ $m == *"partially restored"* ]] || fail "the canceled restore's message: $m"
grep -q 'partially restored' "$tmp/c-r.out" || { cat "$tmp/c-r.out" >&2; fail "request cancel does not show it"; }
[ ! -e "$(vol_of "$uid3")/.velero" ] || fail "a canceled restore wrote the completion mark"
pass "request cancel of a running restore: Canceled, reported as partial, no completion mark"

if req cancel no-such >"$tmp/c-none.out" 2>&1; then fail "cancel of an unknown name succeeded"; fi
grep -q 'no PodVolumeBackups or PodVolumeRestores of a backup or restore named no-such' "$tmp/c-none.out" ||
    { cat "$tmp/c-none.out" >&2; fail "cancel of an unknown name: message"; }
req cancel b-ex >"$tmp/c-done.out" 2>&1 || fail "cancel of a finished backup failed"
grep -q 'cancel requested for 0 of 1' "$tmp/c-done.out" || { cat "$tmp/c-done.out" >&2; fail "cancel of a finished backup"; }
pass "request cancel of an unknown or finished backup"
echo "agent velero: all ok"
