#!/bin/bash
# s3_faults.sh - S3 through pv_faultproxy, which breaks a quarter of the requests on purpose
# (dropped connections, delayed answers, 500 and 503 answers, requests and answers cut short):
# init, backup, incremental backup and restore still finish, and restore byte for byte. When
# the server never recovers (the proxy's --always mode), commands fail within bounded time with
# an error that names the object and the last status.
# Runs when PV_TEST_S3 and the AWS_* credentials are set (eval "$(tests/s3-env.sh)"); says
# SKIPPED otherwise. Every podvault run is bounded in time (tests/s3-lib.sh).
. "$(dirname "$0")/lib.sh" || exit 1
: "${T:?lib.sh did not set the work directory}"
. "$(dirname "$0")/../s3-lib.sh" || exit 1
need jq
s3_require

S=$T/src
s3_make_tree "$S"

# ---- a bounded share of faults: everything still works ----
# Short backoff and stall limits keep the run short; the retry count is the default's order.
export PODVAULT_S3_RETRIES=8 PODVAULT_S3_RETRY_DELAY_MS=50 PODVAULT_S3_RETRY_MAX_DELAY_MS=2000
export PODVAULT_S3_STALL_TIMEOUT=10
s3_proxy PX --rate 25 --faults drop,delay,500,503,cut --delay-ms 1500 --seed 20240611 --stats "$T/stats"
pvf() { # CODE ARGS...: podvault through the faulty proxy
    run_raw "$1" -r "$PX" --password-file "$PW" "${@:2}"
}
pvf 0 init --pack-size "$S3_PACK_SIZE"
pvf 0 --json backup "$S"
tail -n 1 "$T/out" | jq -e '.message_type == "summary" and .incomplete == false and .errors == 0' >/dev/null ||
    fail "backup summary: $(tail -n 1 "$T/out")"
pvf 0 restore latest --target "$T/restore"
tree_equal "$S" "$T/restore"
ok "backup and restore byte for byte through $(awk '$1 == "faults" { print $2 }' "$T/stats") faults in $(awk '$1 == "requests" { print $2 }' "$T/stats") requests"

echo changed >>"$S/text/short"
rand_file "$S/big/random2" $((5 * 1024 * 1024))
pvf 0 --json backup "$S"
tail -n 1 "$T/out" | jq -e '.files_changed == 1 and .files_new == 1 and .incomplete == false' >/dev/null ||
    fail "incremental backup summary: $(tail -n 1 "$T/out")"
pvf 0 restore latest --target "$T/restore2"
tree_equal "$S" "$T/restore2"
pvf 0 --json snapshots
[ "$(jq length "$T/out")" = 2 ] || fail "expected 2 snapshots, got: $(cat "$T/out")"
faults=$(awk '$1 == "faults" { print $2 }' "$T/stats")
requests=$(awk '$1 == "requests" { print $2 }' "$T/stats")
[ "$faults" -ge 8 ] || fail "only $faults faults in $requests requests: the test proved little"
ok "incremental backup and restore byte for byte; $faults faults in $requests requests in all"

# ---- every answer late (a distant server): a restore needs no retry ----
# Packs are far larger than a header block, so this also checks that the proxy delivers a
# held-back answer whole (it once closed the connection on any answer over 64 KiB).
s3_proxy SLOW --always delay --delay-ms 100 --stats "$T/slow-stats"
PODVAULT_S3_RETRIES=0 run_raw 0 -r "$SLOW" --password-file "$PW" restore latest --target "$T/restore3"
# --no-atime: the diff -r of the last comparison read the changed files and moved their atimes
tree_equal "$S" "$T/restore3" --no-atime
ok "restore byte for byte with every one of $(awk '$1 == "requests" { print $2 }' "$T/slow-stats") answers held back 100 ms, no retries"
kill "$SLOW_pid"

# ---- the server never recovers: a clear error in bounded time ----
# Default retry settings: 7 attempts with backoff capped, a few seconds in all.
unset PODVAULT_S3_RETRIES PODVAULT_S3_RETRY_DELAY_MS PODVAULT_S3_RETRY_MAX_DELAY_MS
# Throttling (503) alone would be retried for the throttle time: s3_throttle.sh tests that.
export PODVAULT_S3_THROTTLE_TIME=0
for fault in 503 500 drop; do
    s3_proxy DEAD --always "$fault"
    start=$(date +%s)
    run_raw 1 -r "$DEAD" --password-file "$PW" snapshots
    secs=$(($(date +%s) - start))
    [ $secs -le 60 ] || fail "--always $fault: took $secs s to fail"
    one_line_error "gave up after 7 attempts"
    grep -q "config" "$T/err" || fail "--always $fault: the error does not name the object: $(cat "$T/err")"
    case $fault in
    503) grep -q "HTTP 503 SlowDown" "$T/err" || fail "--always 503: no status in: $(cat "$T/err")" ;;
    500) grep -q "HTTP 500 InternalError" "$T/err" || fail "--always 500: no status in: $(cat "$T/err")" ;;
    esac
    note "--always $fault: failed in $secs s: $(cat "$T/err")"
    kill "$DEAD_pid"
done
# A backup fails the same way, and leaves no snapshot behind.
s3_proxy DEAD --always 503
run_raw 1 -r "$DEAD" --password-file "$PW" backup "$S"
one_line_error "gave up after"
run_pv 0 --json snapshots
[ "$(jq length "$T/out")" = 2 ] || fail "a failed backup left a snapshot: $(cat "$T/out")"
ok "a server that never recovers: clear errors within bounded time"
