#!/usr/bin/env bash
# agent_gc.sh - deleted Velero backups free their data, against the API server stand-in and a
# location that is a directory, or the S3 bucket of PV_TEST_S3 (run-tests.sh's S3 step: a real
# Ceph RGW; objects are put, listed and removed there by tests/tools/pv_objects). The test plays
# Velero: it makes Backup objects, their PodVolumeBackups (owned by the Backup, as velero pkg/podvolume/backupper.go makes them) and
# backups/<name>/velero-backup.json in the location; the agent backs up. After two backups the
# location's top level holds only the folders Velero's BSL controller accepts
# (pkg/persistence/object_store_layout.go). Then backup b1 is deleted as
# pkg/controller/backup_deletion_controller.go does (its objects under backups/b1/, then the
# Backup; its PVBs go with their owner). `podvault maintain --location` keeps b1's snapshot while
# the Backup list fails, while b1's velero-backup.json cannot be read, and while the Backup is
# only gone from the cluster (the location still has it); --dry-run only names it; then it
# forgets exactly b1's snapshot and prunes in the same run (the repository shrinks), keeps a
# snapshot that carries Velero's tags but no backup labels, and b2 still restores byte for byte.
# With S3, the location answering only 500 (a fault proxy) costs nothing either.
# Finally (directory only) a repository at the old path (<prefix>/podvault/<ns>) is refused with
# the move command.
set -euo pipefail
src=${PV_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$src/tests/k8s/agent_lib.sh"

agent_begin agent-gc
k8s_start "$tmp" || fail "the stand-in did not start"
test_location agent-gc
repo=$(repo_of default)
pv() { PODVAULT_PASSWORD=static-passw0rd "$PODVAULT" --no-cache "${s3_opts[@]}" "$@"; }

velero_setup
velero_location default "$location_config"
kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default}
spec:
  nodeName: n1
  containers: [{name: app, image: busybox, volumeMounts: [{name: data, mountPath: /data}]}]
  volumes: [{name: data, emptyDir: {}}]
EOF
k8s_node_agent n1
k8s_running web default
uid_pod=$(kc get pod web -o jsonpath='{.metadata.uid}')
vol=$pods/$uid_pod/volumes/kubernetes.io~empty-dir/data
mkdir -p "$vol"

start_agent a n1

# velero_backup NAME: a Backup, its PodVolumeBackup as Velero's backupper makes it, and, once the
# agent completed it, the backup's objects in the location as Velero persists them.
velero_backup() {
    local name=$1 uid
    kc create -f - >/dev/null <<EOF
apiVersion: velero.io/v1
kind: Backup
metadata: {name: $name, namespace: velero}
spec: {storageLocation: default, defaultVolumesToFsBackup: true}
EOF
    uid=$(kc get backup "$name" -n velero -o jsonpath='{.metadata.uid}')
    kc create -f - >/dev/null <<EOF
apiVersion: velero.io/v1
kind: PodVolumeBackup
metadata:
  name: $name-data
  namespace: velero
  labels: {velero.io/backup-name: $name, velero.io/backup-uid: "$uid"}
  ownerReferences: [{apiVersion: velero.io/v1, kind: Backup, name: $name, uid: "$uid", controller: true}]
spec:
  node: n1
  pod: {kind: Pod, namespace: default, name: web, uid: "$uid_pod"}
  volume: data
  backupStorageLocation: default
  repoIdentifier: ""
  uploaderType: kopia
  tags: {backup: $name, backup-uid: "$uid", pod: web, pod-uid: "$uid_pod", ns: default, volume: data}
EOF
    wait_for 60 phase_is podvolumebackup "$name-data" Completed ||
        fail "PVB $name-data: $(kc get podvolumebackup "$name-data" -n velero -o jsonpath='{.status.phase} {.status.message}')"
    kc get backup "$name" -n velero -o json >"$tmp/$name.json"
    echo tarball >"$tmp/$name.tar.gz"
    objs put "backups/$name/velero-backup.json" "$tmp/$name.json" &&
        objs put "backups/$name/$name.tar.gz" "$tmp/$name.tar.gz" ||
        fail "storing backup $name's objects in the location"
    echo "$uid"
}
snap_of() { field podvolumebackup "$1-data" .status.snapshotID; }
count() { pv --json -r "$repo" snapshots | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }

