#!/bin/bash
# maint_cli.sh - the maintenance commands as a user runs them: forget by policy and by ID (with
# --dry-run and --json), prune --dry-run then prune, check exit codes and messages naming the
# damaged object, repair index, maintain deciding what is due, and usage errors.
. "$(dirname "$0")/lib.sh" || exit 1
: "${T:?lib.sh did not set the work directory}"
need jq

run_pv 0 init --chunk-min 16384 --chunk-avg 65536 --chunk-max 262144 --pack-size 1048576 \
    --kdf-passes 1 --kdf-memory 8K
S=$T/src
mkdir -p "$S"
for i in 1 2 3 4; do
    rm -f "$S"/f*
    rand_file "$S/f$i" 400000
    run_pv 0 --json backup "$S" --tag "t$i" --host h1
done
run_pv 0 --json backup "$S" --host h2
run_pv 0 --json snapshots
[ "$(jq length "$T/out")" = 5 ] || fail "expected 5 snapshots"
oldest=$(jq -r '.[0].id' "$T/out")

# Usage errors.
run_pv 2 forget
one_line_error "no policy"
run_pv 2 forget --keep-last 1 "$oldest"
run_pv 2 forget --keep-daily x
run_pv 2 prune --max-unused 5
run_pv 2 check --read-data-subset 0/3
run_pv 2 repair
ok "usage errors"

# forget by policy: per host, keep the last 2; --dry-run removes nothing.
run_pv 0 --json forget --keep-last 2 --dry-run
[ "$(tail -n 1 "$T/out" | jq -r '.removed, .kept, .dry_run' | tr '\n' ' ')" = "2 3 true " ] || fail "dry run: $(tail -n 1 "$T/out")"
grep -c '"message_type":"group"' "$T/out" | grep -qx 2 || fail "expected two groups (hosts)"
run_pv 0 --json snapshots
[ "$(jq length "$T/out")" = 5 ] || fail "dry run removed snapshots"
run_pv 0 forget --keep-last 2 --keep-tag t1
grep -q "keep" "$T/out" || fail "no human listing"
run_pv 0 --json snapshots
[ "$(jq length "$T/out")" = 4 ] || fail "expected 4 snapshots after forget --keep-last 2 --keep-tag t1"
jq -e --arg id "$oldest" 'map(.id) | index($id) != null' "$T/out" >/dev/null || fail "the tagged snapshot was removed"
# by ID (a unique prefix)
run_pv 0 forget "${oldest:0:12}"
run_pv 0 --json snapshots
[ "$(jq length "$T/out")" = 3 ] || fail "forget by ID"
ok "forget: policy per host, --keep-tag, --dry-run, by ID"

# --max-memory (and PODVAULT_MAX_MEMORY, for the CronJob): a bound too small fails at once,
# naming the least that works; a bound that forces passes gives the same plan and findings.
summary() { grep '"message_type":"summary"' "$T/out" | jq -c "$1"; }
run_pv 0 --json prune --dry-run
plan0=$(jq -c '[.packs_deleted, .packs_repacked, .bytes_freed, .blobs, .blobs_used]' "$T/out")
run_pv 0 --json check
check0=$(summary '[.errors, .warnings, .blobs, .blobs_used]')
run_pv 1 prune --dry-run --max-memory 4K
grep -q "too small to prune this repository: at least" "$T/err" || fail "no clear error: $(cat "$T/err")"
least=$(sed -n 's/.*(\([0-9]*\) bytes) is needed.*/\1/p' "$T/err")
one=$(sed -n 's/.*one pass needs \([0-9]*\) bytes.*/\1/p' "$T/err")
[ -n "$least" ] && [ -n "$one" ] && [ "$one" -gt "$least" ] || fail "no figures: $(cat "$T/err")"
bound=$((least + (one - least) / 4))
run_pv 0 --json prune --dry-run --max-memory "$bound"
[ "$(json_get .passes)" -ge 2 ] || fail "a bound of $bound made no passes: $(cat "$T/out")"
[ "$(jq -c '[.packs_deleted, .packs_repacked, .bytes_freed, .blobs, .blobs_used]' "$T/out")" = "$plan0" ] ||
    fail "plan under --max-memory $bound differs: $(cat "$T/out") vs $plan0"
