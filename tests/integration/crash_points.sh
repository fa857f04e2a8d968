#!/bin/bash
# crash_points.sh - every write point crashed on purpose (needs a build with -DPV_FAILPOINTS=ON;
# in any other build it is skipped with exit code 77).
#
# For backup, incremental backup, forget, forget --prune, prune, repair index and maintain, it
# counts the operations (write, fsync, create, rename, link, unlink, mkdir) of one run on a small
# prepared repository (N_total), then for N in 1..N_total runs the command again on a fresh copy of that
# repository, stopped at operation N, twice: a plain crash (PV_FAILPOINT=crash:N) and a power
# loss (powerloss:N: what was not fsynced is undone first). After each stop:
#   - `check` reports no error (unreferenced data is only a warning);
#   - every snapshot restores byte for byte (pv_treecmp against a copy of what it saved), and
#     every snapshot saved before the command is still there (forget may have removed the one
#     it forgets);
#   - the same command run again succeeds, and `check` is still clean.
# The modes enospc and eio fail operation N instead (enospc:N: that operation and every later
# one that needs space fail with ENOSPC, a disk that filled up; eio:N: that operation alone
# fails with EIO). The command must then either succeed (the operation was one it may lose,
# such as a cache write) or exit 1 with "podvault: " lines of which one names the cause and a
# path; the same promises then hold.
# Env: PV_CRASH_MAX per command and mode (default 8, spread evenly over 1..N_total, the middle
# one when 1; 0 = all of them, the long setting), PV_CRASH_ERR_MAX the same for enospc and eio
# (default PV_CRASH_MAX), PV_CRASH_CMDS (default: all seven), PV_CRASH_MODES (default
# crash powerloss enospc eio).
. "$(dirname "$0")/lib.sh" || exit 1
: "${T:?lib.sh did not set the work directory}"
need jq

if ! PV_FAILPOINT=count "$PODVAULT" version 2>&1 >/dev/null | grep -q '^podvault failpoints:'; then
    echo "skip [$TEST_NAME]: $PODVAULT is not a failpoint build (cmake -DPV_FAILPOINTS=ON)"
    exit 77
fi
TREECMP=$PV_BUILD_DIR/pv_treecmp
[ -x "$TREECMP" ] || fail "pv_treecmp not built"
MAX=${PV_CRASH_MAX:-8}
ERR_MAX=${PV_CRASH_ERR_MAX:-$MAX}
[[ "$MAX" =~ ^[0-9]+$ && "$ERR_MAX" =~ ^[0-9]+$ ]] || fail "PV_CRASH_MAX and PV_CRASH_ERR_MAX must be numbers"
CMDS=${PV_CRASH_CMDS:-backup incremental forget forget-prune prune repair maintain}
MODES=${PV_CRASH_MODES:-crash powerloss enospc eio}
for mode in $MODES; do
    case $mode in crash | powerloss | enospc | eio) ;; *) fail "PV_CRASH_MODES: unknown mode '$mode'" ;; esac
done

# ---- the prepared repositories -------------------------------------------------------------------
# Sources live at fixed paths (snapshots record them); $T/ver/<tag> keeps what each tag saved.
mkdir -p "$T/ver"
keep() { rm -rf -- "${T:?}/ver/${2:?}" && cp -a "$1" "$T/ver/$2"; }
bk() { # DIR TAG: backs DIR up with tag TAG into $REPO
    run_pv 0 backup "$1" --tag "$2" -q
    keep "$1" "$2"
}
run_pv 0 init --chunk-min 16384 --chunk-avg 65536 --chunk-max 262144 --pack-size 1048576 \
    --kdf-passes 1 --kdf-memory 8K
