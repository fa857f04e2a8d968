#!/bin/bash
# repair.sh - a repository that heals (local directory).
#  1. Two data packs are deleted: `check` fails and names the snapshot and the files that lost
#     data; `repair index` drops the lost packs' entries; a backup of the same data stores again
#     exactly the blobs that were lost (counted: the data blobs of the deleted packs); `check`
#     is then clean and the restore byte for byte.
#  2. Two more are deleted and the data is gone from the source too: `repair snapshots` rewrites
#     the snapshots without the damaged files, keeping the originals and removing nothing; the
#     repaired snapshot restores every other file byte for byte; prune refuses to run beside the
#     damaged originals, and says what to do; `--forget` then removes the originals, prune runs
#     and `check` is clean.
#  3. A pack is damaged (bytes flipped, not missing): `check --read-data` names it, and
#     `repair snapshots --read-data` drops the files whose blobs cannot be read.
. "$(dirname "$0")/lib.sh" || exit 1
need jq

S=$T/src
mkdir -p "$S/a/deep" "$S/b"
for i in $(seq 1 8); do rand_file "$S/a/f$i" $((700 * 1024 + i * 1000)); done
for i in $(seq 1 4); do rand_file "$S/a/deep/g$i" $((900 * 1024)); done
for i in $(seq 1 30); do echo "small $i" >"$S/b/s$i"; done
run_pv 0 init --pack-size 1M --kdf-passes 1 --kdf-memory 8K
run_pv 0 --json backup "$S"

# data_packs: the IDs of packs that hold data blobs (tree packs are kept apart)
data_packs() {
    local p
    for p in $(find "$REPO/data" -type f -printf '%f\n' | LC_ALL=C sort); do
        pv cat pack "$p" | jq -e 'any(.blobs[]; .type == "data")' >/dev/null && echo "$p"
    done
}
pack_file() { find "$REPO/data" -type f -name "$1"; }
# lose N: deletes N data packs (the first ones by ID), printing how many data blobs they held
lose() {
    local n=0 p
    for p in $(data_packs | head -n "$1"); do
        n=$((n + $(pv cat pack "$p" | jq '[.blobs[] | select(.type == "data")] | length')))
        rm -f "$(pack_file "$p")"
    done
    echo $n
}
# expect_without FROM TO LIST: a copy of FROM without the files in LIST, directory times kept
expect_without() {
    local d
    cp -a "$1" "$2"
    while read -r p; do rm -f "$2$p"; done <"$3"
    (cd "$1" && find . -type d) | while read -r d; do touch -h -r "$1/$d" "$2/$d"; done
}
# last_rewrite: the new snapshot of the last one the last --json repair rewrote (rewrites keep
# their original's time, so "latest" may name an older rewrite)
last_rewrite() { jq -r 'select(.message_type == "rewritten") | .new_snapshot' "$T/out" | tail -n 1; }
# damaged_paths: the paths of the damage lines of the last --json command, sorted
damaged_paths() { jq -r 'select(.message_type == "damage") | .path' "$T/out" | LC_ALL=C sort -u; }

# ---- 1. lost packs, the data still at hand: repair index, back up, healed ----
lost=$(lose 2)
run_pv 1 --json check
damaged_paths >"$T/damaged1"
[ -s "$T/damaged1" ] || fail "check named no damaged file"
while read -r p; do [ -f "$S$p" ] || fail "check named $p, which is not a file of the source"; done <"$T/damaged1"
jq -s -e "all(.[] | select(.message_type == \"damage\"); .snapshot == \"$(pv --json snapshots | jq -r '.[0].id')\")" "$T/out" >/dev/null ||
    fail "the damage is not named with its snapshot: $(head -n 3 "$T/out")"
ok "check names $(wc -l <"$T/damaged1") damaged files of the snapshot: $(tr '\n' ' ' <"$T/damaged1")"
run_pv 0 repair index
run_pv 0 --json backup "$S"
again=$(tail -n 1 "$T/out" | jq .blobs_new)
[ "$again" = "$lost" ] || fail "the backup after repair index stored $again blobs, $lost were lost"
run_pv 0 --json check
tail -n 1 "$T/out" | jq -e '.errors == 0' >/dev/null || fail "check after healing: $(tail -n 1 "$T/out")"
run_pv 0 restore latest --target "$T/r1"
tree_equal "$S" "$T/r1"
first=$(pv --json snapshots | jq -r '.[0].id')
run_pv 0 restore "$first" --target "$T/r1-first"
tree_equal "$S" "$T/r1-first" --no-atime
ok "lost $lost blobs in 2 packs; repair index and a backup stored exactly $again again; check clean, both snapshots restore byte for byte"

