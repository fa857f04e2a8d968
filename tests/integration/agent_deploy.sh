#!/usr/bin/env bash
# agent_deploy.sh - deploy/ against the API server stand-in with the real kubectl: `apply -k
# deploy/` creates every object and a second apply changes none; `apply -k deploy/agent` works
# where Velero's kinds already exist; and the DaemonSet's own arguments and environment
# (with the ConfigMap's values) start `podvault agent`, which reads loadConcurrency from it; the
# maintenance CronJob is accepted as kubectl sends it, and its own arguments and environment run
# `podvault maintain` against the location marked default.
set -euo pipefail
src=${PV_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$src/tests/k8s/agent_lib.sh"

agent_begin agent-deploy
agent=
on_exit '[ -z "$agent" ] || kill "$agent" 2>/dev/null'

# --- a cluster without Velero: everything
k8s_start "$tmp"
kc apply -k "$src/deploy" >"$tmp/apply1" || fail "kubectl apply -k deploy/ failed"
for obj in namespace/velero customresourcedefinition.apiextensions.k8s.io/podvolumebackups.velero.io \
    customresourcedefinition.apiextensions.k8s.io/podvolumerestores.velero.io \
    customresourcedefinition.apiextensions.k8s.io/backupstoragelocations.velero.io \
    serviceaccount/podvault-agent role.rbac.authorization.k8s.io/podvault-agent \
    clusterrole.rbac.authorization.k8s.io/podvault-agent \
    rolebinding.rbac.authorization.k8s.io/podvault-agent \
    clusterrolebinding.rbac.authorization.k8s.io/podvault-agent configmap/podvault-agent \
    daemonset.apps/node-agent serviceaccount/podvault-maintenance \
    role.rbac.authorization.k8s.io/podvault-maintenance \
    rolebinding.rbac.authorization.k8s.io/podvault-maintenance cronjob.batch/podvault-maintenance; do
    grep -q "^$obj created" "$tmp/apply1" || fail "apply did not create $obj: $(cat "$tmp/apply1")"
done
kc apply -k "$src/deploy" >"$tmp/apply2"
if grep -v ' unchanged$' "$tmp/apply2"; then fail "a second apply changed objects"; fi
image=podvault:$(project_version "$src")
[ "$(kc get ds node-agent -n velero -o jsonpath='{.spec.template.spec.containers[0].image}')" = \
    "$image" ] || fail "the image is not set by the kustomization"
# What Velero's server reads of its node-agent (velero pkg/nodeagent/node_agent.go): a DaemonSet
# named node-agent (the restorer's IsRunningOnLinux), pods labelled role=node-agent (the
# backupper's isRunningInNode), and the hostPath volume host-pods mounted at /host_pods
# (GetHostPodPath, HostPodVolumeMountPath).
kc get ds node-agent -n velero -o json >"$tmp/ds-velero.json" || fail "no DaemonSet node-agent"
python3 - "$tmp/ds-velero.json" <<'EOF' || fail "the DaemonSet does not carry Velero's names"
import json, sys
ds = json.load(open(sys.argv[1]))
assert ds["metadata"]["name"] == "node-agent", ds["metadata"]
t = ds["spec"]["template"]
assert t["metadata"]["labels"]["role"] == "node-agent", t["metadata"]["labels"]
assert t["metadata"]["labels"]["name"] == "node-agent", t["metadata"]["labels"]
assert ds["spec"]["selector"]["matchLabels"] == {"name": "node-agent"}, ds["spec"]["selector"]
vols = {v["name"]: v for v in t["spec"]["volumes"]}
assert vols["host-pods"]["hostPath"]["path"] == "/var/lib/kubelet/pods", vols["host-pods"]
c = t["spec"]["containers"][0]
m = [m for m in c["volumeMounts"] if m["name"] == "host-pods"]
assert m and m[0]["mountPath"] == "/host_pods", m
assert m[0]["mountPropagation"] == "HostToContainer", m
assert "--host-pods=/host_pods" in c["args"], c["args"]
# The agent is root beside tenants' volumes: the runtime's default syscall filter, no escalation.
assert t["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, t["spec"]
assert c["securityContext"]["allowPrivilegeEscalation"] is False, c["securityContext"]
assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], c["securityContext"]
EOF
[ "$(kc get ds -n velero -l role=node-agent -o name)" = daemonset.apps/node-agent ] ||
    fail "the DaemonSet is not found by Velero's label role=node-agent"
kc get podvolumebackups -n velero >/dev/null || fail "the PodVolumeBackup CRD is not served"
kc get cronjob podvault-maintenance -n velero -o json >"$tmp/cj.json"
python3 - "$tmp/cj.json" "$image" <<'EOF' || fail "the maintenance CronJob is not as deployed"
import json, sys
cj = json.load(open(sys.argv[1]))
s = cj["spec"]
assert s["concurrencyPolicy"] == "Forbid", s
assert s["successfulJobsHistoryLimit"] >= 1 and s["failedJobsHistoryLimit"] >= 1, s
assert s["schedule"].split()[1:] == ["*", "*", "*", "*"], s["schedule"]  # hourly
j = s["jobTemplate"]["spec"]
assert j["backoffLimit"] >= 0, j
p = j["template"]["spec"]
assert p["serviceAccountName"] == "podvault-maintenance", p
c = p["containers"][0]
assert c["image"] == sys.argv[2], (c["image"], sys.argv[2])
assert c["args"][:2] == ["maintain", "--default-location"], c["args"]
assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["memory"], c
cache = [v for v in p["volumes"] if v["name"] == "cache"][0]
assert cache["emptyDir"]["sizeLimit"], cache
assert any(v.get("secret", {}).get("secretName") == "cloud-credentials" for v in p["volumes"])
EOF
echo "ok - kubectl apply -k deploy/ (twice)"

# --- the NetworkPolicy selects the agent's pods and admits only the metrics port
kc get ds -n velero -o json >"$tmp/ds.json"
kc get networkpolicy node-agent-metrics -n velero -o json >"$tmp/np.json" ||
    fail "no NetworkPolicy node-agent-metrics"
python3 - "$tmp/ds.json" "$tmp/np.json" <<'EOF' || fail "the NetworkPolicy does not fit the DaemonSet"
import json, sys
ds = [d for d in json.load(open(sys.argv[1]))["items"]
      if "agent" in d["spec"]["template"]["spec"]["containers"][0]["args"]][0]
np = json.load(open(sys.argv[2]))["spec"]
labels = ds["spec"]["template"]["metadata"]["labels"]
assert all(labels.get(k) == v for k, v in np["podSelector"]["matchLabels"].items()), (labels, np)
assert np["policyTypes"] == ["Ingress"], np
ports = [p for rule in np["ingress"] for p in rule["ports"]]
metrics = [p["containerPort"] for c in ds["spec"]["template"]["spec"]["containers"]
           for p in c["ports"] if p["name"] == "metrics"]
assert [p["port"] for p in ports] == metrics, (ports, metrics)
assert all(rule["from"] for rule in np["ingress"]), "a rule admits everyone"
EOF
echo "ok - the NetworkPolicy admits only the scraper to the agent's metrics port"

# --- the CronJob's arguments and environment run the maintenance of the default location
if "$PODVAULT" maintain --help 2>/dev/null | grep -q -- --default-location; then
    velero_location main "$(store_spec "$tmp/store" default)"
    mkdir -p "$tmp/store/podvault" "$tmp/mcache" "$tmp/mscratch"
    PODVAULT_PASSWORD=static-passw0rd "$PODVAULT" -q --no-cache -r "$tmp/store/plugins/podvault/shop" init
    # The container's arguments and plain environment, with its mounts moved to this test's.
    python3 - "$tmp" >"$tmp/margs" <<'EOF'
import json, sys
tmp = sys.argv[1]
p = json.load(open(f"{tmp}/cj.json"))["spec"]["jobTemplate"]["spec"]["template"]["spec"]
c = p["containers"][0]
moved = {"/cache": f"{tmp}/mcache", "/scratch": f"{tmp}/mscratch",
         "/credentials/cloud": f"{tmp}/cloud"}
for e in c["env"]:
    if "value" in e:
        print("ENV", e["name"], moved.get(e["value"], e["value"]))
for a in c["args"]:
    if "=" in a and a.split("=", 1)[1] in moved:
        a = a.split("=", 1)[0] + "=" + moved[a.split("=", 1)[1]]
    print("ARG", a)
EOF
    margs=() menv=(VELERO_NAMESPACE=velero)
    while read -r kind a b; do
        if [ "$kind" = ENV ]; then menv+=("$a=$b"); else margs+=("$a"); fi
    done <"$tmp/margs"
    env "${menv[@]}" timeout 120 "$PODVAULT" "${margs[@]}" --server "$K8S_URL" \
        >"$tmp/maint.log" 2>&1 || fail "the CronJob's command failed: $(cat "$tmp/maint.log")"
    grep -q "maintenance of $tmp/store/plugins/podvault/shop: full run done" "$tmp/maint.log" ||
        fail "the CronJob's command did not maintain the repository: $(cat "$tmp/maint.log")"
    echo "ok - the CronJob's arguments and environment maintain the default location"
else
    echo "SKIP: this podvault has no maintain --default-location"
fi

# --- the DaemonSet's arguments, with its environment from the ConfigMap, start the agent
if "$PODVAULT" agent --help >/dev/null 2>&1; then
    kc patch configmap podvault-agent -n velero --type merge \
        -p '{"data":{"node-agent-config.json":"{\"loadConcurrency\":{\"globalConfig\":3,\"perNodeConfig\":[{\"nodeSelector\":{\"matchLabels\":{\"size\":\"big\"}},\"number\":2}]}}"}}' \
        >/dev/null
    kc apply -f - >/dev/null <<'EOF'
apiVersion: v1
kind: Node
metadata: {name: node-1, labels: {size: big}}
EOF
    kc get ds node-agent -n velero -o json >"$tmp/ds.json"
    kc get cm podvault-agent -n velero -o json >"$tmp/cm.json"
    mkdir -p "$tmp/pods"
    # The container's arguments with $(VAR) expanded as the kubelet does; paths and the API
    # server moved to this test's.
    python3 - "$tmp" >"$tmp/args" <<'EOF'
import json, re, sys
tmp = sys.argv[1]
ds = json.load(open(f"{tmp}/ds.json"))
cm = json.load(open(f"{tmp}/cm.json"))["data"]
c = ds["spec"]["template"]["spec"]["containers"][0]
env = {}
for e in c["env"]:
    ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
    if ref:
        env[e["name"]] = cm[ref["key"]]
    elif "value" in e:
        env[e["name"]] = e["value"]
moved = {"/host_pods": f"{tmp}/pods", "/cache": f"{tmp}/cache", "/scratch": f"{tmp}/scratch",
         ":8085": "127.0.0.1:0"}
for a in c["args"]:
    a = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a)
    if "=" in a and a.split("=", 1)[1] in moved:
        a = a.split("=", 1)[0] + "=" + moved[a.split("=", 1)[1]]
    print(a)