head -c 700000 /dev/urandom >"$vol/one.bin"
printf 'first\n' >"$vol/note"
uid1=$(velero_backup b1)
cp -a "$vol" "$tmp/want1"
rm "$vol/one.bin"
head -c 600000 /dev/urandom >"$vol/two.bin"
printf 'second\n' >"$vol/note"
uid2=$(velero_backup b2)
cp -a "$vol" "$tmp/want2"
s1=$(snap_of b1)
s2=$(snap_of b2)
[ -n "$s1" ] && [ -n "$s2" ] || fail "no snapshot IDs in the PVBs"
pv --json -r "$repo" snapshots | python3 -c '
import json, sys
snaps = {s["id"]: s["labels"] for s in json.load(sys.stdin)}
for sid, name, uid in ((sys.argv[1], "b1", sys.argv[3]), (sys.argv[2], "b2", sys.argv[4])):
    l = snaps[sid]
    assert l.get("velero-backup") == name and l.get("velero-backup-uid") == uid, l
' "$s1" "$s2" "$uid1" "$uid2" || fail "the snapshots do not record their Velero backups"
# A snapshot with Velero's tags but no backup labels (as `podvault request` or an earlier build
# made them): never touched.
mkdir -p "$tmp/other"
echo other >"$tmp/other/f"
pv -q -r "$repo" backup "$tmp/other" --tag backup=b1 --tag "backup-uid=$uid1" || fail "backup of other"
[ "$(count)" = 3 ] || fail "not 3 snapshots"
pass "two Velero backups through the agent, each snapshot labelled with its backup's name and uid"

# The location's top level, as Velero's BSL controller validates it: every common prefix
# (folder) under the prefix must be one of its subdirs (object_store.go IsValid).
objs top >"$tmp/top" || fail "listing the location's top level"
python3 - "$tmp/top" <<'EOF' || fail "the location holds top-level folders Velero refuses: $(cat "$tmp/top")"
import sys
allowed = {"backups/", "restores/", "restic/", "metadata/", "plugins/", "kopia/"}
top = open(sys.argv[1]).read().split()
assert [t for t in top if t.endswith("/") and t not in allowed] == [], top
assert "plugins/" in top and "backups/" in top, top
EOF
pass "the location's top level holds only backups/ and plugins/ (Velero's layout rule)"

maint() { # LOG ARGS...
    local log=$1
    shift
    TMPDIR=$tmp/scratch timeout 120 "$PODVAULT" maintain --location default --server "$K8S_URL" \
        --namespace velero --credentials-file "$tmp/cloud" --cache-dir "$tmp/maint-cache" "$@" \
        >"$log" 2>&1
}
data_bytes() { objs du plugins/podvault/default/data/; }

# --- delete b1 as Velero does, step by step; nothing may go before both steps are done
kc delete backup b1 -n velero >/dev/null # the Backup gone, its objects still in the location
kc delete podvolumebackup b1-data -n velero >/dev/null
maint "$tmp/m1.log" || { cat "$tmp/m1.log" >&2; fail "maintain failed (b1 only gone from the cluster)"; }
[ "$(count)" = 3 ] || fail "a snapshot was forgotten while the location still holds its backup"
if grep -q forgot "$tmp/m1.log"; then fail "m1 forgot something"; fi
pass "a backup gone from the cluster but still in the location (sync, a new cluster) is kept"

objs rm-prefix backups/b1/ # DeleteBackup: every object under backups/b1/
k8s_admin fail '{"method":"GET","path":"/namespaces/velero/backups($|\\?)","code":500,"count":1}' >/dev/null
maint "$tmp/m2.log" || { cat "$tmp/m2.log" >&2; fail "maintain failed (Backup list failing)"; }
expect "$tmp/m2.log" "listing Velero Backups in namespace velero failed"
[ "$(count)" = 3 ] || fail "a snapshot was forgotten while the Backup list failed"
printf '{"kind": "Backup", "metadata": {"name": "b1", "ui' >"$tmp/cut.json" # cut short
objs put backups/b1/velero-backup.json "$tmp/cut.json" || fail "storing a cut velero-backup.json"
maint "$tmp/m3.log" || { cat "$tmp/m3.log" >&2; fail "maintain failed (velero-backup.json cut short)"; }
expect "$tmp/m3.log" "the snapshots of backup b1 are kept"
[ "$(count)" = 3 ] || fail "a snapshot was forgotten while b1's velero-backup.json could not be read"
objs rm-prefix backups/b1/
if [ -z "${PV_TEST_S3:-}" ]; then
    mkdir -p "$tmp/store/backups/b1/velero-backup.json" # an object that cannot be read
    maint "$tmp/m3b.log" || { cat "$tmp/m3b.log" >&2; fail "maintain failed (location unreadable)"; }
    expect "$tmp/m3b.log" "the snapshots of backup b1 are kept"
    [ "$(count)" = 3 ] || fail "a snapshot was forgotten while the location could not be read"
    rm -rf -- "${tmp:?}/store/backups/b1"
