#!/bin/bash
# s3.sh - the command line on an S3 repository (a real server: Ceph RGW on 127.0.0.1, which
# checks signatures): init, backup, incremental backup, snapshots, ls, restore byte for byte,
# a wrong password, and a wrong secret that must fail at once with the server's reason.
# Runs when PV_TEST_S3 and the AWS_* credentials are set (eval "$(tests/s3-env.sh)"); skips
# otherwise, saying so.
. "$(dirname "$0")/lib.sh" || exit 1
need jq
if [ -z "${PV_TEST_S3:-}" ] || [ -z "${AWS_ACCESS_KEY_ID:-}" ]; then
    echo "SKIP [$TEST_NAME]: no S3 server (run eval \"\$(tests/s3-env.sh)\" first)"
    exit 0
fi
REPO=$PV_TEST_S3/it-$(basename "$T")-$$

S=$T/src
mkdir -p "$S/a/b" "$S/empty"
rand_file "$S/a/random" $((24 * 1024 * 1024))
text_file "$S/a/b/text" $((8 * 1024 * 1024))
for i in $(seq 1 300); do echo "$i" >"$S/a/f$i"; done
ln -s random "$S/a/link"

run_pv 0 init
run_pv 0 --json backup "$S" --tag s3
tail -n 1 "$T/out" | jq -e '.message_type == "summary" and .incomplete == false' >/dev/null || fail "backup summary"
first=$(tail -n 1 "$T/out" | jq -r .snapshot_id)
echo more >>"$S/a/f1"
run_pv 0 --json backup "$S" --tag s3
tail -n 1 "$T/out" | jq -e --arg p "$first" '.parent == $p and .files_changed == 1 and .bytes_read < 1000' >/dev/null \
    || fail "incremental backup on S3: $(tail -n 1 "$T/out")"
ok "init, backup and incremental backup on $REPO"

run_pv 0 --json snapshots
[ "$(jq length "$T/out")" = 2 ] || fail "snapshots on S3"
run_pv 0 ls latest /a/b
[ "$(cat "$T/out")" = /a/b/text ] || fail "ls on S3: $(cat "$T/out")"
run_pv 0 restore latest --target "$T/restore"
tree_equal "$S" "$T/restore"
ok "snapshots, ls, restore byte for byte"

echo wrong >"$T/wrong"
run_raw 12 -r "$REPO" --password-file "$T/wrong" snapshots
one_line_error
start=$(date +%s)
AWS_SECRET_ACCESS_KEY=not-the-secret run_pv 1 snapshots
[ $(( $(date +%s) - start )) -le 10 ] || fail "a wrong secret took more than 10 s to fail (retried?)"
one_line_error
grep -Eqi 'SignatureDoesNotMatch|403|denied|signature' "$T/err" || fail "wrong secret: no server reason in: $(cat "$T/err")"
ok "wrong password (exit 12); wrong secret fails at once: $(cat "$T/err")"
