#!/usr/bin/env bash
# agent_security.sh - what a tenant cannot make the agent (root on its node) do, end to end
# against the API server stand-in and a local repository:
#  1. a racer in one pod's volume, swapping .velero with a symlink to another pod's volume while
#     PodVolumeRestores write their completion marks, leaves that other volume untouched;
#  2. no restore into a pod that is not held in its restore-wait init container: one without it
#     fails at once, one past it fails at the prepare timeout; neither volume is written;
#  3. a PVR with an unusable restore UID or sourceNamespace fails before the volume is touched;
#  4. a volume directory that is a symlink is refused;
#  5. uploaderSettings parallelism beyond what podvault runs is clamped and said.
set -euo pipefail
src=${PV_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$src/tests/k8s/agent_lib.sh"

agent_begin agent-sec
k8s_start "$tmp" || fail "the stand-in did not start"
velero_setup "$src/deploy/agent/rbac.yaml"

# --- a snapshot to restore
src_uid=$(mkpod src node-a '{name: data, emptyDir: {}}')
mkdir -p "$(vol_of "$src_uid")/sub"
head -c 200000 /dev/urandom >"$(vol_of "$src_uid")/sub/blob"
echo hello >"$(vol_of "$src_uid")/hello.txt"
start_agent a node-a --prepare-timeout 4s
create_pvb bk1 node-a src "$src_uid" data
wait_phase podvolumebackup bk1 Completed
snap=$(field podvolumebackup bk1 .status.snapshotID)

# --- the other pod's volume: root-only files in a 0700 directory
victim_uid=$(mkpod victim node-a '{name: data, emptyDir: {}}')
victim=$(vol_of "$victim_uid")
mkdir -p "$victim/private"
chmod 0700 "$victim/private"
for i in $(seq 1 1000); do : >"$victim/private/f$i"; done
chmod 0600 "$victim"/private/*
victim_state() { (cd "$victim" && find . -printf '%p %m %s\n' | sort | sha256sum); }
victim_before=$(victim_state)

# --- 1. the race: an unprivileged process in pod A's volume swaps .velero with a symlink to
# the other volume, over and over, while restores into pod A write their marks
a_uid=$(mkpod target node-a '{name: data, emptyDir: {}}')
avol=$(vol_of "$a_uid")
mkdir -p "$avol"
chmod 0777 "$avol"
k8s_restore_wait target default running
racer=(python3 -c '
import ctypes, os, sys, time
libc = ctypes.CDLL("libc.so.6", use_errno=True)
vol, victim, flag = sys.argv[1], sys.argv[2], sys.argv[3]
until = time.time() + 300
mark, swap = (os.path.join(vol, n).encode() for n in (".velero", "swap"))
AT_FDCWD, RENAME_EXCHANGE, swaps = -100, 2, 0
while os.path.exists(flag) and time.time() < until:
    if not os.path.lexists(swap):
        try: os.symlink(victim, swap)
        except OSError: pass
    if not os.path.lexists(mark):
        try: os.makedirs(os.path.join(mark, b"sub"))
        except OSError: pass
    if libc.renameat2(AT_FDCWD, mark, AT_FDCWD, swap, RENAME_EXCHANGE) == 0: swaps += 1
print(swaps)' "$avol" "$victim/private" "$tmp/racing")
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null && [ -x /usr/bin/python3 ]; then
    racer[0]=/usr/bin/python3 # the system's, which an unprivileged user can run
    chmod 0711 "$tmp" # so that the racer reaches its volume (and nothing else)
    racer=(setpriv --reuid=65534 --regid=65534 --clear-groups "${racer[@]}")
fi
: >"$tmp/racing"
"${racer[@]}" >"$tmp/racer.out" 2>&1 &
racer_pid=$!
done_restores=0
for i in $(seq 1 10); do
    create_pvr "race-$i" target "$a_uid" data "$snap" "race-uid-$i"
    wait_for 60 bash -c "p=\$(kubectl --server $K8S_URL get podvolumerestore race-$i -n velero \
        -o jsonpath='{.status.phase}'); [ \"\$p\" = Completed ] || [ \"\$p\" = Failed ]" ||
        fail "race-$i did not end"
    phase_is podvolumerestore "race-$i" Completed && done_restores=$((done_restores + 1))
done
rm -f "$tmp/racing"
wait "$racer_pid" || fail "the racer failed: $(cat "$tmp/racer.out")"
swaps=$(cat "$tmp/racer.out")
[ "$swaps" -gt 100 ] || fail "the racer swapped only ${swaps:-0} times: no race"
[ "$(victim_state)" = "$victim_before" ] || fail "the other pod's volume changed during the race"
[ -z "$(find "$victim" -newer "$tmp/racer.out" -print -quit 2>/dev/null)" ] ||
    fail "something in the other pod's volume is newer than the race"
cmp "$avol/sub/blob" "$(vol_of "$src_uid")/sub/blob" || fail "the raced restore's data differ"
pass "a racer swapping .velero for a symlink to another volume: that volume untouched ($swaps swaps; $done_restores of 10 restores completed)"

# --- 2. the restore-wait gate
kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: live, namespace: default}
spec:
  nodeName: node-a
  containers: [{name: app, image: busybox, volumeMounts: [{name: data, mountPath: /data}]}]
  volumes: [{name: data, emptyDir: {}}]
EOF
live_uid=$(kc get pod live -o jsonpath='{.metadata.uid}')
k8s_running live default
mkdir -p "$(vol_of "$live_uid")"
echo "in use" >"$(vol_of "$live_uid")/app.db"
create_pvr into-live live "$live_uid" data "$snap" uid-live
wait_phase podvolumerestore into-live Failed 10
field podvolumerestore into-live .status.message | grep -q "has no restore-wait init container" ||
    fail "into-live: message $(field podvolumerestore into-live .status.message)"
[ "$(ls -A "$(vol_of "$live_uid")")" = app.db ] || fail "into-live: the live volume was written"

past_uid=$(mkpod past node-a '{name: data, emptyDir: {}}')
mkdir -p "$(vol_of "$past_uid")"
k8s_restore_wait past default terminated
create_pvr into-past past "$past_uid" data "$snap" uid-past
sleep 2
[ -z "$(field podvolumerestore into-past .status.phase)" ] ||
    fail "into-past: taken while restore-wait has ended"
wait_phase podvolumerestore into-past Failed 30
field podvolumerestore into-past .status.message | grep -q "within 4 s.*has ended" ||
    fail "into-past: message $(field podvolumerestore into-past .status.message)"
[ -z "$(ls -A "$(vol_of "$past_uid")")" ] || fail "into-past: the volume was written"
pass "no restore into a pod not held in restore-wait (none: at once; ended: at the prepare timeout)"

# --- 3. refused before the volume is touched
bad_uid=$(mkpod held node-a '{name: data, emptyDir: {}}')
mkdir -p "$(vol_of "$bad_uid")"
k8s_restore_wait held default running
create_pvr bad-uid held "$bad_uid" data "$snap" "..hidden"
wait_phase podvolumerestore bad-uid Failed
field podvolumerestore bad-uid .status.message | grep -q "cannot name the completion mark: nothing was restored" ||
    fail "bad-uid: message $(field podvolumerestore bad-uid .status.message)"
kc create -f - >/dev/null <<EOF
apiVersion: velero.io/v1
kind: PodVolumeRestore
metadata:
  name: bad-ns
  namespace: velero
  ownerReferences: [{apiVersion: velero.io/v1, kind: Restore, name: r1, uid: "uid-bad-ns", controller: true}]
spec:
  pod: {kind: Pod, namespace: default, name: held, uid: "$bad_uid"}
  volume: data
  backupStorageLocation: default
  repoIdentifier: ""
  uploaderType: kopia
  snapshotID: "$snap"
  sourceNamespace: ".."
EOF
wait_phase podvolumerestore bad-ns Failed
field podvolumerestore bad-ns .status.message | grep -q 'sourceNamespace "\.\." is not a Kubernetes namespace name' ||
    fail "bad-ns: message $(field podvolumerestore bad-ns .status.message)"
[ -z "$(ls -A "$(vol_of "$bad_uid")")" ] || fail "a refused PVR wrote into the volume"
pass "an unusable restore UID or sourceNamespace fails before anything is written"

# --- 4. a volume directory that is a symlink
link_uid=$(mkpod linked node-a '{name: data, emptyDir: {}}')
mkdir -p "$pods/$link_uid/volumes/kubernetes.io~empty-dir"
ln -s "$victim" "$(vol_of "$link_uid")"
k8s_restore_wait linked default running
create_pvr into-link linked "$link_uid" data "$snap" uid-link
wait_phase podvolumerestore into-link Failed
field podvolumerestore into-link .status.message | grep -q "is a symlink: refusing to follow it" ||
    fail "into-link: message $(field podvolumerestore into-link .status.message)"
[ "$(victim_state)" = "$victim_before" ] || fail "a restore through a symlinked volume changed it"
pass "a symlinked volume directory is refused"

# --- 5. parallelism beyond podvault's: clamped, and said
many_uid=$(mkpod many node-a '{name: data, emptyDir: {}}')
mkdir -p "$(vol_of "$many_uid")"
k8s_restore_wait many default running
create_pvr many many "$many_uid" data "$snap" uid-many \
    'uploaderSettings: {ParallelFilesDownload: "100000"}'
wait_phase podvolumerestore many Completed
field podvolumerestore many .status.message | grep -q "ParallelFilesDownload 100000 is more than podvault runs: 256 used" ||
    fail "many: message $(field podvolumerestore many .status.message)"
pass "uploaderSettings parallelism clamped with a message"

stop_agent a TERM
echo "agent security: all ok"
