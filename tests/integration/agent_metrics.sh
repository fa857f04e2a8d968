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
PODVAULT=${PODVAULT:-${PV_BUILD_DIR:-$src/build}/podvault}
. "$src/tests/k8s/lib.sh"

skip() {
    echo "SKIP: $*"
    exit 0
}
command -v kubectl >/dev/null || skip "kubectl is not installed"
command -v python3 >/dev/null || skip "python3 is not installed"
command -v curl >/dev/null || skip "curl is not installed"
[ -x "$PODVAULT" ] || skip "no podvault program at $PODVAULT"
[ -d /proc/self/fd ] || skip "no /proc to count descriptors"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/pv-agent-metrics.XXXXXX")
agent_pid= flood_pid=
cleanup() {
    [ -n "$flood_pid" ] && kill "$flood_pid" 2>/dev/null
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
kc create namespace velero >/dev/null
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
EOF

mkpod() { # NAME -> UID; a pod on node-a with an emptyDir volume "data", mounted, and the
    # restore-wait init container of a restore's pod
    kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: default}
spec:
  nodeName: node-a
  initContainers: [{name: restore-wait, image: velero/velero-restore-helper}]
  containers: [{name: app, image: busybox, volumeMounts: [{name: data, mountPath: /data}]}]
  volumes: [{name: data, emptyDir: {}}]
EOF
    local uid
    uid=$(kc get pod "$1" -o jsonpath='{.metadata.uid}')
    mkdir -p "$pods/$uid/volumes/kubernetes.io~empty-dir/data"
    echo "$uid"
}
field() { kc get "$1" "$2" -n velero -o jsonpath="{$3}"; }
phase_is() { [ "$(field "$1" "$2" .status.phase)" = "$3" ]; }
wait_phase() { # KIND NAME PHASE SECONDS
    wait_for "$4" phase_is "$1" "$2" "$3" ||
        fail "$1 $2: phase '$(field "$1" "$2" .status.phase)', wanted $3 ($(field "$1" "$2" .status.message))"
}

src_uid=$(mkpod src)
vol=$pods/$src_uid/volumes/kubernetes.io~empty-dir/data
head -c 8000000 /dev/urandom >"$vol/big.bin"
mkdir -p "$vol/sub"
for i in $(seq 1 200); do echo "file $i" >"$vol/sub/f$i"; done

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
setsid "$PODVAULT" agent --node node-a --namespace velero --host-pods "$pods" --server "$K8S_URL" \
    --metrics-address "127.0.0.1:$port" --cache-dir "$tmp/cache" --scratch-dir "$tmp/scratch" \
    --credentials-file "$tmp/cloud" --progress-interval 1 --shutdown-grace 2 \
    >>"$tmp/agent.log" 2>&1 &
agent_pid=$!
url=http://127.0.0.1:$port
wait_for 20 curl -sf "$url/healthz" >/dev/null || fail "the agent did not come up"
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
dst_uid=$(mkpod dst)
k8s_restore_wait dst default running
kc create -f - >/dev/null <<EOF
apiVersion: velero.io/v1
kind: PodVolumeRestore
metadata:
  name: r1-abcde
  namespace: velero
  labels: {velero.io/restore-name: r1, velero.io/restore-uid: "r-uid-1"}
  ownerReferences: [{apiVersion: velero.io/v1, kind: Restore, name: r1, uid: "r-uid-1", controller: true}]
spec:
  pod: {kind: Pod, namespace: default, name: dst, uid: "$dst_uid"}
  volume: data
  backupStorageLocation: default
  repoIdentifier: ""
  uploaderType: kopia
  snapshotID: "$snap"
  sourceNamespace: default
EOF
wait_phase podvolumerestore r1-abcde Completed 60
cmp "$vol/big.bin" "$pods/$dst_uid/volumes/kubernetes.io~empty-dir/data/big.bin" || fail "restored data differ"
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
