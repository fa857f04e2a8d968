#!/usr/bin/env bash
# agent_maintain.sh - scheduled maintenance in a cluster, end to end against the API server
# stand-in: pods in two namespaces chosen by Velero's annotation -> `request backup --wait` (one
# agent) backs up exactly the chosen volumes into one repository per namespace -> `request restore
# --wait` brings them back byte for byte -> `podvault maintain --default-location`, connected as
# the ServiceAccount of deploy/maintenance under its RBAC (TLS, token), finds both repositories,
# runs a full maintenance of each and exits 0; `check --read-data` passes on each; a second run
# finds nothing due; a location that does not exist and a repository that cannot be opened give
# clear errors and exit 1 while the other repositories are still maintained.
set -euo pipefail
src=${PV_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$src/tests/k8s/agent_lib.sh"
"$PODVAULT" maintain --help 2>/dev/null | grep -q -- --default-location ||
    skip "this podvault has no maintain --default-location"

agent_begin agent-maintain
# The stand-in's TLS listener holds the maintenance ServiceAccount's token to the RBAC rules of
# deploy/maintenance/rbac.yaml.
k8s_tls_setup "$tmp" "maint-token=velero/podvault-maintenance"
k8s_start "$tmp" "${K8S_TLS_ARGS[@]}" || fail "the stand-in did not start"
store=$tmp/store
repo_of() { echo "$store/plugins/podvault/$1"; }

kc create namespace velero >/dev/null
kc create namespace shop >/dev/null
kc create namespace crm >/dev/null
kc apply -f "$src/deploy/maintenance/rbac.yaml" >/dev/null
velero_location default "$(store_spec "$store" default)"
kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Secret
metadata: {name: unrelated, namespace: velero}
stringData: {x: y}
---
apiVersion: velero.io/v1
kind: BackupStorageLocation
metadata: {name: other, namespace: velero}
spec:
  provider: aws
  config: {podvaultPath: "$tmp/other-store"}
  objectStorage: {bucket: unused}
EOF
bound_claim shop data pv-data "nfs: {server: nfs.example, path: /x}"

k8s_node_agent n1

# mkpod NS NAME [restore]: a pod with a PVC volume (shop only), an emptyDir and an unchosen
# emptyDir; prints its UID. With "restore", a pod of a restore: held in its restore-wait init
# container, which runs.
mkpod() {
    local claim="" claimmount="" chosen=cache
    if [ "$1" = shop ]; then
        claim="  - {name: data, persistentVolumeClaim: {claimName: data}}"
        claimmount="    - {name: data, mountPath: /data}"
        chosen=data,cache
    fi
    app_pod "$1" "$2" n1 "app: $2" "backup.velero.io/backup-volumes: \"$chosen\"" "${3:-}" <<EOF
  containers:
  - name: app
    image: busybox
    volumeMounts:
$claimmount
    - {name: cache, mountPath: /cache}
    - {name: tmp, mountPath: /tmp}
  volumes:
$claim
  - {name: cache, emptyDir: {}}
  - {name: tmp, emptyDir: {}}
EOF
}
uid_shop=$(mkpod shop web)
uid_crm=$(mkpod crm db)
vdata=$pods/$uid_shop/volumes/kubernetes.io~nfs/pv-data
vcache=$pods/$uid_shop/volumes/kubernetes.io~empty-dir/cache
vcrm=$pods/$uid_crm/volumes/kubernetes.io~empty-dir/cache
mkdir -p "$vdata/sub" "$vcache" "$vcrm" "$pods/$uid_shop/volumes/kubernetes.io~empty-dir/tmp"
head -c 400000 /dev/urandom >"$vdata/sub/blob"
printf 'orders\n' >"$vdata/orders.csv"
head -c 5000 /dev/urandom >"$vcache/c.bin"
head -c 200000 /dev/urandom >"$vcrm/table"
echo skipped >"$pods/$uid_shop/volumes/kubernetes.io~empty-dir/tmp/not-chosen"

start_agent a n1

# --- backups: two of shop's volumes and one of crm's, each namespace into its own repository
for ns_pod in shop:web crm:db; do
    ns=${ns_pod%%:*}
    req backup --namespace "$ns" --selector "app=${ns_pod#*:}" --name "b-$ns" --wait --timeout 60 \
        >"$tmp/b-$ns.out" 2>&1 || { cat "$tmp/b-$ns.out" >&2; fail "request backup in $ns failed"; }
done
[ "$(kc get podvolumebackups -n velero -l velero.io/backup-name=b-shop \
    -o jsonpath='{range .items[*]}{.spec.volume}{" "}{.status.phase}{"\n"}{end}' | sort)" = \
    "$(printf 'cache Completed\ndata Completed')" ] || fail "shop: not exactly data and cache"
[ "$(kc get podvolumebackups -n velero -l velero.io/backup-name=b-crm \
    -o jsonpath='{range .items[*]}{.spec.volume}{" "}{.status.phase}{"\n"}{end}')" = \
    "cache Completed" ] || fail "crm: not exactly cache"
[ -f "$(repo_of shop)/config" ] && [ -f "$(repo_of crm)/config" ] || fail "no repository per namespace"
snaps() { PODVAULT_PASSWORD=static-passw0rd "$PODVAULT" --json --no-cache -r "$(repo_of "$1")" snapshots; }
[ "$(snaps shop | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 2 ] ||
    fail "shop's repository does not hold 2 snapshots"
if snaps shop | grep -q not-chosen; then fail "an unchosen volume was backed up"; fi
pass "request backup: exactly the chosen volumes, one repository per namespace"

# --- restore shop's pod into a new pod of the same name
cp -a "$vdata" "$tmp/want-data"
cp -a "$vcache" "$tmp/want-cache"
kc delete pod web -n shop >/dev/null
uid2=$(mkpod shop web restore)
ndata=$pods/$uid2/volumes/kubernetes.io~nfs/pv-data
ncache=$pods/$uid2/volumes/kubernetes.io~empty-dir/cache
mkdir -p "$ndata" "$ncache"
req restore --from b-shop --namespace shop --name r-shop --wait --timeout 60 \
    >"$tmp/r.out" 2>&1 || { cat "$tmp/r.out" >&2; fail "request restore failed"; }
diff -r --exclude=.velero "$tmp/want-data" "$ndata" || fail "data differs after restore"
diff -r --exclude=.velero "$tmp/want-cache" "$ncache" || fail "cache differs after restore"
pass "request restore: byte for byte"
k8s_restore_wait web shop terminated # its marks seen, restore-wait ended: the application runs
k8s_running web shop

# A second backup of shop after a change and a forget leaves something for prune to free.
head -c 300000 /dev/urandom >"$ndata/sub/blob"
req backup --namespace shop --selector app=web --name b-shop2 --wait --timeout 60 \
    >"$tmp/b2.out" 2>&1 || { cat "$tmp/b2.out" >&2; fail "the second backup failed"; }
oldest=$(snaps shop | python3 -c 'import json,sys; print(sorted(json.load(sys.stdin), key=lambda s: s["time"])[0]["id"])')
PODVAULT_PASSWORD=static-passw0rd "$PODVAULT" -q --no-cache -r "$(repo_of shop)" forget "$oldest" ||
    fail "forget failed"

# --- maintenance, connected as deploy/maintenance's ServiceAccount when TLS is there
conn=(--server "$K8S_URL")
if [ ${#K8S_TLS_ARGS[@]} -gt 0 ]; then
    k8s_tls_kubeconfig "$tmp" maint-token
    conn=(--kubeconfig "$tmp/kube/config")
fi
timer=()
[ -x /usr/bin/time ] && timer=(/usr/bin/time -f 'maxrss %M KiB')
maint() { # LOG ARGS...: the maintenance job's command line, as the CronJob runs it
    local log=$1
    shift
    TMPDIR=$tmp/scratch timeout 300 "${timer[@]}" "$PODVAULT" maintain \
        "${conn[@]}" --namespace velero --credentials-file "$tmp/cloud" \
        --cache-dir "$tmp/maint-cache" "$@" >"$log" 2>&1
}
maint "$tmp/m1.log" --default-location || { cat "$tmp/m1.log" >&2; fail "maintain exited non-zero"; }
expect "$tmp/m1.log" "2 podvault repositories at $store/plugins/podvault"
expect "$tmp/m1.log" "maintenance of $(repo_of crm): full run done"
expect "$tmp/m1.log" "maintenance of $(repo_of shop): full run done"
expect "$tmp/m1.log" "2 of 2 repositories maintained"
python3 - "$tmp/m1.log" <<'EOF' || fail "maintain's log is not one JSON object a line"
import json, re, sys
n = 0
for line in open(sys.argv[1]):
    if line.startswith("maxrss"):
        continue
    o = json.loads(line)
    assert o["level"] in ("info", "debug"), o
    n += 1
assert n >= 4, n
freed = [json.loads(l) for l in open(sys.argv[1]) if '"name":"shop"' in l and "run done" in l]
assert freed and not re.search(r": 0 packs deleted", freed[0]["msg"]), freed
EOF
grep maxrss "$tmp/m1.log" | sed 's/^/# maintain peak RSS: /'
for ns in shop crm; do
    PODVAULT_PASSWORD=static-passw0rd "$PODVAULT" -q --no-cache -r "$(repo_of "$ns")" check \
        --read-data || fail "check --read-data of $ns failed after maintenance"
done
ls "$tmp/scratch" | grep -q podvault-maintain && fail "the scratch directory was left behind"
pass "maintain --default-location: both repositories maintained (full), check --read-data passes"

maint "$tmp/m2.log" --location default --quick || { cat "$tmp/m2.log" >&2; fail "second run failed"; }
expect "$tmp/m2.log" "maintenance of $(repo_of shop): nothing was due"
expect "$tmp/m2.log" "maintenance of $(repo_of crm): nothing was due"
pass "maintain --location default --quick: nothing due right after a full run"

# --- failures: a location that does not exist; a repository that cannot be opened
if maint "$tmp/m3.log" --location nope; then fail "a missing location exited 0"; fi
expect "$tmp/m3.log" "BackupStorageLocation nope does not exist in namespace velero"
kc patch backupstoragelocation default -n velero --type merge -p '{"spec":{"default":false}}' \
    >/dev/null
if maint "$tmp/m4.log" --default-location; then fail "no default location exited 0"; fi
expect "$tmp/m4.log" "no BackupStorageLocation in namespace velero is marked default"
PODVAULT_PASSWORD=another-password "$PODVAULT" -q --no-cache -r "$(repo_of zz-foreign)" init ||
    fail "init of a foreign repository failed"
if maint "$tmp/m5.log" --location default --quick --force; then
    fail "a repository with another password exited 0"
fi
expect "$tmp/m5.log" "3 podvault repositories"
expect "$tmp/m5.log" "maintenance of $(repo_of zz-foreign) FAILED (exit code 12): wrong repository password"
expect "$tmp/m5.log" "maintenance of $(repo_of shop): quick run done"
expect "$tmp/m5.log" "maintenance of $(repo_of crm): quick run done"
expect "$tmp/m5.log" "2 of 3 repositories maintained; failed: zz-foreign"
# An empty location (nothing backed up yet) is fine.
maint "$tmp/m6.log" --location other || { cat "$tmp/m6.log" >&2; fail "an empty location failed"; }
expect "$tmp/m6.log" "0 podvault repositories"
if maint "$tmp/m7.log" --location default --default-location; then fail "both options exited 0"; fi
pass "a missing location, no default, a foreign repository (the others still maintained), an empty location"

if [ ${#K8S_TLS_ARGS[@]} -gt 0 ]; then # the RBAC is enforced: what the rules leave out is refused
    tls_get() {
        curl -s -o /dev/null -w '%{http_code}' --cacert "$tmp/ca.pem" \
            -H "Authorization: Bearer maint-token" "https://127.0.0.1:$(cat "$tmp/k8s.tls-port")$1"
    }
    [ "$(tls_get /api/v1/namespaces/velero/secrets/unrelated)" = 403 ] || fail "RBAC: other secrets"
    [ "$(tls_get /api/v1/namespaces/velero/pods)" = 403 ] || fail "RBAC: pods can be listed"
    [ "$(tls_get /apis/velero.io/v1/namespaces/velero/backupstoragelocations)" = 200 ] ||
        fail "RBAC: locations cannot be listed"
    pass "maintenance ran under deploy/maintenance/rbac.yaml, which refuses the rest"
fi
echo "agent maintain: all ok"
