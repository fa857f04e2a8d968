#!/bin/bash
# s3_lock.sh - init --object-lock against Ceph RGW, which enforces S3 Object Lock: a bucket
# without Object Lock, a local directory and bad values are refused with clear errors; on a
# bucket with it, the config records the lock and every object a backup writes (config, keys,
# packs, index, snapshots) carries the retention (mode, and a date at least the retention ahead),
# lock objects none; a locked version refuses deletion, a plain DELETE leaves a delete marker.
# Runs when PV_TEST_S3 and AWS_* are set (eval "$(tests/s3-env.sh)"); says SKIPPED otherwise.
. "$(dirname "$0")/lib.sh" || exit 1
. "$(dirname "$0")/../s3-lib.sh" || exit 1
. "$(dirname "$0")/../s3-lock-lib.sh" || exit 1
lock_require
KDF=(--kdf-passes 1 --kdf-memory 8K)

# ---- refusals ----
plain=lock-it-plain
lock_aws s3api head-bucket --bucket $plain >/dev/null 2>&1 ||
    lock_aws s3api create-bucket --bucket $plain >/dev/null || fail "cannot create $plain"
saved=$REPO
REPO=s3:http://$(s3_hostport)/$plain/$LOCK_PREFIX
run_pv 1 init "${KDF[@]}" --object-lock 1
one_line_error
grep -q "bucket $plain does not have Object Lock enabled" "$T/err" || fail "plain bucket: $(cat "$T/err")"
[ -z "$(s3_keys)" ] || fail "init wrote objects to a bucket without Object Lock: $(s3_keys)"
REPO=$T/local
run_pv 1 init "${KDF[@]}" --object-lock 1
one_line_error
grep -q "object lock needs an S3 bucket" "$T/err" || fail "local: $(cat "$T/err")"
REPO=$saved
for bad in 0 10s 5x -1 ""; do
    run_pv 2 init "${KDF[@]}" --object-lock "$bad"
    grep -q -- "--object-lock: want days" "$T/err" || fail "--object-lock '$bad': $(cat "$T/err")"
done
run_pv 2 init "${KDF[@]}" --object-lock 1 --object-lock-mode sometimes
grep -q -- "--object-lock-mode: want governance or compliance" "$T/err" || fail "mode: $(cat "$T/err")"
run_pv 2 init "${KDF[@]}" --object-lock-mode compliance
grep -q -- "--object-lock-mode needs --object-lock" "$T/err" || fail "mode alone: $(cat "$T/err")"
ok "refused: a bucket without Object Lock (nothing written), a local directory, bad durations and modes"

# ---- a locked repository ----
run_pv 0 --json init "${KDF[@]}" --pack-size 1M --object-lock 2 --object-lock-mode governance
jq -e '.object_lock_mode == "governance" and .object_lock_seconds == 172800' "$T/out" >/dev/null ||
    fail "init --json: $(cat "$T/out")"
run_pv 0 cat config
jq -e '.version == 3 and .object_lock == {"mode": "governance", "retention_s": 172800}' "$T/out" >/dev/null ||
    fail "cat config: $(cat "$T/out")"
mkdir -p "$T/src/d"
rand_file "$T/src/d/a" 3000000
text_file "$T/src/b" 200000
start=$(date -u +%s)
run_pv 0 backup "$T/src"
run_pv 0 key add "${KDF[@]}" --new-password-file "$PW" # a key file written after init
lock_versions >"$T/versions"
n=0
while read -r line; do
    key=$(jq -r .key <<<"$line")
    v=$(jq -r .version <<<"$line")
    [ "$(jq -r .marker <<<"$line")" = true ] && continue
    r=$(lock_retention "$key" "$v")
    case "$key" in
    locks/*)
        [ "$r" = none ] || fail "lock object $key has a retention: $r" ;;
    *)
        mode=${r%% *}
        until=$(date -u -d "${r#* }" +%s) || fail "$key: retention '$r'"
        [ "$mode" = GOVERNANCE ] || fail "$key: mode '$r'"
        [ "$until" -ge $((start + 172800 - 5)) ] || fail "$key: retained until ${r#* }, less than 2 days"
        n=$((n + 1)) ;;
    esac
done <"$T/versions"
for d in config keys/ data/ index/ snapshots/; do
    grep -q "\"key\":\"$d" "$T/versions" || fail "no $d object among $(cat "$T/versions")"
done
[ "$(grep -c '"key":"keys/' "$T/versions")" = 2 ] || fail "not two key files: $(cat "$T/versions")"
grep -q '"key":"locks/' "$T/versions" || fail "the backup's lock object left no version"
ok "config, keys, packs, index and snapshot: $n versions retained GOVERNANCE for 2 days; lock objects without"

# ---- what the lock does ----
pack=$(jq -r 'select(.key | startswith("data/")) | .key' "$T/versions" | head -n 1)
pv_ver=$(jq -r --arg k "$pack" 'select(.key == $k) | .version' "$T/versions")
st=$(lock_delete_version "$pack" "$pv_ver")
[ "$st" = 403 ] && grep -q AccessDenied "$T/delete.out" || fail "deleting a locked version: $st $(cat "$T/delete.out")"
lock_aws s3api delete-object --bucket "$LOCK_BUCKET" --key "$LOCK_PREFIX/$pack" >/dev/null ||
    fail "a plain DELETE of $pack"
lock_versions | jq -e -s --arg k "$pack" '[.[] | select(.key == $k)] | (map(select(.marker)) | length) == 1 and (map(select(.marker | not)) | length) == 1' >/dev/null ||
    fail "after a plain DELETE of $pack: $(lock_versions | grep "$pack")"
run_pv 0 snapshots
ok "a locked version refuses deletion (AccessDenied); a plain DELETE leaves a delete marker"
