#!/usr/bin/env bash
# agent_traffic.sh - agent traffic in minutes: many PodVolumeBackups across three namespaces
# and two nodes, then PodVolumeRestores of the completed ones into pods held in restore-wait,
# while the API server stand-in drops watches, expires resourceVersions (410), answers 409
# conflicts to status writes and 500s to lists, and agent b is killed (SIGKILL) and started
# again at random. Every object must end in a final phase (Completed, or Failed with a
# message), no volume may be backed up twice (one snapshot per volume at most: an object served
# twice at once would make two), every Completed backup's snapshot restores byte for byte, every
# Completed restore equals its source and has its completion mark, and agent a (never killed)
# has its RSS and open descriptors reported at the start and the end (bounded: within 16
# descriptors, RSS within 2x + 16 MiB). With PV_TEST_S3 set the location is in that bucket.
#   PV_TRAFFIC_PVBS  how many PVBs (default 36; more for a longer run)
#   PV_TRAFFIC_PVRS  how many of the completed ones are restored (default 18)
#   PV_TRAFFIC_SECS  bound on the chaos phase in seconds (default 90)
set -euo pipefail
src=${PV_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$src/tests/k8s/agent_lib.sh"
"$PODVAULT" agent --help >/dev/null 2>&1 || skip "this podvault does not dispatch the agent command"

N=${PV_TRAFFIC_PVBS:-36}
LIMIT=${PV_TRAFFIC_SECS:-90}
agent_begin agent-traffic
k8s_start "$tmp" || fail "the stand-in did not start"
kc create namespace velero >/dev/null
kc apply -f "$src/deploy/agent/rbac.yaml" >/dev/null
test_location agent-traffic # a local directory, or S3 with PV_TEST_S3
velero_location default "$location_config"
RANDOM=20261208

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 | wc -l; }

# --- the pods: one emptyDir volume each, in three namespaces, on two nodes
NSS=(shop web db)
for ns in "${NSS[@]}"; do kc create namespace "$ns" >/dev/null; done
declare -A uid_of ns_of node_of
# pod_yaml NAME NS NODE [restore]: a pod with an emptyDir volume "data" (with "restore", held in
# Velero's restore-wait init container), as one document of a stream
pod_yaml() {
    local init=""
    [ "${4:-}" = restore ] && init="initContainers: [{name: restore-wait, image: velero/velero-restore-helper}]"
    cat <<EOF
---
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: $2}
spec:
  nodeName: $3
  $init
  containers: [{name: app, image: busybox, volumeMounts: [{name: data, mountPath: /data}]}]
  volumes: [{name: data, emptyDir: {}}]
EOF
}
# uids PREFIX: "namespace/name uid" of every pod whose name starts with PREFIX
uids() {
    kc get pods -A -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name} {.metadata.uid}{"\n"}{end}' |
        grep "/$1[0-9]* "
}
for i in $(seq 1 "$N"); do
    ns_of[$i]=${NSS[$((i % 3))]} node_of[$i]=node-a
    [ $((i % 2)) = 0 ] && node_of[$i]=node-b
done
for i in $(seq 1 "$N"); do pod_yaml "p$i" "${ns_of[$i]}" "${node_of[$i]}"; done | kc apply -f - >/dev/null
declare -A uid_by_pod
while read -r pod uid; do uid_by_pod[$pod]=$uid; done < <(uids p)
for i in $(seq 1 "$N"); do
    uid_of[$i]=${uid_by_pod[${ns_of[$i]}/p$i]}
    v=$(vol_of "${uid_of[$i]}")
    mkdir -p "$v/sub"
    head -c $((20000 + i * 997)) /dev/urandom >"$v/blob"
    echo "volume $i" >"$v/sub/note"
done

start_agent a node-a --concurrency 2
start_agent b node-b --concurrency 2
a_pid=$(agent_pid a)
rss0=$(rss_kb "$a_pid") fds0=$(fds "$a_pid")

create() { # I: the PVB of pod pI
    local i=$1
    kc create -f - >/dev/null <<EOF
apiVersion: velero.io/v1
kind: PodVolumeBackup
metadata: {name: pvb$i, namespace: velero, labels: {velero.io/backup-name: nightly}}
spec:
  node: ${node_of[$i]}
  pod: {kind: Pod, namespace: ${ns_of[$i]}, name: p$i, uid: "${uid_of[$i]}"}
  volume: data
  backupStorageLocation: default
  repoIdentifier: ""
  uploaderType: kopia
  tags: {backup: nightly, pod: p$i, ns: ${ns_of[$i]}, volume: data}
EOF
}