S=$T/src
mkdir -p "$S/d" "$T/src2" "$T/src3/e"
for i in 1 2 3; do rand_file "$S/f$i" 150000; done
echo small >"$S/d/small"
: >"$S/empty"
ln -s f1 "$S/link"
bk "$S" v1
rand_file "$S/f2" 120000
rand_file "$S/d/f4" 90000
bk "$S" v2
rand_file "$T/src2/w" 200000
bk "$T/src2" w1
cp -a "$REPO" "$T/base"                 # snapshots v1, v2, w1
run_pv 0 forget --keep-last 1 -q       # v1 goes
run_pv 0 forget "$(pv snapshots --json | jq -r '.[] | select(.tags[0] == "w1") | .id')" -q
cp -a "$REPO" "$T/base-forgotten"       # v2 only, with the data of v1 and w1 unused
# What the backups below save (the sources stay as they are from here on).
rand_file "$T/src3/x" 180000
echo x3 >"$T/src3/e/y"
keep "$T/src3" x1
cp -a "$S" "$T/v3"
rand_file "$T/v3/f3" 150000
rm "$T/v3/f1"
keep "$T/v3" v3

# cmd_args NAME: the command line; cmd_base NAME: its prepared repository; cmd_must NAME: the
# tags whose snapshots must survive any crash of it.
cmd_args() {
    case $1 in
    backup) echo "backup $T/src3 --tag x1 -q" ;;
    incremental) echo "backup $S --tag v3 -q" ;;
    forget) echo "forget --keep-last 1 -q" ;;
    forget-prune) echo "forget --keep-last 1 --prune -q" ;;
    prune) echo "prune -q" ;;
    repair) echo "repair index -q" ;;
    maintain) echo "maintain --full --force -q" ;;
    esac
}
cmd_base() {
    case $1 in
    prune | maintain) echo "$T/base-forgotten" ;;
    *) echo "$T/base" ;;
    esac
}
cmd_must() {
    case $1 in
    prune | maintain) echo v2 ;;
    forget | forget-prune) echo v2 w1 ;;
    *) echo v1 v2 w1 ;;
    esac
}
# The incremental backup reads $S as v3; everything else finds it as v2.
src_for() { rm -rf -- "${S:?}" && cp -a "$T/ver/$([ "$1" = incremental ] && echo v3 || echo v2)" "$S"; }

W=$T/work
# prepare NAME: a fresh copy of its repository in $W.
prepare() { rm -rf -- "${W:?}" && cp -a "$(cmd_base "$1")" "$W"; }
wpv() { "$PODVAULT" -r "$W" --password-file "$PW" "$@"; }

# verify NAME WHAT: the promises after a stop; prints why and returns 1 when one is broken.
verify() {
    local name=$1 what=$2 tag id
    wpv --json check >"$T/check" 2>&1 || { echo "$what: check failed:"; grep -v '"warning"' "$T/check" | head -n 5; return 1; }
    [ "$(tail -n 1 "$T/check" | jq -r .errors)" = 0 ] || { echo "$what: check found errors"; return 1; }
    wpv snapshots --json >"$T/snaps" 2>"$T/snaps.err" || { echo "$what: snapshots failed: $(cat "$T/snaps.err")"; return 1; }
    for tag in $(cmd_must "$name"); do
        jq -e --arg t "$tag" 'any(.[]; .tags[0] == $t)' "$T/snaps" >/dev/null || { echo "$what: snapshot $tag is gone"; return 1; }
    done
    while read -r id tag; do
        rm -rf -- "${T:?}/r"
        wpv restore "$id" --target "$T/r" -q >"$T/rout" 2>&1 || { echo "$what: restore of $tag ($id) failed: $(head -n 3 "$T/rout")"; return 1; }
        "$TREECMP" "$T/ver/$tag" "$T/r" --no-root --no-atime >"$T/rout" 2>&1 || { echo "$what: $tag restores differently: $(head -n 3 "$T/rout")"; return 1; }
    done < <(jq -r '.[] | "\(.id) \(.tags[0])"' "$T/snaps")
}

