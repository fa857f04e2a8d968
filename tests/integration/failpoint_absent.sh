#!/bin/bash
# failpoint_absent.sh - the failpoint layer is a test build's alone. In a normal build the
# program holds none of its code (no fp_start, no fp_* symbol, no "PV_FAILPOINT" string), and a
# backup run with PV_FAILPOINT=crash:1 in its environment is an ordinary backup. In a failpoint
# build (-DPV_FAILPOINTS=ON) the opposite holds: the variable is read, a bad value is a usage
# error, and crash:1 stops the program before its first write.
. "$(dirname "$0")/lib.sh" || exit 1
: "${T:?lib.sh did not set the work directory}"

run_pv 0 init --kdf-passes 1 --kdf-memory 8K
mkdir -p "$T/src"
echo data >"$T/src/f"
if PV_FAILPOINT=count "$PODVAULT" version 2>&1 >/dev/null | grep -q '^podvault failpoints:'; then
    PV_FAILPOINT=bogus run_pv 2 backup "$T/src"
    one_line_error "PV_FAILPOINT"
    PV_FAILPOINT=crash:1 run_pv 86 backup "$T/src"
    grep -q '^podvault failpoints: crash at operation 1 ' "$T/err" || fail "no crash report: $(cat "$T/err")"
    ok "failpoint build: PV_FAILPOINT is read, checked, and crashes at the first operation"
    exit 0
fi
if command -v nm >/dev/null; then
    nm "$PODVAULT" >"$T/syms" 2>/dev/null || fail "nm cannot read $PODVAULT"
    if grep -E ' [TtDdBb] fp_' "$T/syms"; then fail "the failpoint layer is in a normal build"; fi
fi
if grep -q PV_FAILPOINT "$PODVAULT"; then fail "the program names PV_FAILPOINT in a normal build"; fi
for v in crash:1 powerloss:1 enospc:1 eio:1 count bogus; do
    PV_FAILPOINT=$v run_pv 0 backup "$T/src" -q
    if grep -q failpoint "$T/err"; then fail "PV_FAILPOINT=$v reached a normal build: $(cat "$T/err")"; fi
done
run_pv 0 snapshots --json
[ "$(jq length "$T/out")" = 6 ] || fail "expected 6 snapshots, got $(jq length "$T/out")"
ok "normal build: no failpoint code, and PV_FAILPOINT changes nothing"
