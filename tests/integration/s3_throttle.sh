#!/bin/bash
# s3_throttle.sh - throttling storms: S3 (through pv_faultproxy) answers 503 SlowDown to half of
# all requests for a while, then recovers. Backups and restores finish and restore byte for
# byte; the requests they make stay within 3x those of the same commands on a quiet server, plus
# 10 (each attempt is a coin toss, so the mean is 2x: more would be a retry storm); a total
# outage is waited out; a storm that never ends fails once the throttle time is over, with an
# error that says so.
#   PV_THROTTLE_STORM_S  length of the 50% storm, in seconds (default 30, so that the restore
#                        after the first backup still meets it on a fast machine; 300 runs backups and
#                        restores in a loop through five minutes of it)
# Runs when PV_TEST_S3 and the AWS_* credentials are set (eval "$(tests/s3-env.sh)"); says
# SKIPPED otherwise. Every podvault run is bounded in time (tests/s3-lib.sh).
. "$(dirname "$0")/lib.sh" || exit 1
. "$(dirname "$0")/../s3-lib.sh" || exit 1
need jq
s3_require

STORM_S=${PV_THROTTLE_STORM_S:-30}
case "$STORM_S" in '' | *[!0-9]*) fail "PV_THROTTLE_STORM_S must be a number of seconds" ;; esac
S=$T/src
s3_make_tree "$S"
stat_of() { awk -v k="$2" '$1 == k { print $2 }' "$1"; }
now_ms() { date +%s%3N; }

# pvx LOCATION CACHE CODE ARGS...: podvault on a repository through a proxy, its own cache
pvx() {
    PODVAULT_CACHE_DIR=$T/cache-$2 run_raw "$3" -r "$1" --password-file "$PW" "${@:4}"
}

# ---- a quiet server: the request counts to compare with ----
s3_proxy QUIET --rate 0 --stats "$T/quiet"
pvx "$QUIET/quiet" quiet 0 init --pack-size "$S3_PACK_SIZE"
pvx "$QUIET/quiet" quiet 0 backup "$S"
quiet_backup=$(stat_of "$T/quiet" requests)
pvx "$QUIET/quiet" quiet 0 restore latest --target "$T/r-quiet"
quiet_restore=$(($(stat_of "$T/quiet" requests) - quiet_backup))
tree_equal "$S" "$T/r-quiet"
kill "$QUIET_pid"
note "quiet server: init and backup $quiet_backup requests, restore $quiet_restore"

# ---- half of all requests answered 503 SlowDown for STORM_S seconds ----
s3_proxy STORM --rate 50 --faults 503 --storm-ms $((STORM_S * 1000)) --stats "$T/storm"
t0=$(now_ms)
pvx "$STORM/storm" storm 0 init --pack-size "$S3_PACK_SIZE"
pvx "$STORM/storm" storm 0 --json backup "$S"
tail -n 1 "$T/out" | jq -e '.message_type == "summary" and .errors == 0' >/dev/null ||
    fail "backup summary: $(tail -n 1 "$T/out")"
storm_backup=$(stat_of "$T/storm" requests)
faults_backup=$(stat_of "$T/storm" faults)
pvx "$STORM/storm" storm 0 restore latest --target "$T/r-storm"
storm_restore=$(($(stat_of "$T/storm" requests) - storm_backup))
faults_restore=$(($(stat_of "$T/storm" faults) - faults_backup))
tree_equal "$S" "$T/r-storm"
[ "$faults_backup" -ge $((quiet_backup / 4)) ] && [ "$faults_restore" -ge $((quiet_restore / 4)) ] ||
    fail "too few faults to prove anything: $faults_backup and $faults_restore"
[ "$storm_backup" -le $((3 * quiet_backup + 10)) ] ||
    fail "retry storm: backup made $storm_backup requests, quiet $quiet_backup"