# stopped_well MODE RC ERRFILE: the command stopped by MODE with exit code RC as it must; prints
# why and returns 1 when it did not.
stopped_well() {
    local mode=$1 rc=$2 errf=$3 cause
    case $mode in
    crash | powerloss)
        [ "$rc" = 86 ] || [ "$rc" = 0 ] || { echo "exited $rc: $(grep -v failpoints "$errf" | head -n 3)"; return 1; }
        return 0
        ;;
    enospc) cause='No space left on device' ;;
    eio) cause='Input/output error' ;;
    esac
    [ "$rc" = 0 ] && return 0
    [ "$rc" = 1 ] || { echo "exited $rc, expected 1: $(grep -v failpoints "$errf" | head -n 3)"; return 1; }
    if grep -v '^podvault failpoints:' "$errf" | grep -qv '^podvault: '; then
        echo "stderr has lines not starting 'podvault: ': $(head -n 3 "$errf")"
        return 1
    fi
    grep -F -- "$cause" "$errf" | grep -q '/' || { echo "no error names the cause ($cause) and a path: $(head -n 3 "$errf")"; return 1; }
}

# points TOTAL MAX: the crash points to run, all of them or MAX spread evenly (the middle one
# when MAX is 1).
points() {
    local total=$1 max=$2 i
    if [ "$max" = 0 ] || [ "$max" -ge "$total" ]; then
        seq 1 "$total"
    elif [ "$max" = 1 ]; then
        echo $(((total + 1) / 2))
    else
        for ((i = 0; i < max; i++)); do echo $((1 + i * (total - 1) / (max - 1))); done | uniq
    fi
}

RUNS=0
FAILS=0
REPORT=()
for name in $CMDS; do
    # shellcheck disable=SC2046
    read -ra args <<<"$(cmd_args "$name")"
    src_for "$name"
    prepare "$name"
    PV_FAILPOINT=count wpv "${args[@]}" >/dev/null 2>"$T/count" || { cat "$T/count"; fail "$name: the counting run failed"; }
    total=$(sed -n 's/^podvault failpoints: \([0-9]*\) operations$/\1/p' "$T/count")
    [ -n "$total" ] && [ "$total" -gt 0 ] || fail "$name: no operation count"
    line="$name: $total crash points"
    for mode in $MODES; do
        runs=0 fails=0 errs=0
        case $mode in enospc | eio) max=$ERR_MAX ;; *) max=$MAX ;; esac
        for n in $(points "$total" "$max"); do
            prepare "$name"
            runs=$((runs + 1))
            PV_FAILPOINT=$mode:$n wpv "${args[@]}" >/dev/null 2>"$T/crash"
            rc=$?
            what="$name $mode:$n"
            why=$(stopped_well "$mode" "$rc" "$T/crash") || { echo "$what: $why"; fails=$((fails + 1)); continue; }
            [ "$rc" = 1 ] && errs=$((errs + 1))
            verify "$name" "$what after the stop" || { fails=$((fails + 1)); continue; }
            wpv "${args[@]}" >"$T/again" 2>&1 || { echo "$what: the next run failed: $(head -n 3 "$T/again")"; fails=$((fails + 1)); continue; }
            verify "$name" "$what after the next run" || fails=$((fails + 1))
        done
        line="$line; $mode: $runs runs, $fails failures"
        case $mode in enospc | eio) line="$line ($errs stopped with the error)" ;; esac
        RUNS=$((RUNS + runs))
        FAILS=$((FAILS + fails))
    done
    REPORT+=("$line")
    echo "$line"
done
echo "crash points: $RUNS runs, $FAILS failures (PV_CRASH_MAX=$MAX, PV_CRASH_ERR_MAX=$ERR_MAX)"
for l in "${REPORT[@]}"; do echo "  $l"; done
[ "$FAILS" = 0 ] || fail "$FAILS of $RUNS crash runs broke a promise"
ok "every crash point kept the repository consistent ($RUNS runs)"
