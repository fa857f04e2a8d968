#!/usr/bin/env bash
# agent_metrics.sh - the agent's metrics endpoint under a flood, and Velero's node-agent series.
# One agent, the API server stand-in, a kubelet-like directory and a local repository:
#  1. 1,500 connections to the endpoint from 127.0.0.2 and 127.0.0.3 (as from two pods; 1,000
#     with half a request, 500 silent, reopened as the server closes them) for 12 s: meanwhile
#     /healthz and /metrics, asked from 127.0.0.1 (as the kubelet), answer within 2 s each time,
#     a PodVolumeBackup completes, the agent's descriptors stay bounded, and no flood connection
#     is ever answered.
#  2. After that backup and a restore, /metrics has Velero's series with Velero's labels
#     (pkg/metrics/metrics.go): enqueue and dequeue counts of the node, the latency histogram
#     and gauge of the backup; nothing of Velero's for the restore.
set -euo pipefail
src=${PV_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$src/tests/k8s/agent_lib.sh"
command -v curl >/dev/null || skip "curl is not installed"
[ -d /proc/self/fd ] || skip "no /proc to count descriptors"

agent_begin agent-metrics
flood_pid=
on_exit '[ -z "$flood_pid" ] || kill "$flood_pid" 2>/dev/null'
k8s_start "$tmp" || fail "the stand-in did not start"
velero_setup

# mkemptydir NAME -> UID: a pod on node-a (mkpod) with an emptyDir volume "data", mounted.
mkemptydir() {
    local uid
    uid=$(mkpod "$1" node-a '{name: data, emptyDir: {}}')
    mkdir -p "$(vol_of "$uid")"
    echo "$uid"
}

src_uid=$(mkemptydir src)
vol=$(vol_of "$src_uid")
head -c 8000000 /dev/urandom >"$vol/big.bin"
mkdir -p "$vol/sub"
for i in $(seq 1 200); do echo "file $i" >"$vol/sub/f$i"; done

start_agent a node-a
agent_pid=$(agent_pid a)
port=$port_a
url=http://127.0.0.1:$port
sleep 1
fds_before=$(ls /proc/$agent_pid/fd | wc -l)

# --- 1. the flood
python3 "$src/tests/integration/agent_flood.py" "$port" 12 1500 "$tmp/flood.stats" 127.0.0.2 127.0.0.3 &
flood_pid=$!
sleep 2 # the 1,500 are open (or being turned away)
kc create -f - >/dev/null <<EOF
apiVersion: velero.io/v1
kind: PodVolumeBackup
metadata:
  name: nightly-x7k2p
  namespace: velero
  labels: {velero.io/backup-name: nightly}
  ownerReferences: [{apiVersion: velero.io/v1, kind: Backup, name: nightly, uid: "b-uid-1", controller: true}]
spec:
  node: node-a
  pod: {kind: Pod, namespace: default, name: src, uid: "$src_uid"}
  volume: data
  backupStorageLocation: default
  repoIdentifier: ""
  uploaderType: kopia
  tags: {backup: nightly, pod: src, ns: default, volume: data}
EOF
max_fds=0 probes=0 slowest=0 done_during=
while kill -0 "$flood_pid" 2>/dev/null; do
    t0=$(date +%s%N)
    curl -sf -m 2 "$url/healthz" >/dev/null || fail "/healthz did not answer within 2 s under the flood (curl exit $?)"
    curl -sf -m 2 -o /dev/null "$url/metrics" || fail "/metrics did not answer within 2 s under the flood (curl exit $?)"
    ms=$((($(date +%s%N) - t0) / 1000000))
    [ "$ms" -gt "$slowest" ] && slowest=$ms
    probes=$((probes + 1))
    n=$(ls /proc/$agent_pid/fd | wc -l)
    [ "$n" -gt "$max_fds" ] && max_fds=$n
    [ -z "$done_during" ] && phase_is podvolumebackup nightly-x7k2p Completed && done_during=$probes
    sleep 0.2
done
wait "$flood_pid" || fail "the flood helper failed"
flood_pid=
read -r stats <"$tmp/flood.stats"
echo "flood: $stats; $probes probes, slowest $slowest ms; descriptors $fds_before before, at most $max_fds"
[ "$probes" -ge 5 ] || fail "only $probes probes during the flood"
opened=${stats#opened=}
opened=${opened%% *} # a connection evicted before its half request went out does not count
[ "$opened" -ge 1400 ] || fail "the flood did not open its 1,500 connections: $stats"
[[ $stats == *" answered=0"* ]] || fail "a flood connection was answered: $stats"
reopened=${stats#*reopened=}
reopened=${reopened%% *}
[ "$reopened" -ge 1000 ] || fail "the server kept flood connections open: $stats"
# 64 connections at most, the job's pipes and the API connections: far from 1,500.
[ "$max_fds" -le $((fds_before + 64 + 24)) ] ||
    fail "the agent held $max_fds descriptors under the flood ($fds_before before)"
[ -n "$done_during" ] || fail "the PVB did not complete during the flood: phase '$(field podvolumebackup nightly-x7k2p .status.phase)'"
pass "1,500 flooding connections: /healthz and /metrics answered (slowest $slowest ms), a PVB completed, at most $max_fds descriptors"

# --- 2. Velero's series after a backup and a restore
snap=$(field podvolumebackup nightly-x7k2p .status.snapshotID)
dst_uid=$(mkemptydir dst)
k8s_restore_wait dst default running
create_pvr r1-abcde dst "$dst_uid" data "$snap" r-uid-1
wait_phase podvolumerestore r1-abcde Completed 60
cmp "$vol/big.bin" "$(vol_of "$dst_uid")/big.bin" || fail "restored data differ"
metrics=$(curl -sf -m 5 "$url/metrics") || fail "no /metrics"
has() { grep -qxF "$1" <<<"$metrics" || fail "/metrics lacks: $1"; }
has 'podVolume_pod_volume_backup_enqueue_count{node="node-a"} 1'
has 'podVolume_pod_volume_backup_dequeue_count{node="node-a"} 1'
has '# TYPE podVolume_pod_volume_operation_latency_seconds histogram'
has '# TYPE podVolume_pod_volume_operation_latency_seconds_gauge gauge'
labels='node="node-a",operation="nightly-x7k2p-default-default-kopia-backup",backupName="velero/nightly",pod_volume_backup="nightly-x7k2p"'
has "podVolume_pod_volume_operation_latency_seconds_bucket{$labels,le=\"14400\"} 1"
has "podVolume_pod_volume_operation_latency_seconds_bucket{$labels,le=\"+Inf\"} 1"
has "podVolume_pod_volume_operation_latency_seconds_count{$labels} 1"
grep -qE "^podVolume_pod_volume_operation_latency_seconds_gauge\{$labels\} [0-9]+$" <<<"$metrics" ||
    fail "no latency gauge of the backup: $(grep _gauge <<<"$metrics")"
# Velero records nothing for restores; podvault's own counters do.
[ "$(grep -c '^podVolume_pod_volume_operation_latency_seconds_count{' <<<"$metrics")" = 1 ] ||
    fail "a latency series other than the backup's"
has 'podvault_agent_jobs_total{kind="restore",phase="Completed"} 1'
has 'podvault_agent_jobs_total{kind="backup",phase="Completed"} 1'
has 'podvault_agent_jobs_running{kind="backup"} 0'
has 'podvault_agent_job_oldest_start_time_seconds{kind="restore"} 0'
grep -qE '^podvault_agent_http_dropped_total\{reason="full"\} [1-9]' <<<"$metrics" ||
    fail "no evictions counted: $(grep http_dropped <<<"$metrics")"
pass "Velero's node-agent series with Velero's labels after a backup and a restore"

# --- 3. every agent metric the shipped alerts and dashboard use is one the agent exports
names=$(cat "$src/deploy/monitoring/prometheusrule.yaml" "$src/deploy/monitoring/grafana-dashboard.json" |
    grep -oE '\b(podvault_agent_[a-z_]+|podVolume_[A-Za-z_]+|process_resident_memory_bytes)\b' | sort -u)
[ -n "$names" ] || fail "no agent metric found in deploy/monitoring"
for n in $names; do
    grep -qE "^$n(\{| )" <<<"$metrics" || fail "deploy/monitoring uses $n, which the agent does not export"
done
python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$src/deploy/monitoring/grafana-dashboard.json" ||
    fail "the dashboard is not JSON"
pass "deploy/monitoring uses only metrics the agent exports ($(wc -w <<<"$names") names)"
