#!/usr/bin/env bash
# bench_agent.sh - the agent's overhead: backs the same directory up with `podvault backup`
# directly and through `podvault agent` (a PodVolumeBackup, timed from creation to Completed),
# each into a fresh local repository, and reports the ratio and the agent's memory (VmRSS idle,
# VmHWM after the job; the job's own memory is the child's, measured by the CLI's benchmarks).
#   bash tests/k8s/bench_agent.sh [MiB of data, default 256] [runs, default 3]
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
. "$src/tests/k8s/agent_lib.sh"
mib=${1:-256}
runs=${2:-3}
agent_begin agent-bench
agent=
on_exit '[ -z "$agent" ] || kill "$agent" 2>/dev/null'
export PODVAULT_PASSWORD=static-passw0rd

k8s_start "$tmp"
kc create namespace velero >/dev/null
velero_location default "$(store_spec "$tmp/agent-store")"
kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: app, namespace: default}
spec: {nodeName: node-a, containers: [{name: c, image: x}], volumes: [{name: data, emptyDir: {}}]}
EOF
uid=$(kc get pod app -o jsonpath='{.metadata.uid}')
vol=$(vol_of "$uid")
mkdir -p "$vol"
# Half in a few big files, half in many small ones: 4 KiB to 64 KiB, random (incompressible).
python3 - "$vol" "$mib" <<'EOF'
import os, random, sys
root, mib = sys.argv[1], int(sys.argv[2])
rnd = random.Random(7)
for i in range(4):
    with open(f"{root}/big{i}.bin", "wb") as f:
        f.write(os.urandom(mib * 1024 * 1024 // 8))
left, n = mib * 1024 * 1024 // 2, 0
while left > 0:
    d = f"{root}/d{n // 200}"
    os.makedirs(d, exist_ok=True)
    size = rnd.randint(4096, 65536)
    with open(f"{d}/f{n}", "wb") as f:
        f.write(os.urandom(size))
    left -= size
    n += 1
EOF
files=$(find "$vol" -type f | wc -l)

direct=()
via_agent=()
for run in $(seq 1 "$runs"); do
    rm -rf -- "${tmp:?}/direct-store" "${tmp:?}/agent-store" "${tmp:?}/cache"
    "$PODVAULT" -q -r "$tmp/direct-store" init >/dev/null
    t0=$(date +%s.%N)
    "$PODVAULT" -q --cache-dir "$tmp/cache" -r "$tmp/direct-store" backup "$vol" --host default/app/data >/dev/null
    direct+=("$(echo "$(date +%s.%N) - $t0" | bc)")

    "$PODVAULT" agent --node node-a --namespace velero --host-pods "$pods" --server "$K8S_URL" \
        --metrics-address off --cache-dir "$tmp/cache" --scratch-dir "$tmp" >"$tmp/agent.log" 2>&1 &
    agent=$!
    sleep 2
    idle_kb=$(awk '/VmRSS/ {print $2}' "/proc/$agent/status")
    # The first backup of a namespace also creates its repository: done before timing.
    PODVAULT_PASSWORD=static-passw0rd "$PODVAULT" -q -r "$tmp/agent-store/plugins/podvault/default" init >/dev/null
    kc apply -f - >/dev/null <<EOF
apiVersion: velero.io/v1
kind: PodVolumeBackup
metadata: {name: bench-$run, namespace: velero}
spec: {node: node-a, pod: {namespace: default, name: app, uid: "$uid"}, volume: data,
       backupStorageLocation: default, repoIdentifier: "", uploaderType: kopia}
EOF
    t0=$(date +%s.%N)
    # curl, not kubectl: a kubectl every 0.1 s would take a core from the backup it measures.
    until curl -s "$K8S_URL/apis/velero.io/v1/namespaces/velero/podvolumebackups/bench-$run" |
        grep -q '"phase": "Completed"'; do
        sleep 0.1
    done
    via_agent+=("$(echo "$(date +%s.%N) - $t0" | bc)")
    busy_kb=$(awk '/VmHWM/ {print $2}' "/proc/$agent/status")
    kill "$agent"
    wait "$agent" || true
    agent=
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
d=$(median "${direct[@]}")
a=$(median "${via_agent[@]}")
printf 'data: %d MiB in %d files; runs: %d (median)\n' "$mib" "$files" "$runs"
printf 'podvault backup:          %.2f s\n' "$d"
printf 'podvault agent (PVB):     %.2f s   (ratio %.3f; polled every 0.1 s)\n' \
    "$a" "$(echo "$a / $d" | bc -l)"
printf 'agent memory: idle VmRSS %d KiB, peak VmHWM after a job %d KiB\n' "$idle_kb" "$busy_kb"