final_count() { # KIND: how many objects of KIND are in a final phase
    kc get "$1" -n velero -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' |
        grep -cE '^(Completed|Failed)$' || true
}

# chaos KIND TOTAL CREATE-FUNCTION: creates TOTAL objects in bursts of 5 with a fault between
# bursts (a dropped watch, a 410, 409s on status writes, 500s on lists, or agent b killed and
# started again), until all are created and final or PV_TRAFFIC_SECS have passed; then waits
# up to 60 s for the rest to become final.
created=0 kills=0 faults=0
chaos() {
    local kind=$1 total=$2 make=$3 start=$SECONDS
    created=0
    while [ $((SECONDS - start)) -lt "$LIMIT" ]; do
        for _ in 1 2 3 4 5; do
            [ $created -lt "$total" ] || break
            created=$((created + 1))
            $make $created
        done
        case $((RANDOM % 6)) in
        0) k8s_admin drop-watches >/dev/null ;;
        1) k8s_admin compact >/dev/null ;;
        2)
            k8s_admin fail "{\"method\":\"PUT\",\"path\":\"$kind\",\"code\":409,\"count\":2}" >/dev/null
            k8s_admin fail "{\"method\":\"PATCH\",\"path\":\"$kind\",\"code\":409,\"count\":2}" >/dev/null
            ;;
        3) k8s_admin fail "{\"method\":\"GET\",\"path\":\"$kind\",\"code\":500,\"count\":2}" >/dev/null ;;
        4 | 5)
            stop_agent b KILL
            kills=$((kills + 1))
            sleep 0.$((RANDOM % 9))
            start_agent b node-b --concurrency 2
            ;;
        esac
        faults=$((faults + 1))
        sleep 0.$((RANDOM % 9 + 1))
        [ $created -lt "$total" ] || [ "$(final_count "$kind")" -lt "$total" ] || break
    done
    wait_for 60 test "$(final_count "$kind")" -ge "$total" || true
    chaos_secs=$((SECONDS - start))
}
chaos podvolumebackups "$N" create

# --- every object final, with a message when it failed
kc get podvolumebackups -n velero -o json >"$tmp/pvbs.json"
# table JSON COUNT [pvb]: "name phase snapshot-or-message" lines; fails on an object not final,
# Failed without a message, or (pvb) Completed without a snapshot ID
table() {
    python3 - "$1" "$2" "${3:-}" <<'EOF'

import json, sys
items = json.load(open(sys.argv[1]))["items"]
assert len(items) == int(sys.argv[2]), f"{len(items)} objects, expected {sys.argv[2]}"
bad = []
for o in items:
    st = o.get("status", {})
    ph = st.get("phase", "")
    if ph == "Completed" and (sys.argv[3] != "pvb" or len(st.get("snapshotID", "")) == 64):
        print(o["metadata"]["name"], ph, st.get("snapshotID", "-"))
    elif ph == "Failed" and st.get("message"):
        print(o["metadata"]["name"], ph, "-", st["message"].replace("\n", " ")[:200])
    else:
        bad.append(f'{o["metadata"]["name"]}: phase {ph!r}, status {st}')
if bad:
    print("\n".join(bad))
    sys.exit(1)
EOF
}
table "$tmp/pvbs.json" "$N" pvb >"$tmp/pvb-table" || fail "PVBs: $(cat "$tmp/pvb-table")"
completed=$(grep -c ' Completed ' "$tmp/pvb-table" || true)
failed=$(grep -c ' Failed ' "$tmp/pvb-table" || true)
[ "$completed" -ge $((N / 2)) ] || fail "only $completed of $N completed: $(grep Failed "$tmp/pvb-table" | head -n 5)"
pass "$N PVBs final after $chaos_secs s of traffic ($faults fault rounds, agent b killed $kills times): $completed Completed, $failed Failed with a message"

# --- no volume backed up twice, and every completed backup restores byte for byte
for ns in "${NSS[@]}"; do
    PODVAULT_PASSWORD=static-passw0rd "$PODVAULT" --json --no-cache "${s3_opts[@]}" \
        -r "$(repo_of "$ns")" snapshots >"$tmp/snaps-$ns.json" || fail "snapshots of $ns"
