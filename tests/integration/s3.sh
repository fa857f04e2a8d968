#!/bin/bash
# s3.sh - the command line on an S3 repository (a real server: Ceph RGW on 127.0.0.1, which
# checks signatures): init, backup and restore byte for byte of a tree with empty files, a file
# larger than a pack, many small files, random and compressible data; snapshots, ls and cat;
# incremental backup; the local cache (through a logging pv_faultproxy: `snapshots` and an
# unchanged backup download no index, snapshot or tree data again); read-ahead (a restore makes
# far fewer requests than it has files); forget and prune (the cache follows); read-ahead with
# several segments in flight over many small files in several packs; a wrong password;
# a wrong secret that fails at once with the server's reason.
# Runs when PV_TEST_S3 and the AWS_* credentials are set (eval "$(tests/s3-env.sh)"); says
# SKIPPED otherwise. Every podvault run is bounded in time (tests/s3-lib.sh).
. "$(dirname "$0")/lib.sh" || exit 1
: "${T:?lib.sh did not set the work directory}"
. "$(dirname "$0")/../s3-lib.sh" || exit 1
need jq
s3_require

S=$T/src
s3_make_tree "$S"

# ---- backup and restore ----
run_pv 0 init --pack-size "$S3_PACK_SIZE"
run_pv 0 --json backup "$S" --tag s3
tail -n 1 "$T/out" | jq -e '.message_type == "summary" and .incomplete == false and .errors == 0' >/dev/null ||
    fail "backup summary: $(tail -n 1 "$T/out")"
first=$(tail -n 1 "$T/out" | jq -r .snapshot_id)
run_pv 0 restore latest --target "$T/restore"
tree_equal "$S" "$T/restore"
ok "init, first backup and restore byte for byte ($(dir_bytes "$S") bytes) on $REPO"

# ---- snapshots, ls, cat ----
run_pv 0 --json snapshots
jq -e --arg id "$first" 'length == 1 and .[0].id == $id and .[0].tags == ["s3"]' "$T/out" >/dev/null ||
    fail "snapshots on S3: $(cat "$T/out")"
tree=$(jq -r '.[0].tree' "$T/out")
run_pv 0 ls latest /text/b
[ "$(cat "$T/out")" = "$(printf '/text/b/empty\n/text/b/words')" ] || fail "ls on S3: $(cat "$T/out")"
run_pv 0 cat config
repo_id=$(jq -r .repo_id "$T/out")
jq -e '.pack_size == 4194304' "$T/out" >/dev/null || fail "cat config: $(cat "$T/out")"
run_pv 0 cat snapshot "$first"
jq -e --arg t "$tree" '.tree == $t' "$T/out" >/dev/null || fail "cat snapshot: $(cat "$T/out")"
run_pv 0 cat tree "$tree"
jq -e '[.nodes[].name] | index("big") != null and index("empty") != null' "$T/out" >/dev/null ||
    fail "cat tree: $(cat "$T/out")"
ok "snapshots, ls, cat config/snapshot/tree"

# ---- the cache ----
# The first backup wrote its index file, snapshot and tree pack into the cache as it uploaded them.
C=$PODVAULT_CACHE_DIR/$repo_id
[ -f "$PODVAULT_CACHE_DIR/CACHEDIR.TAG" ] || fail "no CACHEDIR.TAG in $PODVAULT_CACHE_DIR"
[ -f "$C/snapshots/$first" ] || fail "the snapshot is not in the cache $C"
[ -n "$(ls "$C/index")" ] || fail "no index file in the cache $C"
n_packs=$(find "$C/data" -type f | wc -l)
[ "$n_packs" -ge 1 ] || fail "no tree pack in the cache"
[ "$n_packs" -le 2 ] || fail "$n_packs packs in the cache: data packs were cached too"


# A logging proxy shows what each command downloads.
s3_proxy PX --rate 0 --log "$T/px.log"
C2=$T/cache2
pvx() { # CACHE ARGS...: podvault through the proxy; the GETs of metadata it made go to $T/gets
    local cache=$1 off rc
    shift
    off=$(file_size "$T/px.log")
    PODVAULT_CACHE_DIR=$cache "$PODVAULT" -r "$PX" --password-file "$PW" "$@" >"$T/out" 2>"$T/err"
    rc=$?
    [ $rc = 0 ] || fail "podvault $* through the proxy exited $rc"
    s3_gets "$T/px.log" "$off" >"$T/gets"
}

# ---- incremental backup: the cache the first backup filled saves every metadata download ----
echo more >>"$S/small/d1/f1"
rm "$S/text/short"
echo new >"$S/empty-dir/new"
boff=$(file_size "$T/px.log")
pvx "$PODVAULT_CACHE_DIR" --json backup "$S" --tag s3
tail -n 1 "$T/out" | jq -e '.files_changed == 1 and .files_new == 1 and .bytes_read < 10000 and .incomplete == false' >/dev/null ||
    fail "incremental backup on S3: $(tail -n 1 "$T/out")"
