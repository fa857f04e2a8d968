#!/usr/bin/env bash
# hostile_restore.sh - `podvault restore` of hostile snapshots (crafted by pv_hostile) refuses each
# attack, reports it, goes on with the rest, and writes nothing outside its target.
#
# Needs $PODVAULT (the CLI) and the tools pv_hostile and pv_treecmp from $PV_BUILD_DIR (default:
# the directory of $PODVAULT). A control round trip first shows that restore works at all, so
# that the refusals below mean something.
set -euo pipefail

: "${PODVAULT:?set PODVAULT to the podvault binary}"
BUILD=${PV_BUILD_DIR:-$(dirname "$PODVAULT")}
HOSTILE=$BUILD/pv_hostile
TREECMP=$BUILD/pv_treecmp
for t in "$PODVAULT" "$HOSTILE" "$TREECMP"; do
    [ -x "$t" ] || { echo "hostile_restore: $t is not built" >&2; exit 1; }
done

W=$(mktemp -d "${TMPDIR:-/tmp}/pv_hostile_it.XXXXXX")
: "${W:?mktemp gave no work directory}"
trap 'rm -rf -- "${W:?}"' EXIT
export PODVAULT_REPOSITORY=$W/repo PODVAULT_PASSWORD=hostile-it PODVAULT_CACHE_DIR=$W/cache
OUT=$W/outside
mkdir "$OUT" "$W/targets"
echo sentinel >"$OUT/keep"
failures=0

fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}

# Nothing may appear in the sentinel directory, and its file must stay as it was.
check_outside() {
    local extra
    extra=$(find "$OUT" -mindepth 1 ! -name keep -print)
    [ -z "$extra" ] || fail "$1: written outside the target: $extra"
    [ "$(cat "$OUT/keep")" = sentinel ] || fail "$1: the sentinel file changed"
}

# restore NAME TARGET ID: runs the CLI with --json; sets rc and leaves its output in $W/NAME.*
restore() {
    rc=0
    "$PODVAULT" --json restore "$3" --target "$2" >"$W/$1.json" 2>"$W/$1.err" || rc=$?
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 1 ]; then
        fail "$1: exit code $rc (expected 0, or 1 for refused entries)"
        cat "$W/$1.err" >&2
    fi
}

# expect_error NAME TEXT: an error line of the --json output mentions TEXT.
expect_error() {
    grep '"message_type": *"error"' "$W/$1.json" | grep -qF -- "$2" ||
        { fail "$1: no error mentioning '$2'"; sed 's/^/    /' "$W/$1.json" "$W/$1.err" >&2; }
}

"$PODVAULT" init >/dev/null

# --- control: a tree with every kind of entry comes back identical ---
S=$W/src
mkdir -p "$S/d/e" "$S/empty"
printf 'hello\n' >"$S/f"
head -c 3000000 /dev/urandom >"$S/d/big"
ln "$S/f" "$S/d/e/hard"
ln -s ../f "$S/d/rel"
ln -s /etc/passwd "$S/abs"
mkfifo "$S/fifo"
chmod 4755 "$S/f"
chmod 1777 "$S/empty"
truncate -s 1G "$S/sparse"
printf 'x' | dd of="$S/sparse" bs=1 seek=500000000 conv=notrunc status=none
setfattr -n user.k -v v "$S/d" 2>/dev/null || true
touch -d '2001-02-03 04:05:06.123456789' "$S/f" "$S/d/big" "$S/d"
"$PODVAULT" backup "$S" --tag control >/dev/null 2>"$W/backup.err" ||
    { cat "$W/backup.err" >&2; fail "control backup"; }
restore control "$W/targets/control" latest
[ "$rc" -eq 0 ] || fail "control: restore exit code $rc"
"$TREECMP" "$S" "$W/targets/control" --no-root --no-atime ||
    fail "control: restored tree differs from the source"

# --- the attacks ---
"$HOSTILE" --outside "$OUT" >"$W/snapshots"
[ "$(wc -l <"$W/snapshots")" -ge 19 ] || fail "pv_hostile wrote only $(wc -l <"$W/snapshots") snapshots"
id_of() { awk -v n="$1" '$2 == n { print $1 }' "$W/snapshots"; }

# attack | an error that must be reported ("" when the restore must succeed cleanly)
while IFS='|' read -r name text; do
    id=$(id_of "$name")
    [ -n "$id" ] || { fail "$name: no snapshot"; continue; }
    T=$W/targets/$name
    restore "$name" "$T" "$id"
    if [ -n "$text" ]; then
        [ "$rc" -eq 1 ] || fail "$name: exit code $rc, expected 1 (entries refused)"
        expect_error "$name" "$text"
    elif [ "$rc" -ne 0 ]; then
        fail "$name: exit code $rc, expected 0"
    fi
    [ "$(cat "$T/ok" 2>/dev/null)" = pwned ] || fail "$name: the restore did not go on to 'ok'"
    check_outside "$name"
done <<EOF
dotdot|refused: name \\"..\\"
dot|refused: name \\".\\"
empty_name|refused: empty name
slash_in_name|refused: name contains '/'
absolute_name|refused: name contains '/'
nul_in_name|refused: name contains
symlink_then_dir|refused: the name occurs more than once
symlink_relative|refused: name contains '/'
duplicate_names|refused: the name occurs more than once
self_reference|not restored: tree
hardlink_to_refused|refused: hard link to an entry that was not restored
huge_size|refused: content longer than the largest possible file
bad_content|content not restored
deep|refused: directories nested too deeply
socket|
EOF

# Symlinks are content: restored verbatim, never followed.
[ "$(readlink "$W/targets/slash_in_name/a")" = "$OUT" ] || fail "slash_in_name: symlink a not restored verbatim"
[ ! -e "$W/targets/hardlink_to_refused/pv_link" ] || fail "hardlink_to_refused: pv_link was restored"
grep -qF 'socket not restored' "$W/socket.json" || fail "socket: no note that the socket was skipped"

# Device nodes: created only by root; otherwise refused.
restore device_node "$W/targets/device_node" "$(id_of device_node)"
if [ "$(id -u)" -eq 0 ]; then
    [ -c "$W/targets/device_node/pv_null" ] || fail "device_node: not created as root"
else
    expect_error device_node "device node not restored"
fi
check_outside device_node

# Two stages into one target: a symlink to the outside, then a directory and a file of that name.
T=$W/targets/stage
restore stage1 "$T" "$(id_of symlink_outside)"
[ "$rc" -eq 0 ] && [ -L "$T/link" ] || fail "stage 1: symlink not restored"
restore stage2 "$T" "$(id_of dir_through_symlink)"
expect_error stage2 "refused: a symlink or non-directory is in the way"
restore stage3 "$T" "$(id_of file_over_symlink)"
[ "$rc" -eq 0 ] && [ -f "$T/link" ] && [ ! -L "$T/link" ] || fail "stage 3: symlink not replaced by the file"
check_outside stages

# Nothing named pv_escaped* anywhere (the deep chain is skipped: it holds no payload).
escaped=$(find "$W" -path "$W/targets/deep/deep" -prune -o -name 'pv_escaped*' -print)
[ -z "$escaped" ] || fail "attack payloads written: $escaped"
[ ! -e "$(dirname "$W")/pv_escaped_dotdot" ] || fail "dotdot payload written beside the work dir"

if [ "$failures" -ne 0 ]; then
    echo "hostile_restore: $failures failure(s)" >&2
    exit 1
fi
echo "hostile_restore: every attack refused, nothing written outside the targets"