EOF
    mapfile -t args <"$tmp/args"
    [ "${args[0]}" = agent ] || fail "the DaemonSet does not run the agent command: ${args[*]}"
    NODE_NAME=node-1 VELERO_NAMESPACE=velero "$PODVAULT" "${args[@]}" --server "$K8S_URL" \
        >"$tmp/agent.log" 2>&1 &
    agent=$!
    running() { grep -q '"msg":"serving' "$tmp/agent.log"; }
    wait_for 20 running || fail "the agent did not start with the DaemonSet's arguments"
    grep -q "(2 jobs at once)" "$tmp/agent.log" || fail "loadConcurrency from the ConfigMap not used"
    if grep -q '"level":"\(warning\|error\)"' "$tmp/agent.log"; then fail "the agent warned"; fi
    kill -TERM "$agent"
    wait "$agent" || fail "the agent did not exit 0 on SIGTERM"
    agent=
    echo "ok - the DaemonSet's arguments and ConfigMap start the agent"

    # Velero's own node-agent ConfigMap (created as Velero's docs say, one key of any name,
    # and named by `velero install --node-agent-configmap`) carries over: loadConcurrency 4.
    printf '{"loadConcurrency": {"globalConfig": 4}}' >"$tmp/velero-na.json"
    kc create configmap node-agent-config -n velero --from-file="$tmp/velero-na.json" >/dev/null
    vargs=()
    for a in "${args[@]}"; do
        case $a in --node-agent-configmap=*) a=--node-agent-configmap=node-agent-config ;; esac
        vargs+=("$a")
    done
    NODE_NAME=node-1 VELERO_NAMESPACE=velero "$PODVAULT" "${vargs[@]}" --server "$K8S_URL" \
        >"$tmp/agent.log" 2>&1 &
    agent=$!
    wait_for 20 running || fail "the agent did not start with Velero's ConfigMap"
    grep -q "(4 jobs at once)" "$tmp/agent.log" || fail "Velero's node-agent ConfigMap not used"
    kill -TERM "$agent"
    wait "$agent" || fail "the agent did not exit 0 on SIGTERM"
    agent=
    echo "ok - Velero's node-agent ConfigMap (one key of any name) sets loadConcurrency"
else
    echo "SKIP: this podvault does not dispatch the agent command yet"
fi
k8s_stop

# --- next to Velero: its kinds exist already (the stand-in serves them from the start)
k8s_start "$tmp"
kc create namespace velero >/dev/null
kc apply -k "$src/deploy/agent" >"$tmp/apply3" || fail "kubectl apply -k deploy/agent failed"
if grep -q customresourcedefinition "$tmp/apply3"; then fail "deploy/agent applies CRDs"; fi
grep -q "^daemonset.apps/node-agent created" "$tmp/apply3" || fail "no DaemonSet node-agent"
echo "ok - kubectl apply -k deploy/agent"
kc apply -k "$src/deploy/maintenance" >"$tmp/apply4" || fail "kubectl apply -k deploy/maintenance failed"
grep -q "^cronjob.batch/podvault-maintenance created" "$tmp/apply4" || fail "no CronJob"
echo "ok - kubectl apply -k deploy/maintenance"
echo "agent deploy: all ok"