second=$(tail -n 1 "$T/out" | jq -r .snapshot_id)
[ ! -s "$T/gets" ] || fail "the incremental backup downloaded metadata its own client wrote: $(cat "$T/gets")"
# Packs, index files and snapshots have random names: no request asks whether one exists.
probes=$(s3_probes "$T/px.log" "$boff")
[ -z "$probes" ] || fail "the backup probed for objects it was about to upload: $probes"
pvx "$PODVAULT_CACHE_DIR" restore latest --target "$T/restore2"
tree_equal "$S" "$T/restore2"
# Read-ahead: blobs that were written together are read together, not one request per file.
n_files=$(find "$S" -type f | wc -l)
n_gets=$(grep -c /data/ "$T/gets")
[ "$n_gets" -le 40 ] || fail "restoring $n_files files took $n_gets GETs of packs"
run_pv 0 restore "$first:/text" --target "$T/restore3" # the first snapshot is still whole
[ "$(wc -c <"$T/restore3/short")" = 1000 ] || fail "the first snapshot lost text/short"
cmp -s "$S/text/b/words" "$T/restore3/b/words" || fail "the first snapshot's text/b/words differs"
ok "incremental backup (no metadata downloaded); restore of $n_files files in $n_gets GETs; the first snapshot is whole"

# ---- a second client, with an empty cache, downloads metadata once ----
pvx "$C2" snapshots
grep -q "/snapshots/$first\$" "$T/gets" || fail "the first 'snapshots' did not download the snapshot: $(cat "$T/gets")"
pvx "$C2" snapshots
[ ! -s "$T/gets" ] || fail "a second 'snapshots' downloaded again: $(cat "$T/gets")"
pvx "$C2" --json backup "$S" --tag s3
grep -q "/index/" "$T/gets" || fail "the first backup with an empty cache read no index file"
grep -q "/data/" "$T/gets" || fail "the first backup with an empty cache read no tree"
tail -n 1 "$T/out" | jq -e --arg p "$second" '.parent == $p and .files_new == 0 and .files_changed == 0 and .bytes_read == 0' >/dev/null ||
    fail "unchanged backup: $(tail -n 1 "$T/out")"
pvx "$C2" --json backup "$S" --tag s3
[ ! -s "$T/gets" ] || fail "an unchanged backup downloaded metadata again: $(cat "$T/gets")"
pvx "$C2" --no-cache snapshots # the check can fail: without the cache everything is read
[ "$(grep -c /snapshots/ "$T/gets")" = 4 ] || fail "--no-cache: $(cat "$T/gets")"
ok "cache: 'snapshots' and an unchanged backup download no index, snapshot or tree data again"

# ---- forget and prune: the cache follows the repository ----
run_pv 0 forget "$first"
[ ! -f "$C/snapshots/$first" ] || fail "forget left the snapshot in the cache"
run_pv 0 --json prune --max-unused 0%
note "prune: $(tail -n 1 "$T/out")"
s3_keys >"$T/keys"
for f in "$C"/index/* "$C"/snapshots/* "$C"/data/*/*; do
    [ -e "$f" ] || continue
    grep -qx "${f#"$C"/}" "$T/keys" || fail "the cache still holds ${f#"$C"/}, which the repository no longer has"
done
[ -n "$(ls "$C/index")" ] || fail "no index file left in the cache"
run_pv 0 restore latest --target "$T/restore4"
tree_equal "$S" "$T/restore4"
ok "forget and prune: the cache holds nothing the repository lost; restore after prune byte for byte"

# ---- read-ahead: many small files over several packs, several segments fetched at once ----
M=$T/many
mkdir -p "$M/a" "$M/b"
head -c $((7 * 1024 * 1024)) /dev/urandom | (cd "$M/a" && split -a 4 -b 2999 - f)
head -c $((5 * 1024 * 1024)) /dev/urandom | (cd "$M/b" && split -a 4 -b 4097 - g)
# Read once before the backup: the first read after a write sets atime (relatime), and the
# comparisons below read the source.
find "$M" -type f -exec cat {} + >/dev/null
n_many=$(find "$M" -type f | wc -l)
run_pv 0 --json backup "$M" --tag many
many=$(tail -n 1 "$T/out" | jq -r .snapshot_id)
# More restore threads than the default too: each reader has room of its own, and none waits for
# a segment there is no room for (eight threads on two downloads once hung).
for run in "1 2" "4 2" "2 8"; do
    read -r slots threads <<<"$run"
    PODVAULT_S3_DOWNLOADS=$slots pvx "$T/cache-many-$slots-$threads" restore "$many" \
        --threads "$threads" --target "$T/many-$slots-$threads"
    tree_equal "$M" "$T/many-$slots-$threads"
    n_gets=$(grep -c /data/ "$T/gets")
    [ "$n_gets" -le 30 ] || fail "restoring $n_many small files ($slots downloads, $threads threads) took $n_gets GETs of packs"
done
ok "read-ahead: $n_many small files over several packs restored byte for byte with 1, 4 and 2 downloads at once, and 2 or 8 threads ($n_gets GETs)"

# ---- wrong password, wrong secret ----
echo wrong >"$T/wrong"
run_raw 12 -r "$REPO" --password-file "$T/wrong" snapshots
one_line_error
start=$(date +%s%N)
AWS_SECRET_ACCESS_KEY=not-the-secret run_pv 1 snapshots
ms=$((($(date +%s%N) - start) / 1000000))
[ $ms -le 5000 ] || fail "a wrong secret took $ms ms to fail (retried?)"
one_line_error SignatureDoesNotMatch
ok "wrong password (exit 12); wrong secret fails in $ms ms: $(cat "$T/err")"

# ---- the test's objects go (also checks that s3_delete_prefix works, and exit 10 on S3) ----
s3_delete_prefix
run_pv 10 snapshots
one_line_error "no repository"
ok "test repository deleted: $(cat "$T/err")"
