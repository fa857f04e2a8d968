#!/bin/bash
# maint_torture.sh - several backup processes write different and overlapping trees into one
# repository while forget and prune (and check, maintain) run in a loop beside them, for a
# bounded time. Every backup, forget and prune must succeed; afterwards check --read-data must
# find no error, and every snapshot that was not forgotten must restore byte for byte.
# Time: PV_TORTURE_SECONDS (default 60); writers: PV_TORTURE_WRITERS (default 3).
. "$(dirname "$0")/lib.sh" || exit 1
: "${T:?lib.sh did not set the work directory}"
need jq

SECONDS_TOTAL=${PV_TORTURE_SECONDS:-60}
WRITERS=${PV_TORTURE_WRITERS:-3}
PV=("$PODVAULT" -r "$REPO" --password-file "$PW")

run_pv 0 init --chunk-min 16384 --chunk-avg 65536 --chunk-max 262144 --pack-size 1048576 \
    --kdf-passes 1 --kdf-memory 8K

# A pool of files the writers share, so their trees overlap and deduplicate across writers.
POOL=$T/pool
mkdir -p "$POOL"
for i in $(seq 1 30); do rand_file "$POOL/p$i" $(( (RANDOM % 8 + 1) * 40000 )); done

deadline=$(( $(date +%s) + SECONDS_TOTAL ))

# writer N: mutate its tree (files are replaced, never modified in place, so the hard-linked
# copy kept as the expected content stays as it was), back it up, keep the copy under the ID.
writer() {
    local w=$1 i=0 src=$T/w$1/src exp=$T/expect out sid rc
    mkdir -p "$src/sub" "$exp"
    for f in $(seq 1 6); do ln "$POOL/p$(( (w * 7 + f) % 30 + 1 ))" "$src/f$f" 2>/dev/null; done
    while [ "$(date +%s)" -lt "$deadline" ]; do
        i=$((i + 1))
        # Replace one file with another pool file, and add a file of its own.
        victim=$(ls "$src" | grep -v '^sub$' | shuf -n 1)
        [ -n "$victim" ] && rm -f "$src/$victim"
        ln "$POOL/p$(( RANDOM % 30 + 1 ))" "$src/f$w-$i" 2>/dev/null
        head -c $(( RANDOM * 8 + 1000 )) /dev/urandom >"$src/sub/u$w-$i"
        [ $((i % 3)) = 0 ] && rm -f "$(ls -d "$src"/sub/* | shuf -n 1)"
        rm -rf -- "${exp:?}/tmp${w:?}"
        cp -al "$src" "$exp/tmp$w"
        out=$("${PV[@]}" --json backup "$src" --host "node$w" --tag "w$w" 2>"$T/w$w/err.$i")
        rc=$?
        if [ "$rc" != 0 ]; then
            echo "backup $w.$i exited $rc: $(head -n 3 "$T/w$w/err.$i")" >>"$T/failures"
            continue
        fi
        sid=$(printf '%s\n' "$out" | tail -n 1 | jq -r .snapshot_id)
        mv "$exp/tmp$w" "$exp/$sid"
        echo "$sid" >>"$T/w$w/done"
    done
}

# The maintenance loop: one maintenance command at a time (they exclude each other).
maintainer() {
    local k=0 out rc
    while [ "$(date +%s)" -lt "$deadline" ]; do
        k=$((k + 1))
        case $((k % 5)) in
        0) cmd=(prune --max-unused 0%) ;;
        1) cmd=(prune) ;;
        2) cmd=(prune --quick) ;;
        3) cmd=(check) ;;
        4) cmd=(maintain --full --force) ;;
        esac
        out=$("${PV[@]}" --json "${cmd[@]}" 2>"$T/m.err.$k")
        rc=$?
        if [ "$rc" != 0 ]; then
            echo "${cmd[*]} ($k) exited $rc: $(head -n 3 "$T/m.err.$k"; printf '%s\n' "$out" | grep '"error"' | head -n 3)" >>"$T/failures"
            continue
        fi
        printf '%s\n' "$out" | tail -n 1 >>"$T/maint.json"
        sleep 0.$((RANDOM % 5))
    done
}

forgetter() {
    local k=0 rc
    while [ "$(date +%s)" -lt "$deadline" ]; do
        k=$((k + 1))
        sleep "$((RANDOM % 2)).$((RANDOM % 10))"
        "${PV[@]}" forget --keep-last 2 --group-by host -q 2>"$T/f.err.$k"
        rc=$?
        [ "$rc" = 0 ] || echo "forget ($k) exited $rc: $(head -n 3 "$T/f.err.$k")" >>"$T/failures"
    done
}

pids=()
for w in $(seq 1 "$WRITERS"); do
    mkdir -p "$T/w$w"
    writer "$w" &
    pids+=($!)
done
maintainer &
pids+=($!)
forgetter &
pids+=($!)
for p in "${pids[@]}"; do wait "$p"; done

if [ -s "$T/failures" ]; then
    cat "$T/failures"
    fail "some commands failed while running beside each other"
fi
backups=$(cat "$T"/w*/done 2>/dev/null | wc -l)
[ "$backups" -ge "$WRITERS" ] || fail "only $backups backups completed"
deleted=$(jq -s '[.[] | (.packs_deleted // .prune.packs_deleted // 0)] | add' "$T/maint.json")
pending=$(jq -s '[.[] | (.waiting_writers // .prune.waiting_writers // 0)] | max' "$T/maint.json")
ok "$backups backups, $(wc -l <"$T/maint.json") maintenance runs beside them ($deleted packs deleted, up to $pending writers waited for)"
[ "$deleted" -gt 0 ] || fail "prune never deleted anything: the test did not exercise deletion"

# Quiet now: prune frees what waited for writers; check reads everything.
run_pv 0 --json prune
run_pv 0 --json prune
[ "$(json_get .packs_pending)" = 0 ] || fail "packs still pending with no writer running"
run_pv 0 --json check --read-data
[ "$(tail -n 1 "$T/out" | jq -r .errors)" = 0 ] || { cat "$T/out"; fail "check --read-data found errors"; }
ok "check --read-data: no errors ($(tail -n 1 "$T/out" | jq -r .warnings) warnings)"

run_pv 0 --json snapshots
n=0
for sid in $(jq -r '.[].id' "$T/out"); do
    [ -d "$T/expect/$sid" ] || fail "snapshot $sid was not made by this test"
    run_pv 0 restore "$sid" --target "$T/r/$sid"
    diff -r --no-dereference "$T/expect/$sid" "$T/r/$sid" >"$T/diff" 2>&1 || { head -n 20 "$T/diff"; fail "snapshot $sid does not restore byte for byte"; }
    n=$((n + 1))
done
[ "$n" -ge "$WRITERS" ] || fail "only $n snapshots left"
ok "all $n remaining snapshots restore byte for byte"
