#!/bin/bash
# s3_lock_attack.sh - an attacker with the node agent's own S3 credentials against a repository on
# S3 Object Lock (Ceph RGW enforces it): after three backups, the attacker overwrites some packs
# and the newest snapshot with garbage (check reports the damage), then deletes every object of
# the repository (check finds no repository). Reads with --as-of the time before the attack list
# every snapshot, restore each byte for byte and check --read-data clean; an --as-of between two
# backups sees only the snapshots of that time; writing with --as-of is refused. In compliance
# mode the attacker's deletions of old versions fail, bypass header or not.
# Runs when PV_TEST_S3 and AWS_* are set (eval "$(tests/s3-env.sh)"); says SKIPPED otherwise.
. "$(dirname "$0")/lib.sh" || exit 1
. "$(dirname "$0")/../s3-lib.sh" || exit 1
. "$(dirname "$0")/../s3-lock-lib.sh" || exit 1
lock_require
KDF=(--kdf-passes 1 --kdf-memory 8K)
now_ms() { date -u +%Y-%m-%dT%H:%M:%S.%3NZ; }

# ---- three backups, with the times between them ----
run_pv 0 init "${KDF[@]}" --pack-size 1M --object-lock 2m --object-lock-mode compliance
S=$T/src
mkdir -p "$S/d"
rand_file "$S/d/one" 2500000
text_file "$S/text" 300000
ids=()
for i in 1 2 3; do
    [ "$i" = 1 ] || rand_file "$S/d/new$i" $((700000 * i))
    run_pv 0 --json backup "$S"
    ids+=("$(tail -n 1 "$T/out" | jq -r .snapshot_id)")
    cp -a "$S" "$T/src$i"
    sleep 1.1
    times+=("$(now_ms)")
    sleep 1.1
done
ok "three backups on a compliance-locked repository"

# A dry run back to after the second backup would remove what the third wrote, and changes nothing.
run_pv 0 --json --no-cache --as-of "${times[1]}" repair versions --dry-run
tail -n 1 "$T/out" | jq -e '.restore == 0 and .remove >= 2 and .done == 0 and .dry_run' >/dev/null ||
    fail "repair versions --dry-run: $(cat "$T/out")"
grep -q "\"name\":\"snapshots/${ids[2]}\"" "$T/out" || fail "the dry run does not remove the third snapshot: $(cat "$T/out")"
run_pv 0 --json --no-cache snapshots
[ "$(jq length "$T/out")" = 3 ] || fail "the dry run changed something: $(cat "$T/out")"
ok "repair versions --dry-run lists what it would remove, changes nothing"

# ---- the attack, with the agent's own credentials ----
lock_versions >"$T/versions"
jq -r 'select(.latest and (.marker | not)) | .key' "$T/versions" | grep -v '^locks/' >"$T/keys"
jq -r 'select(.marker | not) | select(.key | startswith("locks/") | not) | "\(.key) \(.version)"' "$T/versions" >"$T/old"
newest=snapshots/$(grep '^snapshots/' "$T/keys" | while read -r k; do
    run_pv 0 --json cat snapshot "${k#snapshots/}"
    echo "$(jq -r .time "$T/out") ${k#snapshots/}"
done | sort | tail -n 1 | cut -d' ' -f2)
[ "$newest" = "snapshots/${ids[2]}" ] || fail "newest snapshot $newest, not ${ids[2]}"
head -c 5000 /dev/urandom >"$T/garbage"
packs=$(grep '^data/' "$T/keys" | head -n 2)
for k in $packs "$newest"; do
    lock_aws s3api put-object --bucket "$LOCK_BUCKET" --key "$LOCK_PREFIX/$k" --body "$T/garbage" >/dev/null ||
        fail "the attacker could not overwrite $k"
done
run_pv 1 --no-cache check
cat "$T/out" "$T/err" >"$T/check"
grep -q "snapshot ${ids[2]}: .*authentication failed" "$T/check" || fail "check missed the snapshot: $(cat "$T/check")"
for k in $packs; do
    grep -q "error: pack ${k##*/}" "$T/check" || fail "check missed the pack $k: $(cat "$T/check")"
done
base=http://$(s3_hostport)/$LOCK_BUCKET/$LOCK_PREFIX
while read -r k; do
    st=$(s3_curl -X DELETE -o /dev/null -w '%{http_code}' "$base/$k")
    [ "$st" = 204 ] || fail "the attacker could not delete $k: HTTP $st"