PODVAULT_MAX_MEMORY=4K run_pv 1 check
grep -q "too small to check this repository" "$T/err" || fail "env bound ignored: $(cat "$T/err")"
cleast=$(sed -n 's/.*(\([0-9]*\) bytes) is needed.*/\1/p' "$T/err")
cone=$(sed -n 's/.*one pass needs \([0-9]*\) bytes.*/\1/p' "$T/err")
PODVAULT_MAX_MEMORY=$((cone * 2)) run_pv 0 --json check --max-memory "$((cleast + (cone - cleast) / 4))"
[ "$(summary .passes)" -ge 2 ] || fail "check under a bound made no passes: $(cat "$T/out")"
[ "$(summary '[.errors, .warnings, .blobs, .blobs_used]')" = "$check0" ] || fail "check findings differ"
# A real prune under the forcing bound does what the plan said, and the repository checks clean
# (on a copy, so that the unbounded prune below still finds work).
cp -a "$REPO" "$T/repo.unpruned"
run_pv 1 prune --max-memory 4K
grep -q "too small to prune this repository: at least" "$T/err" || fail "real prune, too small: $(cat "$T/err")"
run_pv 0 --json prune --max-memory "$bound"
[ "$(json_get .passes)" -ge 2 ] || fail "a real prune under $bound made no passes: $(cat "$T/out")"
[ "$(jq -c '[.packs_deleted, .packs_repacked, .bytes_freed, .blobs, .blobs_used]' "$T/out")" = "$plan0" ] ||
    fail "real prune under --max-memory $bound differs from the plan: $(cat "$T/out") vs $plan0"
run_pv 0 --json check --read-data
[ "$(summary '[.errors, .warnings]')" = "[0,0]" ] || fail "check after a bounded prune: $(cat "$T/out")"
rm -rf -- "${REPO:?}"
mv "$T/repo.unpruned" "$REPO"
PODVAULT_MAX_MEMORY=lots run_pv 2 check
run_pv 2 prune --max-memory 0
ok "--max-memory: too small fails at once (least $least bytes); $bound bytes forces passes with the same plan, findings and real prune"

# prune: the dry run says what would go and changes nothing; then prune frees it.
before=$(dir_bytes "$REPO")
run_pv 0 --json prune --dry-run
would=$(json_get .bytes_freed)
[ "$(json_get .dry_run)" = true ] && [ "$would" -gt 0 ] || fail "prune --dry-run: $(cat "$T/out")"
[ "$(dir_bytes "$REPO")" = "$before" ] || fail "prune --dry-run changed the repository"
run_pv 0 prune
grep -q "^delete" "$T/out" || fail "prune printed no summary"
after=$(dir_bytes "$REPO")
[ "$after" -lt "$before" ] || fail "prune freed nothing"
ok "prune --dry-run announced $would bytes; prune freed $((before - after))"

run_pv 0 check --read-data
grep -q "no errors" "$T/out" || fail "check printed no verdict"

# Damage: a flipped byte in the middle of a pack. check --read-data names the pack and exits 1.
pack=$(find "$REPO/data" -type f -size +100k | head -n 1)
[ -n "$pack" ] || fail "no pack to damage"
id=$(basename "$pack")
size=$(stat -c %s "$pack")
printf '\xff' | dd of="$pack" bs=1 seek=$((size / 3)) conv=notrunc status=none
run_pv 0 check
run_pv 1 --json check --read-data
grep '"message_type":"error"' "$T/out" | grep -q "$id" || fail "check does not name pack $id"
tail -n 1 "$T/out" | jq -e '.errors >= 1' >/dev/null || fail "summary counts no error"
ok "check --read-data names the damaged pack and exits 1"

# A lost index file: check reports, repair index rebuilds, check is clean again.
rm -f "$REPO"/index/*
run_pv 1 check
grep -q "^error:" "$T/out" || fail "check did not report the missing index entries"
run_pv 0 --json repair index
[ "$(json_get .index_files_written)" -ge 1 ] || fail "repair wrote no index"
run_pv 1 check --read-data # the flipped byte is still there
run_pv 0 --json snapshots
ok "repair index after losing the index"

# maintain: a full run the first time, then nothing is due; --quick --force runs a quick one.
rm -rf -- "${REPO:?}" && run_pv 0 init --kdf-passes 1 --kdf-memory 8K && run_pv 0 backup "$S" -q
run_pv 0 --json maintain
[ "$(json_get .ran)" = full ] && [ "$(json_get .ok)" = true ] || fail "maintain: $(cat "$T/out")"
run_pv 0 --json maintain
[ "$(json_get .ran)" = none ] || fail "maintain ran again: $(cat "$T/out")"
run_pv 0 --json maintain --quick --force
[ "$(json_get .ran)" = quick ] || fail "maintain --quick --force"
run_pv 0 maintain --dry-run --full --force
grep -q "dry run of full maintenance" "$T/out" || fail "maintain --dry-run"
ok "maintain decides what is due"