done
dups=$(jq -s -r 'add | group_by(.hostname) | map(select(length > 1) | .[0].hostname) | .[]' "$tmp"/snaps-*.json)
[ -z "$dups" ] || fail "volumes backed up more than once: $dups"
n_snaps=$(jq -s 'add | length' "$tmp"/snaps-*.json)
[ "$n_snaps" -ge "$completed" ] || fail "$n_snaps snapshots for $completed completed backups"
while read -r name phase snap; do
    [ "$phase" = Completed ] || continue
    i=${name#pvb}
    rm -rf -- "${tmp:?}/r"
    PODVAULT_PASSWORD=static-passw0rd "$PODVAULT" --no-cache "${s3_opts[@]}" -q \
        -r "$(repo_of "${ns_of[$i]}")" \
        restore "$snap" --target "$tmp/r" 2>"$tmp/restore.err" ||
        fail "$name: restore of $snap failed: $(cat "$tmp/restore.err")"
    diff -r "$(vol_of "${uid_of[$i]}")" "$tmp/r" >/dev/null || fail "$name: the restore differs"
done <"$tmp/pvb-table"
pass "one snapshot per volume at most ($n_snaps snapshots in all); the $completed completed backups restore byte for byte"
echo "why PVBs failed: $(grep ' Failed ' "$tmp/pvb-table" | cut -d' ' -f4- | sort | uniq -c | tr '\n' ';')"

# --- restores of the completed backups into pods held in restore-wait, through the same faults
grep ' Completed ' "$tmp/pvb-table" | head -n "${PV_TRAFFIC_PVRS:-18}" >"$tmp/to-restore"
R=$(wc -l <"$tmp/to-restore")
declare -A rsrc_of rsnap_of ruid_of
j=0
while read -r name _ snap; do
    j=$((j + 1))
    i=${name#pvb}
    rsrc_of[$j]=$i rsnap_of[$j]=$snap
done <"$tmp/to-restore"
for j in $(seq 1 "$R"); do pod_yaml "r$j" "${ns_of[${rsrc_of[$j]}]}" "${node_of[${rsrc_of[$j]}]}" restore; done |
    kc apply -f - >/dev/null
while read -r pod uid; do uid_by_pod[$pod]=$uid; done < <(uids r)
for j in $(seq 1 "$R"); do
    k8s_restore_wait "r$j" "${ns_of[${rsrc_of[$j]}]}" running
    ruid_of[$j]=${uid_by_pod[${ns_of[${rsrc_of[$j]}]}/r$j]}
    mkdir -p "$(vol_of "${ruid_of[$j]}")"
done
create_restore() { # J: the PVR of restore pod rJ
    local j=$1 i=${rsrc_of[$1]}
    kc create -f - >/dev/null <<EOF
apiVersion: velero.io/v1
kind: PodVolumeRestore
metadata:
  name: pvr$j
  namespace: velero
  labels: {velero.io/restore-name: r1, velero.io/restore-uid: "restore-uid-1"}
spec:
  pod: {kind: Pod, namespace: ${ns_of[$i]}, name: r$j, uid: "${ruid_of[$j]}"}
  volume: data
  backupStorageLocation: default
  repoIdentifier: ""
  uploaderType: kopia
  snapshotID: "${rsnap_of[$j]}"
  sourceNamespace: ${ns_of[$i]}
EOF
}
chaos podvolumerestores "$R" create_restore
kc get podvolumerestores -n velero -o json >"$tmp/pvrs.json"
table "$tmp/pvrs.json" "$R" >"$tmp/pvr-table" || fail "PVRs: $(cat "$tmp/pvr-table")"
rcompleted=0
while read -r name phase _; do
    [ "$phase" = Completed ] || continue
    j=${name#pvr}
    rcompleted=$((rcompleted + 1))
    target=$(vol_of "${ruid_of[$j]}")
    diff -r --no-dereference --exclude=.velero "$(vol_of "${uid_of[${rsrc_of[$j]}]}")" "$target" >/dev/null ||
        fail "$name: the restored volume differs from its source"
    [ -f "$target/.velero/restore-uid-1" ] || fail "$name: no completion mark"
done <"$tmp/pvr-table"
[ "$rcompleted" -ge $((R / 2)) ] || fail "only $rcompleted of $R restores completed"
pass "$R PVRs final after $chaos_secs s of traffic: $rcompleted Completed byte for byte with their completion mark, $((R - rcompleted)) Failed with a message ($(grep ' Failed ' "$tmp/pvr-table" | cut -d' ' -f4- | sort | uniq -c | tr '\n' ';'))"

# --- agent a's memory and descriptors
rss1=$(rss_kb "$a_pid") fds1=$(fds "$a_pid")
echo "agent a: RSS ${rss0} KiB -> ${rss1} KiB, open descriptors ${fds0} -> ${fds1}"
[ "$fds1" -le $((fds0 + 16)) ] || fail "agent a's descriptors grew from $fds0 to $fds1"
[ "$rss1" -le $((2 * rss0 + 16384)) ] || fail "agent a's RSS grew from $rss0 to $rss1 KiB"
pass "agent a stayed bounded: RSS $rss0 -> $rss1 KiB, descriptors $fds0 -> $fds1"
