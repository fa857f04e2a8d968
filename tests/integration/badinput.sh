#!/bin/bash
# badinput.sh - what a user sees when things are wrong: a wrong password, a location that holds
# no repository, truncated or tampered packs, index files, snapshots, config and key files, and a
# full disk. Each must give a clear error naming the object at fault, a non-zero exit, never a
# crash, and leave the repository usable.
. "$(dirname "$0")/lib.sh" || exit 1
: "${T:?lib.sh did not set the work directory}"
need jq

S=$T/src
mkdir -p "$S/d"
rand_file "$S/d/r" $((5 * 1024 * 1024))
text_file "$S/t" 200000
echo hello >"$S/d/h"
run_pv 0 init
run_pv 0 backup "$S"
cp -a "$REPO" "$T/pristine"

# Puts the pristine repository back, with an empty cache so nothing hides a tampered object.
fresh() {
    rm -rf -- "${REPO:?}" "${PODVAULT_CACHE_DIR:?}"
    cp -a "$T/pristine" "$REPO"
}
flip_byte() { # FILE OFFSET: inverts one byte in place
    local v
    v=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
    printf "\\x$(printf %02x $((v ^ 255)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}
size_of() { stat -c %s "$1"; }
name_of() { basename "$1"; }
first_file() { find "$REPO/$1" -type f | LC_ALL=C sort | head -n 1; }
biggest_pack() { find "$REPO/data" -type f -printf '%s %p\n' | sort -n | tail -n 1 | cut -d' ' -f2; }

# run_any ARGS...: runs podvault, keeps the exit code in $rc; fails on a crash.
run_any() {
    "$PODVAULT" -r "$REPO" --password-file "$PW" "$@" >"$T/out" 2>"$T/err"
    rc=$?
    no_crash "$rc"
}

# ---- passwords and locations ------------------------------------------------------------------
echo "not the password" >"$T/wrong"
run_raw 12 -r "$REPO" --password-file "$T/wrong" snapshots
one_line_error password
PODVAULT_PASSWORD="also wrong" run_raw 12 -r "$REPO" snapshots
one_line_error
ok "wrong password: exit 12, one line"

mkdir "$T/empty"
run_raw 10 -r "$T/empty" --password-file "$PW" snapshots
one_line_error "$T/empty"
run_raw 10 -r "$T/nowhere" --password-file "$PW" snapshots
one_line_error "$T/nowhere"
ok "not a repository: exit 10, one line naming the location"

run_pv 1 init
one_line_error
ok "init over an existing repository fails with one line"

if command -v setsid >/dev/null; then
    setsid -w "$PODVAULT" -r "$REPO" snapshots </dev/null >"$T/out" 2>"$T/err"
    rc=$?
    [ "$rc" = 1 ] || fail "no password and no terminal: exit $rc, expected 1"
    one_line_error PODVAULT_PASSWORD
    ok "no password and no terminal: exit 1 saying how to give one"
fi

# ---- tampered objects -------------------------------------------------------------------------
# Config: nothing can be trusted without it.
fresh
flip_byte "$REPO/config" $(( $(size_of "$REPO/config") / 2 ))
run_any snapshots
[ "$rc" != 0 ] && [ "$rc" != 12 ] || fail "tampered config: exit $rc (0 or 'wrong password' is wrong)"
one_line_error config
ok "tampered config: exit $rc, $(cat "$T/err")"

# Key file: either no key opens (wrong password) or the file is reported malformed.
fresh
key=$(first_file keys)
flip_byte "$key" $(( $(size_of "$key") / 2 ))
run_any snapshots
[ "$rc" != 0 ] || fail "tampered key file accepted"
one_line_error
ok "tampered key file: exit $rc, $(cat "$T/err")"

# Snapshot.
fresh
snap=$(first_file snapshots)
flip_byte "$snap" $(( $(size_of "$snap") / 2 ))
run_any snapshots
[ "$rc" != 0 ] || fail "tampered snapshot listed without error"
one_line_error "$(name_of "$snap" | cut -c1-8)"
ok "tampered snapshot: $(cat "$T/err")"

# Index file.
fresh
index=$(first_file index)
flip_byte "$index" $(( $(size_of "$index") / 2 ))
run_any ls latest
[ "$rc" != 0 ] || fail "tampered index accepted"
one_line_error "$(name_of "$index" | cut -c1-8)"
ok "tampered index: $(cat "$T/err")"

# Pack: a flipped byte in a blob, then a flipped byte in the header, then a truncated pack.
# Restoring must fail naming the pack (or the blob), and never write wrong data silently.
fresh
pack=$(biggest_pack)
pid=$(name_of "$pack")
run_pv 0 cat pack "$pid"
blobs=$(jq -r '.blobs[].id[0:8]' "$T/out" | paste -sd'|')
flip_byte "$pack" 100
run_any restore latest --target "$T/r1"
[ "$rc" != 0 ] || fail "restore from a tampered pack succeeded"
grep -Eqi "${pid:0:8}|$blobs" "$T/err" || fail "errors name neither the pack nor its blobs: $(head -n 3 "$T/err")"
if grep -qv '^podvault: ' "$T/err"; then fail "stderr holds lines not starting 'podvault: '"; fi
# A file whose blob failed is removed, never left to pass for the original.
if [ -f "$T/r1/d/r" ] && ! cmp -s "$T/r1/d/r" "$S/d/r"; then fail "d/r left partly restored"; fi
grep -q "could not be restored whole" "$T/err" || fail "no report of the removed file: $(head -n 3 "$T/err")"
ok "tampered blob in a pack: exit $rc, $(head -n 1 "$T/err")"

fresh
flip_byte "$pack" $(( $(size_of "$pack") - 20 ))
run_any cat pack "$pid"
[ "$rc" != 0 ] || fail "tampered pack header accepted"
one_line_error "${pid:0:8}"
ok "tampered pack header: $(cat "$T/err")"
# The index locates blobs, so a restore does not need the header: it must still be correct.
run_pv 0 restore latest --target "$T/r2"
tree_equal "$S" "$T/r2" --no-atime
ok "restore beside a tampered pack header is whole"

fresh
truncate -s $(( $(size_of "$pack") / 2 )) "$pack"
run_any restore latest --target "$T/r3"
[ "$rc" != 0 ] || fail "restore from a truncated pack succeeded"
grep -Eqi "${pid:0:8}|$blobs" "$T/err" || fail "errors name neither the pack nor its blobs: $(head -n 3 "$T/err")"
run_any cat pack "$pid"
[ "$rc" != 0 ] || fail "truncated pack header accepted"
one_line_error "${pid:0:8}"
ok "truncated pack: $(cat "$T/err")"

# The untouched repository still works after all this.
fresh
run_pv 0 restore latest --target "$T/good"
tree_equal "$S" "$T/good" --no-atime
ok "pristine copy restores"

# ---- full disk --------------------------------------------------------------------------------
if [ "$(id -u)" != 0 ]; then
    echo "SKIP [$TEST_NAME]: full-disk test needs root (to mount a small tmpfs)"
    exit 0
fi
mkdir -p "$T/small"
if ! mount -t tmpfs -o size=24m pv-full "$T/small" 2>"$T/err"; then
    echo "SKIP [$TEST_NAME]: full-disk test: cannot mount a tmpfs ($(cat "$T/err"))"
    exit 0
fi
PV_CLEANUP+=("umount '$T/small'")
REPO=$T/small/repo
run_pv 0 init
run_pv 0 backup "$S/d"
mkdir -p "$T/fill"
rand_file "$T/fill/big" $((64 * 1024 * 1024))
run_any backup "$T/fill"
[ "$rc" = 1 ] || fail "backup onto a full disk: exit $rc, expected 1"
one_line_error "space"
ok "full disk: exit 1, $(cat "$T/err")"
# The repository still opens, lists, restores, and every pack it holds is whole.
run_pv 0 --json snapshots
[ "$(jq length "$T/out")" = 1 ] || fail "full disk: expected the one earlier snapshot"
run_pv 0 restore latest --target "$T/after-full"
tree_equal "$S/d" "$T/after-full" --no-atime
for p in $(find "$REPO/data" -type f); do
    run_pv 0 cat pack "$(basename "$p")"
done
ok "after the full disk the repository opens, restores, and every pack is whole"
rm -f "$T/fill/big"