# ---- 2. lost packs, the data gone from the source too: repair snapshots ----
lost=$(lose 2)
run_pv 0 repair index
run_pv 1 --json check
damaged_paths >"$T/damaged2"
before=$(cd "$REPO" && find . -type f | LC_ALL=C sort)
n_snaps=$(pv --json snapshots | jq length)
run_pv 0 --json repair snapshots
damaged_paths >"$T/dropped"
cmp -s "$T/damaged2" "$T/dropped" || fail "repair dropped $(cat "$T/dropped"), check named $(cat "$T/damaged2")"
tail -n 1 "$T/out" | jq -e ".snapshots_written == $n_snaps and .snapshots_forgotten == 0" >/dev/null ||
    fail "repair summary: $(tail -n 1 "$T/out")"
after=$(cd "$REPO" && find . -type f | LC_ALL=C sort)
gone=$(LC_ALL=C comm -23 <(echo "$before") <(echo "$after") | grep -v '^./locks/' || true)
[ -z "$gone" ] || fail "repair snapshots removed objects: $gone"
[ "$(pv --json snapshots | jq length)" = $((2 * n_snaps)) ] || fail "the originals were not kept"
run_pv 0 restore "$(last_rewrite)" --target "$T/r2"
expect_without "$S" "$T/expect2" "$T/dropped"
tree_equal "$T/expect2" "$T/r2" --no-atime
ok "lost $lost blobs: repair snapshots dropped $(wc -l <"$T/dropped") files ($(tr '\n' ' ' <"$T/dropped")), kept the $n_snaps originals, removed nothing; every other file restores byte for byte"
# Prune refuses to run while snapshots refer to lost data, and says what to do.
run_pv 1 prune
grep -q "repair snapshots --forget" "$T/err" || fail "prune's refusal does not say what to do: $(cat "$T/err")"
run_pv 0 --json repair snapshots --forget
tail -n 1 "$T/out" | jq -e ".snapshots_forgotten == $n_snaps" >/dev/null || fail "--forget: $(tail -n 1 "$T/out")"
run_pv 0 --json check
tail -n 1 "$T/out" | jq -e '.errors == 0' >/dev/null || fail "check after repair --forget: $(tail -n 1 "$T/out")"
run_pv 0 prune
run_pv 0 --json check
tail -n 1 "$T/out" | jq -e '.errors == 0 and .warnings == 0' >/dev/null || fail "check after prune: $(tail -n 1 "$T/out")"
run_pv 0 restore latest --target "$T/r2b"
tree_equal "$T/expect2" "$T/r2b" --no-atime
[ "$(pv --json snapshots | jq '[.[] | select(.tags | index("repaired") | not)] | length')" = 0 ] ||
    fail "an original snapshot is left after --forget"
ok "prune refused while snapshots referred to lost data; repair snapshots --forget removed the $n_snaps originals; prune ran, check clean, restore byte for byte"

# ---- 3. a damaged pack: check --read-data names it, repair --read-data drops its files ----
victim=$(data_packs | head -n 1)
f=$(pack_file "$victim")
chmod u+w "$f"
printf 'XXXXXXXX' | dd of="$f" bs=1 seek=100 conv=notrunc 2>/dev/null
run_pv 1 check --read-data
grep -q "$victim" "$T/out" || fail "check --read-data does not name pack $victim: $(head -n 5 "$T/out")"
run_pv 0 --json repair snapshots --read-data
damaged_paths >"$T/dropped3"
[ -s "$T/dropped3" ] || fail "repair --read-data dropped nothing"
run_pv 0 restore "$(last_rewrite)" --target "$T/r3"
expect_without "$T/expect2" "$T/expect3" "$T/dropped3"
tree_equal "$T/expect3" "$T/r3" --no-atime
ok "a damaged pack: check --read-data names it; repair --read-data dropped $(wc -l <"$T/dropped3") files, the rest restores byte for byte"
