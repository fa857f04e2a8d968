# lib.sh - helpers shared by the integration tests (sourced, not run; CTest runs only the other
# scripts of this folder because this one has no test body of its own).
#
# Each test gets: $PODVAULT (the binary, set by CTest), a private temp dir $T removed on exit,
# a repository path $REPO and a password file, and these helpers:
#   pv ARGS...             run podvault on $REPO with the test password
#   run_pv CODE ARGS...    run podvault, expect exit CODE; output in $T/out and $T/err
#   fail MSG / ok MSG      report; fail exits non-zero
#   one_line_error         the last stderr is exactly one line "podvault: ..."
#   tree_equal A B [OPT]   compare two trees: pv_treecmp when it was built (OPT passed on),
#                          content (diff -r), then type/mode/owner/size/mtime/link target
set -u
set -o pipefail

if [ -z "${PODVAULT:-}" ]; then
    PODVAULT=${PV_BUILD_DIR:-$(dirname "$0")/../../build}/podvault
fi
[ -x "$PODVAULT" ] || { echo "FAIL: podvault binary not found (set PODVAULT)"; exit 1; }
PODVAULT=$(readlink -f "$PODVAULT")
PV_BUILD_DIR=${PV_BUILD_DIR:-$(dirname "$PODVAULT")}
TEST_NAME=$(basename "$0" .sh)

# The work directory: every test removes things under it, so an empty or odd $T (a failed
# mktemp, a copy of a test run from elsewhere) must stop the test before anything is removed.
T=$(mktemp -d "${TMPDIR:-/tmp}/pv-$TEST_NAME.XXXXXX") || { echo "FAIL: mktemp failed"; exit 1; }
case $T in
/?*/pv-*) ;;
*) echo "FAIL: refusing the unsafe work directory '$T'"; exit 1 ;;
esac
PV_CLEANUP=()
cleanup() {
    local m
    for m in "${PV_CLEANUP[@]}"; do eval "$m" || true; done
    chmod -R u+rwx "$T" 2>/dev/null
    rm -rf -- "${T:?}"
}
trap cleanup EXIT

REPO=$T/repo
PW=$T/password
printf 'correct horse battery staple\n' >"$PW"
export PODVAULT_CACHE_DIR=$T/cache
unset PODVAULT_REPOSITORY PODVAULT_PASSWORD PODVAULT_PASSWORD_FILE PODVAULT_NEW_PASSWORD

fail() {
    echo "FAIL [$TEST_NAME]: $*"
    if [ -s "$T/err" ]; then echo "--- last stderr:"; head -n 20 "$T/err"; fi
    exit 1
}
ok() { echo "ok   [$TEST_NAME]: $*"; }
note() { echo "note [$TEST_NAME]: $*"; }

pv() { "$PODVAULT" -r "$REPO" --password-file "$PW" "$@"; }

# run_pv CODE ARGS...: runs podvault on $REPO, expects exit CODE, keeps stdout/stderr.
run_pv() {
    local want=$1 rc
    shift
    "$PODVAULT" -r "$REPO" --password-file "$PW" "$@" >"$T/out" 2>"$T/err"
    rc=$?
    [ "$rc" = "$want" ] || fail "podvault $* exited $rc, expected $want"
}

# run_raw CODE ARGS...: like run_pv without the implied repository and password.
run_raw() {
    local want=$1 rc
    shift
    "$PODVAULT" "$@" >"$T/out" 2>"$T/err"
    rc=$?
    [ "$rc" = "$want" ] || fail "podvault $* exited $rc, expected $want"
}

# The last command printed exactly one line on stderr, "podvault: ...", naming $1 if given.
one_line_error() {
    local n
    n=$(wc -l <"$T/err")
    [ "$n" = 1 ] || fail "expected one line on stderr, got $n"
    grep -q '^podvault: ' "$T/err" || fail "stderr does not start with 'podvault: '"
    if [ -n "${1:-}" ]; then grep -qi -- "$1" "$T/err" || fail "error does not name '$1'"; fi
}

# Every stderr line is "podvault: ..." and one of them names $1. The notes of a failpoint
# build's test layer ("podvault failpoints: ...") are not podvault's errors and are left out.
errors_name() {
    [ -s "$T/err" ] || fail "no error message"
    grep -v '^podvault failpoints: ' "$T/err" >"$T/err.own"
    if grep -qv '^podvault: ' "$T/err.own"; then fail "stderr has lines not starting 'podvault: '"; fi
    grep -qi -- "$1" "$T/err.own" || fail "no error names '$1'"
}

# A process killed by a signal (crash) exits above 128; 130 is our own "interrupted".
no_crash() {
    local rc=$1
    if [ "$rc" -gt 128 ] && [ "$rc" != 130 ]; then fail "podvault crashed (exit $rc)"; fi
}

need() { command -v "$1" >/dev/null || { echo "SKIP [$TEST_NAME]: $1 is not installed"; exit 0; }; }

json_get() { jq -r "$1" "$T/out"; }

# File generators. Sizes in bytes. Random data from a seeded stream so runs are alike.
rand_file() { head -c "$2" /dev/urandom >"$1"; }
text_file() { # compressible: numbered lines of words
    awk -v n="$2" 'BEGIN { s = 0; i = 0
        while (s < n) { l = sprintf("line %d: the quick brown fox jumps over the lazy dog %d\n", i, i % 97)
                        printf "%s", l; s += length(l); i++ } }' | head -c "$2" >"$1"
}

tree_listing() { # path|type|mode|owner|size (not for dirs)|mtime in ns|link target
    (cd "$1" && find . -mindepth 1 -printf '%P|%y|%m|%u:%g|%s|%T@|%l\n' | LC_ALL=C sort |
        awk -F'|' 'BEGIN { OFS = "|" } $2 == "d" { $5 = "-" } { print }')
}

# tree_equal A B [pv_treecmp options]: pv_treecmp runs first, because it compares atimes and
# the reads of diff and find would change them. The two top directories' own metadata is left
# out (a snapshot does not record the root's atime; tests check the rest themselves).
tree_equal() {
    local a=$1 b=$2
    shift 2
    if [ -x "$PV_BUILD_DIR/pv_treecmp" ]; then
        "$PV_BUILD_DIR/pv_treecmp" "$a" "$b" --no-root "$@" >"$T/diff" 2>&1 || { head -n 20 "$T/diff"; fail "pv_treecmp: $a and $b differ"; }
    fi
    diff -r --no-dereference "$a" "$b" >"$T/diff" 2>&1 || { head -n 20 "$T/diff"; fail "content differs: $a vs $b"; }
    tree_listing "$a" >"$T/list.a"
    tree_listing "$b" >"$T/list.b"
    diff "$T/list.a" "$T/list.b" >"$T/diff" || { head -n 20 "$T/diff"; fail "metadata differs: $a vs $b"; }
}

dir_bytes() { du -sb "$1" | cut -f1; }

# listening_port VAR FILE WHAT: waits (10 s at most) for the line "listening 127.0.0.1:PORT" in
# FILE, the output of a helper server started in the background, and sets VAR to PORT; fails
# naming WHAT and showing FILE when it does not come.
listening_port() {
    local _lp_port="" _lp_try
    for _lp_try in $(seq 1 100); do
        _lp_port=$(sed -n 's/^listening 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$2")
        [ -n "$_lp_port" ] && break
        sleep 0.1
    done
    [ -n "$_lp_port" ] || fail "$3 did not start: $(cat "$2")"
    printf -v "$1" '%s' "$_lp_port"
}
