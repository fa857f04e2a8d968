#!/bin/bash
# s3_disk_full.sh - full disks beside an S3 repository (a real server: Ceph RGW on 127.0.0.1):
#   - the temporary directory in which packs are assembled (TMPDIR) fills up in the middle of a
#     backup: the backup fails with an error naming the directory and the cause, saves no
#     snapshot, leaves the repository consistent (check: no error), and succeeds once space is
#     freed;
#   - the cache directory is full: the cache only holds copies, so backup, snapshots and
#     restore go on without it, byte for byte.
# As root the disks are small tmpfs mounts; otherwise the test is skipped (77). Runs when
# PV_TEST_S3 and the AWS_* credentials are set; says SKIPPED otherwise.
. "$(dirname "$0")/lib.sh" || exit 1
: "${T:?lib.sh did not set the work directory}"
. "$(dirname "$0")/../s3-lib.sh" || exit 1
need jq
s3_require
if [ "$(id -u)" != 0 ] || ! mkdir -p "$T/fs" || ! mount -t tmpfs -o size=2m tmpfs "$T/fs" 2>/dev/null; then
    echo "skip [$TEST_NAME]: needs root to mount a small tmpfs"
    exit 77
fi
PV_CLEANUP+=("umount -l '$T/fs'")
check_clean() {
    run_pv 0 --json check
    [ "$(tail -n 1 "$T/out" | jq -r .errors)" = 0 ] || { cat "$T/out"; fail "$1: check found errors"; }
}

mkdir -p "$T/a" "$T/b" "$T/fs/tmp" "$T/fs/cache"
rand_file "$T/a/one" 100000
for i in 1 2 3 4; do rand_file "$T/b/f$i" 1500000; done
run_pv 0 init --pack-size 4M --kdf-passes 1 --kdf-memory 8K
run_pv 0 backup "$T/a" --tag a -q

# ---- the temporary directory fills up -------------------------------------------------------------
TMPDIR=$T/fs/tmp run_pv 1 backup "$T/b" --tag b
errors_name "No space left on device"
errors_name "$T/fs/tmp"
ok "a backup whose temporary directory fills up fails: $(grep -m1 'No space' "$T/err")"
check_clean "after the failed backup"
run_pv 0 snapshots --json
[ "$(jq -r '[.[].tags[0]] | join(",")' "$T/out")" = a ] || fail "the failed backup saved a snapshot"
mount -o remount,size=64m "$T/fs"
TMPDIR=$T/fs/tmp run_pv 0 backup "$T/b" --tag b -q
check_clean "after the next backup"
run_pv 0 restore latest --tag b --target "$T/rb" -q
tree_equal "$T/b" "$T/rb"
ok "no snapshot of the failed backup, check clean, and after space is freed the backup succeeds"

# ---- the cache directory is full ----------------------------------------------------------------
mount -o remount,size=1m "$T/fs"
rm -rf -- "${T:?}/fs/tmp" "${T:?}/fs/cache" && mkdir -p "$T/fs/cache"
head -c 2000000 /dev/zero >"$T/fs/fill" 2>/dev/null
export PODVAULT_CACHE_DIR=$T/fs/cache
echo more >"$T/a/two"
run_pv 0 backup "$T/a" --tag a2 -q
run_pv 0 snapshots --json
[ "$(jq 'length' "$T/out")" = 3 ] || fail "snapshots with a full cache: $(cat "$T/out")"
run_pv 0 restore latest --tag a2 --target "$T/ra" -q
tree_equal "$T/a" "$T/ra"
run_pv 0 restore latest --tag b --target "$T/rb2" -q
tree_equal "$T/b" "$T/rb2" --no-atime # the comparison above read the originals
check_clean "with a full cache"
ok "with a full cache directory backup, snapshots, restore and check work without it"