done <"$T/keys"
run_pv 10 --no-cache snapshots
# Old versions: the compliance lock holds against their deletion, with or without the bypass.
[ "$(wc -l <"$T/old")" -gt 5 ] || fail "too few versions: $(cat "$T/old")"
while read -r k v; do
    st=$(lock_delete_version "$k" "$v")
    [ "$st" = 403 ] || fail "deleting version $v of $k (compliance): HTTP $st $(cat "$T/delete.out")"
    st=$(lock_delete_version "$k" "$v" "x-amz-bypass-governance-retention: true")
    [ "$st" = 403 ] || fail "deleting version $v of $k with the bypass (compliance): HTTP $st"
done < <(head -n 6 "$T/old")
ok "attack: packs and the newest snapshot overwritten (check reports it), every object deleted (no repository); deleting old versions fails (403)"

# ---- reading as it stood ----
before=${times[2]}
run_pv 0 --json --no-cache --as-of "$before" snapshots
jq -e --argjson ids "$(printf '%s\n' "${ids[@]}" | jq -R . | jq -s .)" '[.[].id] | sort == ($ids | sort)' "$T/out" >/dev/null ||
    fail "snapshots --as-of $before: $(cat "$T/out")"
for i in 0 1 2; do
    run_pv 0 --no-cache --as-of "$before" restore "${ids[$i]}" --target "$T/r$i"
    tree_equal "$T/src$((i + 1))" "$T/r$i" --no-atime # the copies were made after the backup read them
done
run_pv 0 --no-cache --as-of "$before" ls "${ids[2]}"
grep -q "/d/new3" "$T/out" || fail "ls --as-of: $(cat "$T/out")"
run_pv 0 --no-cache --as-of "$before" check --read-data
run_pv 0 --json --no-cache --as-of "${times[0]}" snapshots
jq -e --arg id "${ids[0]}" '[.[].id] == [$id]' "$T/out" >/dev/null || fail "snapshots --as-of ${times[0]}: $(cat "$T/out")"
ok "--as-of before the attack: 3 snapshots, each restored byte for byte, ls, check --read-data clean; --as-of after the first backup: 1 snapshot"

run_pv 1 --no-cache --as-of "$before" backup "$S"
grep -q "read as it stood at an earlier time" "$T/err" || fail "backup --as-of: $(cat "$T/err")"
run_pv 2 --as-of yesterday snapshots
grep -q -- "--as-of: want a UTC time" "$T/err" || fail "--as-of yesterday: $(cat "$T/err")"
REPO=$T/local run_pv 1 --as-of "$before" snapshots
grep -q "a local directory has none" "$T/err" || fail "--as-of on a local directory: $(cat "$T/err")"
ok "--as-of refuses writes, a malformed time and a local directory"

# ---- repair versions ----
nkeys=$(wc -l <"$T/keys")
run_pv 2 --no-cache repair versions
grep -q "needs --as-of" "$T/err" || fail "repair versions without --as-of: $(cat "$T/err")"
run_pv 0 --json --no-cache --as-of "$before" repair versions --dry-run
tail -n 1 "$T/out" | jq -e --argjson n "$nkeys" '.restore == $n and .remove == 0 and .done == 0' >/dev/null ||
    fail "repair versions --dry-run after the attack ($nkeys objects): $(tail -n 1 "$T/out")"
run_pv 10 --no-cache snapshots
run_pv 0 --json --no-cache --as-of "$before" repair versions
tail -n 1 "$T/out" | jq -e --argjson n "$nkeys" '.restore == $n and .done == $n' >/dev/null ||
    fail "repair versions: $(tail -n 1 "$T/out")"
run_pv 0 --no-cache check --read-data
run_pv 0 --json --no-cache snapshots
[ "$(jq length "$T/out")" = 3 ] || fail "snapshots after the repair: $(cat "$T/out")"
run_pv 0 --no-cache restore "${ids[2]}" --target "$T/after"
tree_equal "$T/src3" "$T/after" --no-atime
r=$(lock_retention "$newest")
[ "${r%% *}" = COMPLIANCE ] || fail "the restored $newest has no compliance retention: $r"
rand_file "$S/d/new4" 900000
run_pv 0 --no-cache backup "$S"
run_pv 0 --no-cache check
ok "repair versions restored $nkeys objects (shown first): check --read-data clean, 3 snapshots, byte for byte, retention anew, a new backup works"