[ "$storm_restore" -le $((3 * quiet_restore + 10)) ] ||
    fail "retry storm: restore made $storm_restore requests, quiet $quiet_restore"
ok "50% SlowDown: backup $storm_backup requests ($faults_backup 503s; quiet $quiet_backup), restore $storm_restore ($faults_restore 503s; quiet $quiet_restore), byte for byte"

# As long as the storm lasts: change files, back up, restore, compare (bounded in count).
rounds=0
while [ $(($(now_ms) - t0)) -lt $((STORM_S * 1000)) ] && [ $rounds -lt 1000 ]; do
    rounds=$((rounds + 1))
    echo "round $rounds" >>"$S/text/short"
    rand_file "$S/small/round-$rounds" $((rounds * 4099 % 300000 + 1))
    pvx "$STORM/storm" storm 0 backup "$S"
    rm -rf -- "${T:?}/r-round"
    pvx "$STORM/storm" storm 0 restore latest --target "$T/r-round"
    tree_equal "$S" "$T/r-round" --no-atime
done
in_storm=$(stat_of "$T/storm" faults)
# Recovered: the same work meets no fault any more.
pvx "$STORM/storm" storm 0 backup "$S"
rm -rf -- "${T:?}/r-round"
pvx "$STORM/storm" storm 0 restore latest --target "$T/r-round"
tree_equal "$S" "$T/r-round" --no-atime
[ "$(stat_of "$T/storm" faults)" = "$in_storm" ] || fail "the proxy kept throttling after the storm"
ok "$rounds more backup and restore rounds through the ${STORM_S} s storm ($in_storm 503s in $(stat_of "$T/storm" requests) requests), then after it"
kill "$STORM_pid"

# ---- a total outage of 4 s, then recovery: waited out, with backoff ----
s3_proxy OUT --rate 100 --faults 503 --storm-ms 4000 --stats "$T/out-stats"
t0=$(now_ms)
pvx "$OUT/storm" storm 0 backup "$S" --force
took=$(($(now_ms) - t0))
requests=$(stat_of "$T/out-stats" requests)
faults=$(stat_of "$T/out-stats" faults)
[ "$faults" -ge 1 ] || fail "the outage answered nothing"
# The backup's first requests run one at a time, each backing off (bounds 0.1, 0.2, 0.4, ... s):
# about 7 attempts fit in 4 s.
[ "$requests" -le $((quiet_backup + 60)) ] || fail "retry storm in an outage: $requests requests"
ok "a 4 s outage waited out: backup took $((took / 1000)).$((took % 1000 / 100)) s, $faults 503s in $requests requests"
kill "$OUT_pid"

# ---- a storm that never ends: a clear error once the throttle time is over ----
s3_proxy DEAD --always 503 --stats "$T/dead"
for cmd in snapshots backup; do
    t0=$(now_ms)
    args=(snapshots)
    [ $cmd = backup ] && args=(backup "$S")
    PODVAULT_S3_THROTTLE_TIME=4 pvx "$DEAD/storm" storm 1 "${args[@]}"
    took=$(($(now_ms) - t0))
    one_line_error "kept asking to slow down"
    grep -q "HTTP 503 SlowDown" "$T/err" || fail "no status in: $(cat "$T/err")"
    grep -q "PODVAULT_S3_THROTTLE_TIME" "$T/err" || fail "the error does not name the setting"
    [ $took -ge 4000 ] && [ $took -le 15000 ] || fail "$cmd failed after $took ms (throttle time 4 s)"
    note "$cmd: failed in $((took / 1000)) s: $(cat "$T/err")"
done
requests=$(stat_of "$T/dead" requests)
# Two commands, each one request at a time: about 6 attempts in the count, a few more in the rest of the 4 s.
[ "$requests" -le 60 ] || fail "retry storm against a dead server: $requests requests"
ok "a storm that never ends: clear errors after the 4 s throttle time, $requests requests in all"
