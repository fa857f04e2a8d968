#!/bin/bash
# maint_crash.sh - backups and prunes killed with SIGKILL at random points, round after round:
# after each kill the repository checks without errors (unreferenced data is only a warning),
# the next backup succeeds and restores byte for byte, and at the end a prune leaves a
# repository that checks clean, data included.
# Rounds: PV_CRASH_ROUNDS (default 16).
. "$(dirname "$0")/lib.sh" || exit 1
: "${T:?lib.sh did not set the work directory}"
need jq

ROUNDS=${PV_CRASH_ROUNDS:-16}
PV=("$PODVAULT" -r "$REPO" --password-file "$PW")

run_pv 0 init --chunk-min 16384 --chunk-avg 65536 --chunk-max 262144 --pack-size 1048576 \
    --kdf-passes 1 --kdf-memory 8K
S=$T/src
mkdir -p "$S/a" "$S/b"
for i in $(seq 1 12); do rand_file "$S/a/f$i" $(( (RANDOM % 6 + 1) * 100000 )); done
run_pv 0 backup "$S" -q

# Kills "$@" (a podvault command line) after a random 0..300 ms (these commands take 0.1 to
# 0.5 s here, so most are killed mid-way); prints its exit code.
kill_during() {
    "${PV[@]}" "$@" >/dev/null 2>&1 &
    local pid=$! rc
    sleep "0.$(printf '%03d' $((RANDOM % 300)))"
    kill -9 "$pid" 2>/dev/null
    wait "$pid"
    rc=$?
    no_crash_or_killed "$rc"
    echo "$rc"
}
no_crash_or_killed() { # 137 is our SIGKILL; any other signal is a crash
    if [ "$1" -gt 128 ] && [ "$1" != 137 ] && [ "$1" != 130 ]; then fail "podvault crashed (exit $1)"; fi
}

check_no_errors() {
    run_pv 0 --json check
    [ "$(tail -n 1 "$T/out" | jq -r .errors)" = 0 ] || { cat "$T/out"; fail "$1: check found errors"; }
}

killed=0
for round in $(seq 1 "$ROUNDS"); do
    # New data, so the backup has packs to upload when it is killed.
    for i in $(seq 1 4); do rand_file "$S/b/r$round-$i" $(( (RANDOM % 8 + 1) * 60000 )); done
    rm -f "$S/a/f$(( RANDOM % 12 + 1 ))"
    rc=$(kill_during backup "$S")
    [ "$rc" = 137 ] && killed=$((killed + 1))
    check_no_errors "round $round, after the backup was killed (exit $rc)"

    run_pv 0 forget --keep-last 2 -q
    rc=$(kill_during prune --max-unused 0%)
    [ "$rc" = 137 ] && killed=$((killed + 1))
    check_no_errors "round $round, after prune was killed (exit $rc)"

    # The next operation succeeds, and what it saved comes back.
    run_pv 0 --json backup "$S"
    sid=$(tail -n 1 "$T/out" | jq -r .snapshot_id)
    rm -rf -- "${T:?}/restore"
    run_pv 0 restore "$sid" --target "$T/restore"
    diff -r --no-dereference "$S" "$T/restore" >"$T/diff" 2>&1 || { head "$T/diff"; fail "round $round: the backup after the crashes does not restore"; }
done
ok "$ROUNDS rounds, $killed processes killed mid-way; check found no errors after any of them"

# Quiet: one prune removes what the dead left; then everything checks clean, data included.
run_pv 0 --json prune
run_pv 0 --json check --read-data
[ "$(tail -n 1 "$T/out" | jq -r .errors)" = 0 ] || { cat "$T/out"; fail "final check found errors"; }
[ "$(tail -n 1 "$T/out" | jq -r .warnings)" = 0 ] || { cat "$T/out"; fail "final check found unreferenced data after prune"; }
run_pv 0 --json snapshots
for sid in $(jq -r '.[].id' "$T/out"); do
    run_pv 0 restore "$sid" --target "$T/final/$sid"
done
diff -r --no-dereference "$S" "$T/final/$sid" >"$T/diff" 2>&1 || { head "$T/diff"; fail "latest snapshot does not restore"; }
ok "after a final prune: check --read-data clean, no unreferenced data, snapshots restore"
