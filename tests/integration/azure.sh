#!/bin/bash
# azure.sh - the command line on an Azure Blob Storage repository (Azurite on 127.0.0.1, which
# checks Shared Key signatures): init creates the container; backup and restore byte for byte
# of a tree with empty files, a file larger than a pack (uploaded block by block), many small
# files; an incremental backup; check --read-data; forget and prune, then restore again; a wrong
# account key fails at once with Azure's reason; a container that does not exist, without init,
# fails clearly; a SAS-less, key-less setting is refused with what to set.
# Runs when PV_TEST_AZURE and AZURE_STORAGE_CONNECTION_STRING are set
# (eval "$(tests/azure-env.sh)"); says SKIPPED otherwise. Every podvault run is bounded in time.
. "$(dirname "$0")/lib.sh" || exit 1
. "$(dirname "$0")/../s3-lib.sh" || exit 1
need jq

if [ -z "${PV_TEST_AZURE:-}" ] || [ -z "${AZURE_STORAGE_CONNECTION_STRING:-}" ]; then
    echo "SKIPPED [$TEST_NAME]: no Azure Blob Storage: PV_TEST_AZURE is not set (eval \"\$(tests/azure-env.sh)\" starts Azurite and sets it)"
    exit 0
fi
case "$PV_TEST_AZURE" in
azure:*) ;;
*) fail "PV_TEST_AZURE must be azure:CONTAINER[/PREFIX], not $PV_TEST_AZURE" ;;
esac
# A fresh container of the test's own (init must create it), removed object by object at the end.
CONTAINER=pv-it-$(basename "$T" | tr -cd 'a-z0-9' | tail -c 12)
REPO=azure:$CONTAINER/repo
PV_CLEANUP+=("\"$PV_BUILD_DIR/pv_objects\" \"$REPO\" rm-prefix '' >/dev/null 2>&1")
printf '#!/bin/sh\nexec timeout -k 10 %s "%s" "$@"\n' "${PV_RUN_LIMIT:-300}" "$PODVAULT" >"$T/podvault-timed"
chmod +x "$T/podvault-timed"
PODVAULT=$T/podvault-timed
# 1 MiB blocks: packs (4 MiB) go up in several Put Blocks, smaller objects in one Put Blob.
export PODVAULT_AZURE_BLOCK_SIZE=1048576

S=$T/src
s3_make_tree "$S"

# ---- a container that does not exist: every command but init says so ----
run_pv 1 snapshots
one_line_error "ContainerNotFound"
grep -q "init creates it" "$T/err" || fail "no hint to run init: $(cat "$T/err")"
ok "a missing container fails clearly: $(cat "$T/err")"

# ---- init, backup, restore ----
run_pv 0 init --pack-size "$S3_PACK_SIZE"
run_pv 0 --json backup "$S" --tag azure
tail -n 1 "$T/out" | jq -e '.message_type == "summary" and .incomplete == false and .errors == 0' >/dev/null ||
    fail "backup summary: $(tail -n 1 "$T/out")"
first=$(tail -n 1 "$T/out" | jq -r .snapshot_id)
run_pv 0 restore latest --target "$T/restore"
tree_equal "$S" "$T/restore"
ok "init (container created), first backup and restore byte for byte ($(dir_bytes "$S") bytes) on $REPO"

# ---- the objects are where docs/FORMAT.md says ----
"$PV_BUILD_DIR/pv_objects" "$REPO" top >"$T/top" || fail "pv_objects top: $(cat "$T/top")"
[ "$(tr '\n' ' ' <"$T/top")" = "config data/ index/ keys/ snapshots/ " ] ||
    fail "top level of the repository: $(cat "$T/top")"

# ---- incremental backup, snapshots, check --read-data ----
echo more >>"$S/small/d1/f1"
rm "$S/text/short"
run_pv 0 --json backup "$S" --tag azure
tail -n 1 "$T/out" | jq -e '.files_changed == 1 and .incomplete == false' >/dev/null ||
    fail "incremental backup: $(tail -n 1 "$T/out")"
run_pv 0 --json snapshots
jq -e 'length == 2' "$T/out" >/dev/null || fail "snapshots: $(cat "$T/out")"
run_pv 0 check --read-data
grep -q "no errors" "$T/out" || fail "check --read-data: $(cat "$T/out")"
ok "incremental backup, two snapshots, check --read-data finds no errors"

# ---- forget and prune, restore after ----
run_pv 0 forget "$first"
run_pv 0 --json prune --max-unused 0%
note "prune: $(tail -n 1 "$T/out")"
run_pv 0 check --read-data
run_pv 0 restore latest --target "$T/restore2"
tree_equal "$S" "$T/restore2"
ok "forget, prune, check --read-data, restore after prune byte for byte"

# ---- a wrong account key fails at once with Azure's reason ----
good=$AZURE_STORAGE_CONNECTION_STRING
key=$(sed -n 's/.*AccountKey=\([^;]*\).*/\1/p' <<<"$good")
case "$key" in A*) other=B${key#?} ;; *) other=A${key#?} ;; esac
start=$(date +%s%N)
AZURE_STORAGE_CONNECTION_STRING=${good/AccountKey=$key/AccountKey=$other} run_pv 1 snapshots
ms=$((($(date +%s%N) - start) / 1000000))
[ $ms -le 5000 ] || fail "a wrong key took $ms ms to fail (retried?)"
one_line_error "HTTP 403 AuthorizationFailure: Server failed to authenticate the request"
! grep -q "gave up" "$T/err" || fail "a wrong key was retried: $(cat "$T/err")"
ok "wrong account key fails in $ms ms: $(cat "$T/err")"

# ---- no credentials at all ----
AZURE_STORAGE_CONNECTION_STRING= AZURE_STORAGE_ACCOUNT= run_pv 1 snapshots
one_line_error "no Azure credentials: set AZURE_STORAGE_CONNECTION_STRING"
ok "no credentials: $(cat "$T/err")"
