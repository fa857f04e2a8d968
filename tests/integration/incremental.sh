#!/bin/bash
# incremental.sh - backups after the first: unchanged files are not read again, changed ones
# are, the parent is found by host and paths (or given), shifted data deduplicates, and an
# interrupted backup leaves a repository whose uploaded data the next backup reuses.
# Sizes: PV_INCR_MB (the data that the interrupted backup works on, default 400).
. "$(dirname "$0")/lib.sh" || exit 1
: "${T:?lib.sh did not set the work directory}"
need jq

S=$T/src
mkdir -p "$S/a/b" "$S/c"
for i in $(seq 1 50); do text_file "$S/a/t$i" $((i * 1000)); done
rand_file "$S/a/b/r1" $((6 * 1024 * 1024))
rand_file "$S/c/r2" $((3 * 1024 * 1024))
echo keep >"$S/c/keep"

summary() { # the JSON summary of the last backup, in $T/summary.json
    tail -n 1 "$T/out" >"$T/summary.json"
    jq -e '.message_type == "summary"' "$T/summary.json" >/dev/null || fail "no JSON summary"
}
field() { jq -r ".$1" "$T/summary.json"; }

run_pv 0 init
run_pv 0 --json backup "$S"
summary
first=$(field snapshot_id)
[ "$(field files_new)" -ge 53 ] || fail "first backup: files_new $(field files_new)"
[ "$(field parent)" = null ] || fail "first backup has a parent"
ok "first backup: $(field files_new) new files"

# Unchanged: nothing is read, nothing new is stored, and the parent was found by itself.
run_pv 0 --json backup "$S"
summary
second=$(field snapshot_id)
[ "$(field parent)" = "$first" ] || fail "unchanged re-backup: parent $(field parent), expected $first"
[ "$(field bytes_read)" = 0 ] || fail "unchanged re-backup read $(field bytes_read) bytes"
[ "$(field files_new)" = 0 ] && [ "$(field files_changed)" = 0 ] || fail "unchanged re-backup saw new or changed files"
[ "$(field files_unmodified)" -ge 53 ] || fail "files_unmodified $(field files_unmodified)"
[ "$(field bytes_new)" -lt 65536 ] || fail "unchanged re-backup stored $(field bytes_new) new bytes"
ok "unchanged re-backup: 0 bytes read, $(field blobs_new) new blobs, parent found"

# One file changed, one added, one removed: only those are read.
echo changed >>"$S/a/t7"
rand_file "$S/c/new" 100000
rm "$S/c/keep"
run_pv 0 --json backup "$S"
summary
[ "$(field parent)" = "$second" ] || fail "parent should be the previous snapshot"
[ "$(field files_new)" = 1 ] || fail "files_new $(field files_new), expected 1"
[ "$(field files_changed)" = 1 ] || fail "files_changed $(field files_changed), expected 1"
[ "$(field bytes_read)" -le $((7000 + 100000 + 10)) ] || fail "read $(field bytes_read) bytes for two small files"
run_pv 0 restore latest --target "$T/r3"
tree_equal "$S" "$T/r3"
ok "changed/added/removed files: only those read; restore matches"

# --force reads everything; --parent picks the given snapshot.
run_pv 0 --json backup "$S" --force
summary
[ "$(field bytes_read)" = "$(field total_bytes)" ] || fail "--force read $(field bytes_read) of $(field total_bytes)"
[ "$(field parent)" = null ] || fail "--force still used a parent"
run_pv 0 --json backup "$S" --parent "${first:0:12}"
summary
[ "$(field parent)" = "$first" ] || fail "--parent not honoured"
ok "--force and --parent"

# A file that touches its ctime/mtime is read again, even with the same size.
touch "$S/a/t1"
run_pv 0 --json backup "$S"
summary
[ "$(field bytes_read)" -ge 1000 ] || fail "touched file not read again (read $(field bytes_read) bytes)"
ok "touched file is read again"

# Shifted data: 1 byte inserted in front of a 32 MiB file adds only a chunk or two.
rand_file "$T/big" $((32 * 1024 * 1024))
mkdir -p "$T/s1" "$T/s2"
cp "$T/big" "$T/s1/f"
run_pv 0 --json backup "$T/s1"
{ printf 'Z'; cat "$T/big"; } >"$T/s2/f"
run_pv 0 --json backup "$T/s2"
summary
[ "$(field bytes_new)" -le $((8 * 1024 * 1024 + 65536)) ] || fail "shifted copy stored $(field bytes_new) new bytes"
ok "1-byte shift of 32 MiB stored $(field bytes_new) new bytes"

# Interrupted: SIGINT during a backup exits 130 and saves no snapshot; the next backup reuses
# what had been uploaded.
MB=${PV_INCR_MB:-400}
mkdir -p "$T/int"
rand_file "$T/int/a" $((MB / 2 * 1024 * 1024))
rand_file "$T/int/b" $((MB / 2 * 1024 * 1024))
n_before=$(pv --json snapshots | jq length)
pv --json backup "$T/int" >"$T/out" 2>"$T/err" &
pid=$!
# Wait until some data is in, then interrupt.
for _ in $(seq 1 100); do
    sleep 0.1
    last=$(grep '"status"' "$T/out" | tail -n 1 | jq -r '.bytes_done // 0' 2>/dev/null || echo 0)
    [ "${last:-0}" -gt $((MB * 1024 * 1024 / 3)) ] && break
done
kill -INT "$pid" 2>/dev/null
wait "$pid"
rc=$?
if [ "$rc" = 0 ]; then
    note "the backup finished before it could be interrupted; interruption not tested"
else
    [ "$rc" = 130 ] || fail "interrupted backup exited $rc, expected 130"
    one_line_error interrupted
    [ "$(pv --json snapshots | jq length)" = "$n_before" ] || fail "an interrupted backup saved a snapshot"
    run_pv 0 --json backup "$T/int"
    summary
    [ "$(field bytes_new)" -lt $((MB * 1024 * 1024)) ] || fail "after an interruption nothing was reused"
    ok "interrupted backup: exit 130, no snapshot; the next one reused $(( (MB * 1024 * 1024 - $(field bytes_new)) / 1048576 )) MiB"
fi
