#!/bin/bash
# interrupted.sh - an interrupted backup is not wasted. A backup is killed (SIGKILL: no chance
# to clean up) once it has stored some packs; the next backup of the same data stores again only
# the blobs of packs the first had not yet listed in an index file (at most 16 packs' or 10 s'
# worth, repo/store.c). Measured exactly: the blob IDs in the killed backup's packs against
# those in the next backup's new packs; the share is printed and must stay at most 40% (the
# kill comes after 64 packs, 48 on S3, so at most 15 unlisted packs are under a third of them). In
# between, `check` finds no error (the unlisted packs are a warning), and afterwards `prune`
# frees the duplicates and a restore is byte for byte.
# On a local directory always, and on S3 when PV_TEST_S3 is set (eval "$(tests/s3-env.sh)").
#   PV_INTR_MB  data backed up, in MiB (default 96; locally doubled, up to twice, when the
#               backup ended before the kill)
. "$(dirname "$0")/lib.sh" || exit 1
. "$(dirname "$0")/../s3-lib.sh" || exit 1
need jq

MB=${PV_INTR_MB:-96}

# data_packs: the IDs of the repository's data/ objects, one a line
data_packs() {
    if [ "$KIND" = local ]; then
        find "$LOC/data" -type f -printf '%f\n' 2>/dev/null | LC_ALL=C sort
    else
        s3_keys | sed -n 's|^data/[0-9a-f]*/\([0-9a-f]*\)$|\1|p' | LC_ALL=C sort
    fi
}

# pack_blobs IDS_FILE: the data blob IDs in those packs, one a line, sorted
pack_blobs() {
    local id
    while read -r id; do
        "$PODVAULT" -r "$LOC" --password-file "$PW" cat pack "$id" |
            jq -r '.blobs[] | select(.type == "data") | .id' || fail "cat pack $id"
    done <"$1" | LC_ALL=C sort -u
}

# run_case KIND LOCATION PACKS [LOCATION_OF_THE_KILLED_BACKUP]: returns 3 when the backup ended
# before it could be killed (nothing measured), 0 when all went well; fails otherwise.
run_case() {
    KIND=$1 LOC=$2
    local src=$T/src-$KIND want_packs=$3 slow=${4:-$2} n pid
    mkdir -p "$src/d"
    for i in 1 2 3 4; do rand_file "$src/d/f$i" $((MB * 1024 * 1024 / 4)); done
    run_raw 0 -r "$LOC" --password-file "$PW" init --pack-size 1M --kdf-passes 1 --kdf-memory 8K

    "$PODVAULT" -r "$slow" --password-file "$PW" backup "$src" >"$T/out" 2>"$T/err" &
    pid=$!
    for _ in $(seq 1 3000); do # at most ~60 s
        n=$(data_packs | wc -l)
        [ "$n" -ge "$want_packs" ] && break
        kill -0 $pid 2>/dev/null || break
        sleep 0.02
    done
    kill -KILL $pid 2>/dev/null
    wait $pid 2>/dev/null
    [ "$(run_raw 0 -r "$LOC" --password-file "$PW" --json snapshots && jq length "$T/out")" = 0 ] ||
        { note "$KIND: the backup finished before $want_packs packs were seen"; return 3; }
    data_packs >"$T/packs1"
    pack_blobs "$T/packs1" >"$T/blobs1"
    local stored=$(wc -l <"$T/blobs1") indexes
    indexes=$(run_raw 0 -r "$LOC" --password-file "$PW" --json check && tail -n 1 "$T/out")
    jq -e '.errors == 0' <<<"$indexes" >/dev/null || fail "$KIND: check after the kill: $indexes"
    [ "$stored" -ge 8 ] || fail "$KIND: only $stored blobs stored before the kill"

    run_raw 0 -r "$LOC" --password-file "$PW" --json backup "$src"
    data_packs >"$T/packs2"
    LC_ALL=C comm -13 "$T/packs1" "$T/packs2" >"$T/packs-new"
    pack_blobs "$T/packs-new" >"$T/blobs2"
    local again share
    again=$(LC_ALL=C comm -12 "$T/blobs1" "$T/blobs2" | wc -l)
    share=$(awk -v a="$again" -v s="$stored" 'BEGIN { printf "%.1f", 100 * a / s }')
    ok "$KIND: killed after storing $stored data blobs in $(wc -l <"$T/packs1") packs ($(jq -r '.index_files' <<<"$indexes") index files); the next backup stored $again of them again: $share%"
    # At most the blobs of the 15 packs after the last index file: under 40% once 48 are stored.
    [ $((again * 100)) -le $((stored * 40)) ] || fail "$KIND: $again of $stored blobs stored again"

    run_raw 0 -r "$LOC" --password-file "$PW" --json check
    jq -e '.errors == 0' <(tail -n 1 "$T/out") >/dev/null || fail "$KIND: check: $(tail -n 1 "$T/out")"
    run_raw 0 -r "$LOC" --password-file "$PW" prune --max-unused 0%
    run_raw 0 -r "$LOC" --password-file "$PW" --json check
    jq -e '.errors == 0 and .warnings == 0' <(tail -n 1 "$T/out") >/dev/null ||
        fail "$KIND: check after prune: $(tail -n 1 "$T/out")"
    run_raw 0 -r "$LOC" --password-file "$PW" restore latest --target "$T/restore-$KIND"
    tree_equal "$src" "$T/restore-$KIND"
    ok "$KIND: check clean after prune, restore byte for byte"
}

# A fast machine may finish before the kill: then again with twice the data, in a fresh
# repository (killing sooner would measure less: the first index file comes at 16 packs).
for try in 1 2 3; do
    run_case local "$T/repo-$try" 64 && break
    [ $try != 3 ] || fail "local: every backup finished before it could be killed"
    MB=$((MB * 2))
done
MB=${PV_INTR_MB:-96}
if [ -n "${PV_TEST_S3:-}" ] && [ -n "${AWS_ACCESS_KEY_ID:-}" ]; then
    s3_require
    # The killed backup goes through a proxy that holds every answer back 300 ms, as from a
    # distant server, so that the kill comes half-way (RGW on loopback takes the whole backup
    # in about a second); the rest goes straight to the server.
    s3_proxy FAR --always delay --delay-ms 300
    run_case s3 "$REPO" 48 "$FAR" || fail "s3: the backup finished before it could be killed"
else
    note "S3 part SKIPPED: PV_TEST_S3 is not set"
fi
