#!/bin/bash
# disk_full.sh - full disks: a local repository that fills up in the middle of a backup, and a
# restore target that fills up. Each fails with an error naming the path and the cause
# ("No space left on device"), the repository stays consistent (check: no error), no snapshot
# refers to data that was not stored, no partly restored file is left that could pass for the
# original (every file left in the target is byte for byte the original), and the next run
# after space is freed succeeds. As root the disks are small tmpfs mounts that are grown
# afterwards; otherwise, in a failpoint build (-DPV_FAILPOINTS=ON), the disk fills up through
# PV_FAILPOINT=enospc:N at half of the operations of the run; else the test is skipped (77).
# The S3 temporary directory and the cache directory: s3_disk_full.sh.
. "$(dirname "$0")/lib.sh" || exit 1
: "${T:?lib.sh did not set the work directory}"
need jq

# PV_DISK_FULL_HOW=failpoint chooses the failpoint where tmpfs would do.
if [ "${PV_DISK_FULL_HOW:-}" != failpoint ] && [ "$(id -u)" = 0 ] && mkdir -p "$T/probe" &&
    mount -t tmpfs -o size=1m tmpfs "$T/probe" 2>/dev/null; then
    umount "$T/probe"
    HOW=tmpfs
elif PV_FAILPOINT=count "$PODVAULT" version 2>&1 >/dev/null | grep -q '^podvault failpoints:'; then
    HOW=failpoint
else
    echo "skip [$TEST_NAME]: needs root (tmpfs) or a failpoint build"
    exit 77
fi
note "full disks through $HOW"

# small_fs DIR SIZE: a file system of SIZE at DIR (tmpfs), or a plain directory.
small_fs() {
    mkdir -p "$1"
    if [ "$HOW" = tmpfs ]; then
        mount -t tmpfs -o "size=$2" tmpfs "$1" || fail "cannot mount a tmpfs at $1"
        PV_CLEANUP+=("umount -l '$1'")
    fi
}
# free_space DIR: space is freed (the tmpfs grows to 256 MiB).
free_space() { [ "$HOW" = tmpfs ] && mount -o remount,size=256m "$1"; true; }
# run_full CODE ARGS...: runs podvault where the disk fills up; with the failpoint, at half of
# the operations that a counting run makes on a copy of the repository.
run_full() {
    local want=$1 n
    shift
    if [ "$HOW" = failpoint ]; then
        rm -rf -- "${T:?}/count-repo" && cp -a "$REPO" "$T/count-repo"
        n=$(PV_FAILPOINT=count "$PODVAULT" -r "$T/count-repo" --password-file "$PW" "$@" 2>&1 >/dev/null |
            sed -n 's/^podvault failpoints: \([0-9]*\) operations$/\1/p')
        [ -n "$n" ] || fail "no operation count for $*"
        PV_FAILPOINT=enospc:$((n / 2 + 1)) run_pv "$want" "$@"
    else
        run_pv "$want" "$@"
    fi
}
check_clean() {
    run_pv 0 --json check
    [ "$(tail -n 1 "$T/out" | jq -r .errors)" = 0 ] || { cat "$T/out"; fail "$1: check found errors"; }
}

# ---- a local repository fills up in the middle of a backup --------------------------------------
small_fs "$T/fs1" 3m
REPO=$T/fs1/repo
run_pv 0 init --pack-size 1M --kdf-passes 1 --kdf-memory 8K
mkdir -p "$T/a" "$T/b/sub"
rand_file "$T/a/one" 100000
echo two >"$T/a/two"
run_pv 0 backup "$T/a" --tag a -q
for i in 1 2 3 4 5 6; do rand_file "$T/b/f$i" 700000; done
rand_file "$T/b/sub/g" 300000
run_full 1 backup "$T/b" --tag b
errors_name "No space left on device"
errors_name "$T/fs1/repo"
ok "a backup into a full repository fails: $(grep -m1 'No space' "$T/err")"
check_clean "after the full backup"
run_pv 0 snapshots --json
[ "$(jq 'length' "$T/out")" = 1 ] && [ "$(jq -r '.[0].tags[0]' "$T/out")" = a ] ||
    fail "a snapshot was saved by the failed backup: $(jq -c '[.[].tags]' "$T/out")"
run_pv 0 restore latest --target "$T/ra" -q
tree_equal "$T/a" "$T/ra"
ok "the repository checks clean, holds no snapshot of the failed backup, and the earlier one restores"
free_space "$T/fs1"
run_pv 0 backup "$T/b" --tag b -q
check_clean "after the next backup"
run_pv 0 restore latest --tag b --target "$T/rb" -q
tree_equal "$T/b" "$T/rb"
ok "after space is freed the backup succeeds and restores byte for byte"

# ---- a restore target fills up ------------------------------------------------------------------
small_fs "$T/fs2" 2m
run_full 1 restore latest --tag b --target "$T/fs2/t"
errors_name "No space left on device"
errors_name "$T/fs2/t"
ok "a restore into a full disk fails: $(grep -m1 'No space' "$T/err")"
left=0
while IFS= read -r -d '' f; do
    rel=${f#"$T/fs2/t/"}
    cmp -s "$f" "$T/b/$rel" || fail "a partly restored file was left: $rel ($(stat -c %s "$f") of $(stat -c %s "$T/b/$rel") bytes)"
    left=$((left + 1))
done < <(find "$T/fs2/t" -type f -print0)
ok "every file left in the full target ($left) is the original, byte for byte"
free_space "$T/fs2"
run_pv 0 restore latest --tag b --target "$T/fs2/t" -q
tree_equal "$T/b" "$T/fs2/t" --no-atime # cmp above read the originals
ok "after space is freed the restore into the same target succeeds, byte for byte"
