#!/bin/bash
# roundtrip.sh - backs up generated trees (empty, huge, shifted, compressible, random, sparse,
# deep, wide, oddly named) and restores them: they must come back byte for byte, with their
# metadata, and the repository must show deduplication and compression at work.
# Sizes: PV_BIG_MB (the huge file, default 300).
. "$(dirname "$0")/lib.sh" || exit 1
: "${T:?lib.sh did not set the work directory}"
need jq

BIG_MB=${PV_BIG_MB:-300}
S=$T/src
mkdir -p "$S"/empty "$S"/data "$S"/shifted "$S"/names "$S"/wide "$S"/links "$S"/emptydir

# Empty files, and an empty directory.
for i in 1 2 3; do : >"$S/empty/e$i"; done
# A huge random file, a compressible text file, a small random file.
rand_file "$S/data/huge.bin" $((BIG_MB * 1024 * 1024))
text_file "$S/data/text.log" $((48 * 1024 * 1024))
rand_file "$S/data/small.bin" 12345
# Shifted copies: the same 16 MiB with one byte in front, and with 4 KiB inserted in the middle.
rand_file "$S/shifted/base" $((16 * 1024 * 1024))
{ printf 'x'; cat "$S/shifted/base"; } >"$S/shifted/plus1"
{ head -c $((8 * 1024 * 1024)) "$S/shifted/base"; head -c 4096 /dev/urandom
  tail -c +$((8 * 1024 * 1024 + 1)) "$S/shifted/base"; } >"$S/shifted/insert4k"
# A sparse file: 100 MiB with 1 MiB of data in the middle.
truncate -s 100M "$S/data/sparse.img"
head -c 1048576 /dev/urandom | dd of="$S/data/sparse.img" bs=1M seek=50 conv=notrunc status=none
# Deep: 200 levels; wide: 5000 entries in one directory.
deep=$S/deep
for i in $(seq 1 200); do deep=$deep/d$i; done
mkdir -p "$deep" && echo bottom >"$deep/leaf"
awk -v d="$S/wide" 'BEGIN { for (i = 0; i < 5000; i++) { f = sprintf("%s/f%05d", d, i)
                             printf "%d\n", i > f; close(f) } }'
# Names a file system allows: spaces, UTF-8, a newline, a tab, a leading dash, glob characters,
# bytes that are not UTF-8.
for n in "with space" "ünïcødé ✓" $'new\nline' $'tab\tname' "-dash" "*glob?[x]" $'\xff\xfe'; do
    printf '%s\n' "$n" >"$S/names/$n"
done
# Symlinks (relative, inside the tree, and one dangling), a hard link, modes and old times.
ln -s ../data/small.bin "$S/links/to-small"
ln -s does-not-exist "$S/links/dangling"
ln "$S/data/small.bin" "$S/links/hard"
chmod 0600 "$S/data/small.bin"
chmod 0755 "$S/empty/e1"
chmod 0700 "$S/names"
touch -d '2001-02-03 04:05:06.123456789' "$S/empty/e2"
touch -h -d '2002-03-04 05:06:07.5' "$S/links/to-small"
touch -d '1999-12-31 23:59:59' "$S/emptydir"
total_files=$(find "$S" -mindepth 1 ! -type d -printf . | wc -c)

run_pv 0 init
ok "init"
run_pv 0 --json backup "$S" --tag roundtrip
tail -n 1 "$T/out" | jq -e '.message_type == "summary"' >/dev/null || fail "no JSON summary"
tail -n 1 "$T/out" >"$T/summary.json"
sid=$(jq -r .snapshot_id "$T/summary.json")
files=$(jq -r .total_files "$T/summary.json")
[ "$files" -ge "$total_files" ] || fail "summary counts $files files, the tree has $total_files"
[ "$(jq -r .incomplete "$T/summary.json")" = false ] || fail "snapshot marked incomplete"
ok "backup of $(du -sh --apparent-size "$S" | cut -f1) in $(jq -r '.seconds * 10 | round / 10' "$T/summary.json") s, snapshot ${sid:0:8}"

run_pv 0 restore "$sid" --target "$T/restore"
tree_equal "$S" "$T/restore"
# The backed-up directory's own mode and mtime go to the target (its atime is not recorded).
[ "$(stat -c '%a %Y' "$S")" = "$(stat -c '%a %Y' "$T/restore")" ] || fail "root metadata: $(stat -c '%a %y' "$S") vs $(stat -c '%a %y' "$T/restore")"
ok "restore is identical (content, types, modes, owners, sizes, mtimes, links)"

# The sparse file stays sparse.
alloc=$(du -k "$T/restore/data/sparse.img" | cut -f1)
[ "$alloc" -lt 20480 ] || fail "restored sparse file takes $alloc KiB on disk"
ok "sparse file restored with holes ($alloc KiB allocated for 100 MiB)"

# Deduplication and compression: the shifted copies add a few chunks, the text compresses.
repo_size=$(dir_bytes "$REPO")
limit=$(( (BIG_MB + 16 + 8 + 24 + 1 + 4) * 1024 * 1024 ))
[ "$repo_size" -le "$limit" ] || fail "repository is $repo_size bytes, expected at most $limit"
ok "repository $((repo_size / 1048576)) MiB for $(( $(du -sb --apparent-size "$S" | cut -f1) / 1048576 )) MiB of data"

# A sub-directory of the snapshot ("ID:/dir"), and a subset with --include.
run_pv 0 restore "${sid:0:10}:/wide" --target "$T/sub"
tree_equal "$S/wide" "$T/sub" --no-atime
ok "restore of ID:/wide"
run_pv 0 restore latest --target "$T/inc" --include /names --include /links/to-small
[ -d "$T/inc/names" ] && [ -L "$T/inc/links/to-small" ] || fail "--include did not restore its paths"
[ ! -e "$T/inc/data" ] && [ ! -e "$T/inc/links/hard" ] || fail "--include restored more than asked"
tree_equal "$S/names" "$T/inc/names" --no-atime
ok "restore with --include"

# Several paths: each becomes an entry of the root named by its last component.
run_pv 0 backup "$S/deep" "$S/names" "$S/shifted"
run_pv 0 restore latest --target "$T/multi"
[ "$(ls "$T/multi" | LC_ALL=C sort | tr '\n' ' ')" = "deep names shifted " ] || fail "multi-path snapshot root: $(ls "$T/multi")"
for d in deep names shifted; do tree_equal "$S/$d" "$T/multi/$d" --no-atime; done
ok "backup of several paths"