else # the whole location unreadable: every request to the S3 server answered 500
    "$(dirname "$PODVAULT")/pv_faultproxy" --target "$(cut -d/ -f3 <<<"${PV_TEST_S3#s3:}")" --always 500 \
        >"$tmp/proxy.out" 2>&1 &
    proxy=$!
    on_exit "kill $proxy"
    wait_for 10 grep -q '^listening' "$tmp/proxy.out" || fail "the fault proxy did not start"
    bsl_url=$(kc get backupstoragelocation default -n velero -o jsonpath='{.spec.config.s3Url}')
    kc patch backupstoragelocation default -n velero --type=merge -p \
        "{\"spec\":{\"config\":{\"s3Url\":\"http://$(awk '/^listening/{print $2}' "$tmp/proxy.out")\"}}}" >/dev/null
    if maint "$tmp/m3b.log"; then fail "maintain exited 0 with every request to the location failing"; fi
    if grep -q "forgot snapshot" "$tmp/m3b.log"; then fail "a snapshot was forgotten with the location failing"; fi
    kc patch backupstoragelocation default -n velero --type=merge -p \
        "{\"spec\":{\"config\":{\"s3Url\":\"$bsl_url\"}}}" >/dev/null
    kill "$proxy"
    [ "$(count)" = 3 ] || fail "a snapshot was forgotten while the location could not be read"
fi
pass "with the Backup list failing, b1's velero-backup.json unreadable or the location failing, nothing is forgotten"

maint "$tmp/m4.log" --dry-run || { cat "$tmp/m4.log" >&2; fail "maintain --dry-run failed"; }
expect "$tmp/m4.log" "would forget snapshot $s1"
expect "$tmp/m4.log" "of Velero backup b1 (uid $uid1)"
[ "$(count)" = 3 ] || fail "--dry-run forgot a snapshot"
pass "--dry-run names b1's snapshot and forgets nothing"

before=$(data_bytes)
maint "$tmp/m5.log" || { cat "$tmp/m5.log" >&2; fail "maintain failed"; }
after=$(data_bytes)
expect "$tmp/m5.log" "forgot snapshot $s1"
expect "$tmp/m5.log" "of Velero backup b1 (uid $uid1)"
expect "$tmp/m5.log" "forgot 1 snapshots of deleted Velero backups"
left=$(pv --json -r "$repo" snapshots | python3 -c 'import json,sys; print(" ".join(sorted(s["id"] for s in json.load(sys.stdin))))')
case " $left " in *" $s1 "*) fail "b1's snapshot is still there" ;; esac
case " $left " in *" $s2 "*) ;; *) fail "b2's snapshot is gone" ;; esac
[ "$(count)" = 2 ] || fail "not exactly b1's snapshot was forgotten"
[ "$after" -lt $((before - 500000)) ] || fail "the repository did not shrink: $before -> $after bytes"
pv -q -r "$repo" restore "$s2" --target "$tmp/got2" || fail "restore of b2 failed"
diff -r "$tmp/want2" "$tmp/got2" || fail "b2 differs after restore"
pv -q -r "$repo" check --read-data || fail "check --read-data failed after the forget"
maint "$tmp/m6.log" || { cat "$tmp/m6.log" >&2; fail "a second maintain failed"; }
if grep -q forgot "$tmp/m6.log"; then fail "the second run forgot something"; fi
pass "maintenance forgot exactly b1's snapshot and pruned it ($before -> $after bytes); b2 restores byte for byte"

# --- a repository at the old path is refused, with the command that moves it (a directory
# location: objects cannot be moved in a bucket here, and the rule does not depend on the kind)
if [ -n "${PV_TEST_S3:-}" ]; then
    echo "agent gc: all ok (S3 at $loc_root)"
    exit 0
fi
store=$tmp/store
mkdir -p "$store/podvault"
mv "$repo" "$store/podvault/default"
if maint "$tmp/m7.log"; then fail "maintain exited 0 with a repository at the old path"; fi
expect "$tmp/m7.log" "mv '$store/podvault/default' '$repo'"
kc create -f - >/dev/null <<EOF
apiVersion: velero.io/v1
kind: PodVolumeBackup
metadata: {name: old-path, namespace: velero}
spec:
  node: n1
  pod: {kind: Pod, namespace: default, name: web, uid: "$uid_pod"}
  volume: data
  backupStorageLocation: default
  repoIdentifier: ""
  uploaderType: kopia
EOF
wait_for 60 phase_is podvolumebackup old-path Failed ||
    fail "a backup with the repository at the old path did not fail"
kc get podvolumebackup old-path -n velero -o jsonpath='{.status.message}' >"$tmp/old.msg"
expect "$tmp/old.msg" "where earlier podvault builds put it"
expect "$tmp/old.msg" "mv '$store/podvault/default' '$repo'"
[ -e "$repo" ] && fail "a new repository was made beside the old one"
pass "a repository at the old path: maintenance and the agent refuse, naming the move command"
echo "agent gc: all ok"
