#!/usr/bin/env bash
# agent_e2e.sh - `podvault agent` end to end against the API server stand-in, a directory laid out
# like a kubelet pods directory, and a repository in a local directory (or S3 when PV_TEST_S3 is
# set, see below): kubectl creates PodVolumeBackups and PodVolumeRestores and the agents serve
# them. Cases: backup, restore into another pod with the completion mark, incremental parent,
# malformed objects, two agents for two nodes, a dropped watch and a 410, cancel, an agent
# killed mid-backup, an agent stopped with SIGTERM (handback), status subresource on, the
# phases of Velero 1.16's CRDs.
# With PV_TEST_S3=s3:http://HOST:PORT/BUCKET[/PREFIX] and AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY
# (what tests/s3-env.sh exports) the location is that S3 bucket instead.
set -euo pipefail
src=${PV_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$src/tests/k8s/agent_lib.sh"
"$PODVAULT" agent --help >/dev/null 2>&1 || skip "this podvault does not dispatch the agent command yet"

agent_begin agent-e2e
# The stand-in also listens with TLS, where the token of the agent's service account is held to
# the RBAC rules of deploy/agent/rbac.yaml: agent b connects there through a kubeconfig.
k8s_tls_setup "$tmp" "agent-token=velero/podvault-agent"
k8s_start "$tmp" "${K8S_TLS_ARGS[@]}" || fail "the stand-in did not start"

# --- the location: a local directory, or S3
test_location agent-e2e
snapshots_of() { # NS -> the repository's snapshots as JSON
    PODVAULT_PASSWORD=static-passw0rd "$PODVAULT" --json --no-cache "${s3_opts[@]}" \
        -r "$(repo_of "$1")" snapshots
}

kc create namespace velero >/dev/null
kc apply -f "$src/deploy/agent/rbac.yaml" >/dev/null
b_conn=(--server "$K8S_URL")
if [ ${#K8S_TLS_ARGS[@]} -gt 0 ]; then
    k8s_tls_kubeconfig "$tmp" agent-token
    b_conn=(--kubeconfig "$tmp/kube/config")
fi
velero_location default "$location_config"
kc apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata: {name: hostpath.csi.k8s.io}
spec: {}
EOF

# --- the source pod: a PVC bound to a CSI PV, data under .../kubernetes.io~csi/pv-data/mount
bound_claim default data pv-data "nfs: {server: nfs.example, path: /x}" "pv.kubernetes.io/provisioned-by: hostpath.csi.k8s.io"
src_uid=$(mkpod src node-a '{name: data, persistentVolumeClaim: {claimName: data}}')
vol=$pods/$src_uid/volumes/kubernetes.io~csi/pv-data/mount
mkdir -p "$vol/sub/deeper" "$pods/$src_uid/volumes/kubernetes.io~empty-dir"
head -c 3000000 /dev/urandom >"$vol/big.bin"
echo "hello" >"$vol/sub/hello.txt"
printf 'x%.0s' $(seq 1 5000) >"$vol/sub/deeper/xs.txt"
: >"$vol/empty"
ln -s sub/hello.txt "$vol/link"
chmod 600 "$vol/sub/hello.txt"
data_bytes=$((3000000 + 6 + 5000))

start_agent a node-a

# --- 1. backup
create_pvb bk1 node-a src "$src_uid" data
wait_phase podvolumebackup bk1 Completed
snap1=$(field podvolumebackup bk1 .status.snapshotID)
[[ $snap1 =~ ^[0-9a-f]{64}$ ]] || fail "bk1: snapshotID '$snap1'"
[ "$(field podvolumebackup bk1 .status.path)" = "$vol" ] || fail "bk1: status.path"
[ "$(field podvolumebackup bk1 .status.progress.totalBytes)" = "$data_bytes" ] ||
    fail "bk1: progress.totalBytes $(field podvolumebackup bk1 .status.progress.totalBytes), wanted $data_bytes"
[ "$(field podvolumebackup bk1 .status.progress.bytesDone)" = "$data_bytes" ] || fail "bk1: bytesDone"
for t in acceptedTimestamp startTimestamp completionTimestamp; do
    [ -n "$(field podvolumebackup bk1 ".status.$t")" ] || fail "bk1: no status.$t"
done
inc1=$(field podvolumebackup bk1 .status.incrementalBytes)
[ "$inc1" -ge 3000000 ] || fail "bk1: incrementalBytes $inc1"
snapshots_of default >"$tmp/snaps.json"
python3 - "$tmp/snaps.json" "$snap1" <<'EOF' || fail "bk1: the snapshot's host, labels or tags"
import json, sys
s = [x for x in json.load(open(sys.argv[1])) if x["id"] == sys.argv[2]][0]
assert s["hostname"] == "default/data", s["hostname"]
assert s["labels"] == {"pod": "src", "namespace": "default", "volume": "data", "pvc": "data"}, s["labels"]
assert "backup=nightly" in s["tags"] and "volume=data" in s["tags"], s["tags"]
EOF
pass "PVB -> Completed with snapshotID, path, progress, incrementalBytes; snapshot labelled"

# --- 2. restore into another pod's emptyDir volume; completion mark
dst_uid=$(mkpod dst node-a '{name: data, emptyDir: {}}')
target=$pods/$dst_uid/volumes/kubernetes.io~empty-dir/data
mkdir -p "$target"
k8s_restore_wait dst default running
create_pvr rs1 dst "$dst_uid" data "$snap1" restore-uid-1
wait_phase podvolumerestore rs1 Completed
[ "$(field podvolumerestore rs1 .status.node)" = node-a ] || fail "rs1: status.node"
diff -r --no-dereference --exclude=.velero "$vol" "$target" >/dev/null || fail "rs1: restored data differ"
[ "$(stat -c %a "$target/sub/hello.txt")" = 600 ] || fail "rs1: mode not restored"
[ -f "$target/.velero/restore-uid-1" ] || fail "rs1: no completion mark .velero/restore-uid-1"
[ "$(stat -c %a "$target/.velero")" = 755 ] || fail "rs1: .velero mode"
[ "$(field podvolumerestore rs1 .status.progress.bytesDone)" = "$data_bytes" ] || fail "rs1: bytesDone"
pass "PVR -> Completed, data equal, completion mark present"

# --- 2b. a PVR made before its pod is taken once the pod shows up on the node held in its
# restore-wait init container, and waits for the volume's directory
create_pvr rs-late late "" data "$snap1" restore-uid-late
sleep 2
[ -z "$(field podvolumerestore rs-late .status.phase)" ] || fail "rs-late: taken before its pod exists"
late_uid=$(mkpod late node-a '{name: data, emptyDir: {}}')
sleep 2
[ -z "$(field podvolumerestore rs-late .status.phase)" ] ||
    fail "rs-late: taken before the pod's restore-wait init container runs"
k8s_restore_wait late default running
wait_phase podvolumerestore rs-late Accepted 10
sleep 2
phase_is podvolumerestore rs-late Accepted ||
    fail "rs-late: phase $(field podvolumerestore rs-late .status.phase) before its volume exists"
mkdir -p "$pods/$late_uid/volumes/kubernetes.io~empty-dir/data"
wait_phase podvolumerestore rs-late Completed
[ -f "$pods/$late_uid/volumes/kubernetes.io~empty-dir/data/.velero/restore-uid-late" ] ||
    fail "rs-late: no completion mark"
pass "a PVR waits for its pod's restore-wait init container, then in Accepted for its volume"

# --- 2c. an empty volume completes without a snapshot
empty_uid=$(mkpod empty node-a '{name: data, emptyDir: {}}')
mkdir -p "$pods/$empty_uid/volumes/kubernetes.io~empty-dir/data"
create_pvb bk-empty node-a empty "$empty_uid" data
wait_phase podvolumebackup bk-empty Completed
[ -z "$(field podvolumebackup bk-empty .status.snapshotID)" ] || fail "bk-empty: a snapshot ID"
field podvolumebackup bk-empty .status.message | grep -q "is empty: no snapshot was taken" ||
    fail "bk-empty: message $(field podvolumebackup bk-empty .status.message)"
pass "an empty volume -> Completed, no snapshot, a message"

# --- 3. incremental: a new pod of the same PVC finds the parent by PVC
echo "changed" >"$vol/sub/hello.txt"
create_pvb bk2 node-a src "$src_uid" data
wait_phase podvolumebackup bk2 Completed
inc2=$(field podvolumebackup bk2 .status.incrementalBytes)
[ "$inc2" -lt 100000 ] || fail "bk2: incrementalBytes $inc2 is not incremental"
snap2=$(field podvolumebackup bk2 .status.snapshotID)
snapshots_of default | python3 -c '
import json, sys
s = [x for x in json.load(sys.stdin) if x["id"] == sys.argv[2]][0]
assert s.get("parent") == sys.argv[1], s.get("parent")' "$snap1" "$snap2" ||
    fail "bk2: parent is not bk1's snapshot"
pass "second PVB of the same PVC is incremental (parent $snap1)"

# --- 4. malformed objects and missing things fail with a message; the agent goes on
create_pvb bad-vol node-a src "$src_uid" nope
create_pvb bad-bsl node-a src "$src_uid" data nowhere
create_pvb bad-pod node-a ghost "" data
create_pvr bad-snap dst "$dst_uid" data 0123456789abcdef restore-uid-2
wait_phase podvolumebackup bad-vol Failed
wait_phase podvolumebackup bad-bsl Failed
wait_phase podvolumebackup bad-pod Failed
wait_phase podvolumerestore bad-snap Failed
field podvolumebackup bad-vol .status.message | grep -q "no volume named nope" || fail "bad-vol message"
field podvolumebackup bad-bsl .status.message | grep -q "BackupStorageLocation nowhere does not exist" ||
    fail "bad-bsl message: $(field podvolumebackup bad-bsl .status.message)"
field podvolumebackup bad-pod .status.message | grep -q "pod default/ghost does not exist" ||
    fail "bad-pod message"
field podvolumerestore bad-snap .status.message | grep -q "is not in the podvault repository" ||
    fail "bad-snap message: $(field podvolumerestore bad-snap .status.message)"
create_pvb after-bad node-a src "$src_uid" data
wait_phase podvolumebackup after-bad Completed
pass "malformed objects -> Failed with a message; the agent goes on"

# --- 5. a second agent for node-b; a PVB of node-c stays New
kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata:
  name: pv-b
  annotations: {pv.kubernetes.io/migrated-to: hostpath.csi.k8s.io}
spec: {capacity: {storage: 1Gi}, accessModes: [ReadWriteOnce], nfs: {server: nfs.example, path: /b}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data-b, namespace: default}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}, volumeName: pv-b}
EOF
b_uid=$(mkpod pod-b node-b '{name: data, persistentVolumeClaim: {claimName: data-b}}')
mkdir -p "$pods/$b_uid/volumes/kubernetes.io~csi/pv-b/mount"
echo "on b" >"$pods/$b_uid/volumes/kubernetes.io~csi/pv-b/mount/b.txt"
start_agent b node-b "${b_conn[@]}"
create_pvb bk-b node-b pod-b "$b_uid" data
create_pvb bk-c node-c src "$src_uid" data
wait_phase podvolumebackup bk-b Completed
grep -q '"name":"bk-b"' "$tmp/agent-b.log" || fail "agent b did not log bk-b"
if grep -q '"name":"bk-b"' "$tmp/agent-a.log"; then fail "agent a touched node-b's PVB"; fi
sleep 2
[ -z "$(field podvolumebackup bk-c .status.phase)" ] || fail "a PVB of node-c was taken"
if grep -q '"level":"\(warning\|error\)"' "$tmp/agent-b.log"; then
    fail "agent b (TLS, token, RBAC of deploy/agent/rbac.yaml) met errors"
fi
if [ ${#K8S_TLS_ARGS[@]} -gt 0 ]; then # the RBAC is enforced: what the rules leave out is refused
    tls_get() {
        curl -s -o /dev/null -w '%{http_code}' --cacert "$tmp/ca.pem" \
            -H "Authorization: Bearer agent-token" "https://127.0.0.1:$(cat "$tmp/k8s.tls-port")$1"
    }
    [ "$(tls_get /api/v1/namespaces/velero/secrets/velero-repo-credentials)" = 200 ] ||
        fail "RBAC: the agent cannot read the repository password"
    [ "$(tls_get /api/v1/namespaces/velero/secrets)" = 403 ] || fail "RBAC: secrets can be listed"
    [ "$(tls_get /api/v1/namespaces/default/secrets/other)" = 403 ] || fail "RBAC: other secrets"
fi
stop_agent b TERM
pass "two agents for two nodes each take only their own objects (b: TLS, token, RBAC: ${#K8S_TLS_ARGS[@]})"

# --- 6. a dropped watch and a 410 Gone
k8s_admin drop-watches >/dev/null
create_pvb after-drop node-a src "$src_uid" data
wait_phase podvolumebackup after-drop Completed
k8s_admin compact >/dev/null
create_pvb after-410 node-a src "$src_uid" data
wait_phase podvolumebackup after-410 Completed
metrics=$(curl -sf "http://127.0.0.1:$port_a/metrics")
grep -q 'podvault_agent_watch_total{event="expired"} [1-9]' <<<"$metrics" ||
    fail "no expired watch counted: $(grep watch_total <<<"$metrics")"
grep -q 'podvault_agent_jobs_total{kind="backup",phase="Completed"} [1-9]' <<<"$metrics" ||
    fail "metrics: no completed backups"
pass "dropped watch resumed, 410 relisted"

# --- 7. status writes go to /status when the kind has a status subresource
k8s_admin status-subresource '{"resource":"podvolumebackups","group":"velero.io","on":true}' >/dev/null
create_pvb with-sub node-a src "$src_uid" data
wait_phase podvolumebackup with-sub Completed
k8s_admin status-subresource '{"resource":"podvolumebackups","group":"velero.io","on":false}' >/dev/null
pass "status subresource"

# --- 8. 409 conflicts on status writes are retried
k8s_admin fail '{"method":"PUT","path":"podvolumebackups/conflicted","code":409,"count":3}' >/dev/null
create_pvb conflicted node-a src "$src_uid" data
wait_phase podvolumebackup conflicted Completed
k8s_admin stats | grep -q '"failures_left": 0' || fail "the injected 409s were not all met"
pass "409 Conflict retried"

# --- 9. cancel, agent killed mid-backup, SIGTERM handback: a slow podvault makes jobs last
stop_agent a TERM
export PODVAULT_REAL=$PODVAULT PV_SLOW_SECONDS=30 PV_RECORD_TMPDIR=$tmp/job-tmpdir
start_agent slow node-a --podvault "$src/tests/k8s/slow-podvault.sh"
create_pvb to-cancel node-a src "$src_uid" data
wait_phase podvolumebackup to-cancel InProgress 20
kc patch podvolumebackup to-cancel -n velero --type merge -p '{"spec":{"cancel":true}}' >/dev/null
wait_phase podvolumebackup to-cancel Canceled 20
pass "cancel of a running backup -> Canceled"

create_pvb killed node-a src "$src_uid" data
wait_phase podvolumebackup killed InProgress 20
# Jobs assemble packs in temporary files: on the scratch volume, never the read-only root.
wait_for 10 test -s "$tmp/job-tmpdir" || fail "the slow podvault recorded no TMPDIR"
if grep -vqx "$tmp/scratch" "$tmp/job-tmpdir"; then fail "a job ran with TMPDIR $(sort -u "$tmp/job-tmpdir")"; fi
pass "jobs get TMPDIR on the scratch directory"
stop_agent slow KILL
start_agent a2 node-a
wait_phase podvolumebackup killed Failed 20
field podvolumebackup killed .status.message | grep -q "agent restarted while the backup was running" ||
    fail "killed: message $(field podvolumebackup killed .status.message)"
stop_agent a2 TERM
pass "agent killed mid-backup -> Failed with a message after restart"

start_agent slow2 node-a --podvault "$src/tests/k8s/slow-podvault.sh"
create_pvb handed-back node-a src "$src_uid" data
wait_phase podvolumebackup handed-back InProgress 20
stop_agent slow2 TERM
phase_is podvolumebackup handed-back Accepted || fail "handed-back: phase $(field podvolumebackup handed-back .status.phase)"
start_agent a3 node-a
wait_phase podvolumebackup handed-back Completed
stop_agent a3 TERM
grep -q '"msg":"stopped"' "$tmp/agent-a3.log" || fail "agent a3 did not stop cleanly"
pass "SIGTERM hands a running backup back; the next agent completes it"

# --- 10. a Velero 1.16 CRD: only New, InProgress, Completed and Failed are valid phases, and
# the fields it does not declare (node, acceptedTimestamp, incrementalBytes) are pruned
kc apply -f - >/dev/null <<'EOF'
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: podvolumebackups.velero.io}
spec:
  group: velero.io
  names: {kind: PodVolumeBackup, listKind: PodVolumeBackupList, plural: podvolumebackups, singular: podvolumebackup}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
          status:
            type: object
            properties:
              phase: {type: string, enum: [New, InProgress, Completed, Failed]}
              message: {type: string}
              path: {type: string}
              snapshotID: {type: string}
              startTimestamp: {type: string}
              completionTimestamp: {type: string}
              progress: {type: object, properties: {totalBytes: {type: integer}, bytesDone: {type: integer}}}
EOF
start_agent legacy node-a
create_pvb legacy-phases node-a src "$src_uid" data
wait_phase podvolumebackup legacy-phases Completed
grep -q "refuses phases newer than Velero 1.16" "$tmp/agent-legacy.log" ||
    fail "the agent did not report the legacy CRD"
[[ $(field podvolumebackup legacy-phases .status.snapshotID) =~ ^[0-9a-f]{64}$ ]] ||
    fail "legacy-phases: no snapshotID"
[ -z "$(field podvolumebackup legacy-phases .status.progress.incrementalBytes)" ] ||
    fail "legacy-phases: the CRD did not prune an unknown field"
stop_agent legacy TERM
pass "a CRD of Velero 1.16 (legacy phases)"

echo "agent e2e: all ok"
