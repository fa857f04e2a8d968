#!/bin/bash
# run-tests.sh - the second set-up command, and what CI runs (.ci/run): installs what the tests
# need (Debian 12, apt-get when root), then
#   1. builds normally (build/) and runs every test with ctest (unit + integration),
#   2. builds with AddressSanitizer + UBSan (build-asan/) and runs ctest again,
#   3. runs the unit tests under valgrind (errors and leaks fail; tests/valgrind.supp holds the
#      one false report that the release build's _FORTIFY_SOURCE causes),
#   4. builds the libFuzzer targets with clang (build-fuzz/) and runs each briefly from its seeds,
#   5. runs the S3 tests against a local Ceph RGW when tests/s3-env.sh exists and RGW starts,
#   6. runs the Azure Blob Storage tests against Azurite (node and npm from apt when missing),
#   7. builds with the failpoint layer (build-fp/) and crashes every command at its write points
#      and fails them with ENOSPC/EIO (a bounded, evenly spread subset: PV_CRASH_MAX=2 per command
#      for crash and power loss, PV_CRASH_ERR_MAX=1 for ENOSPC and EIO; about 3 minutes).
# Every step runs even when an earlier one failed; the summary at the end lists them all, and the
# exit code is non-zero if any failed. Env: PV_FUZZ_SECONDS (per target, default 20),
# PV_SKIP_S3=1, PV_SKIP_AZURE=1, PV_JOBS (default 2).
set -uo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
JOBS=${PV_JOBS:-2}
FUZZ_SECONDS=${PV_FUZZ_SECONDS:-20}
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/podvault-tests.XXXXXX")
T_START=$(date +%s)
SUMMARY=()
FAILED=0

say() { printf '\n==== %s\n' "$*"; }
# step NAME COMMAND...: runs a step, shows its output, records pass/fail and time.
step() {
    local name=$1 t0 rc
    shift
    say "$name"
    t0=$(date +%s)
    "$@"
    rc=$?
    if [ $rc = 0 ]; then
        SUMMARY+=("PASS  $(printf '%-42s' "$name") $(( $(date +%s) - t0 ))s")
    else
        SUMMARY+=("FAIL  $(printf '%-42s' "$name") $(( $(date +%s) - t0 ))s (exit $rc)")
        FAILED=$((FAILED + 1))
    fi
    return $rc
}
skip() { SUMMARY+=("SKIP  $(printf '%-42s' "$1") $2"); say "$1: SKIPPED ($2)"; }

# ---- what the tests need -----------------------------------------------------------------------
PACKAGES=(build-essential cmake pkg-config libcurl4-openssl-dev libssl-dev libsodium-dev libzstd-dev
          libxxhash-dev libjansson-dev libuv1-dev libexpat1-dev libyaml-dev libcmocka-dev
          attr acl clang libclang-rt-14-dev valgrind jq util-linux curl iproute2 python3 openssl)
install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} = 0 ] && { echo "all needed packages are installed"; return 0; }
    if [ "$(id -u)" != 0 ]; then
        echo "missing Debian packages: ${missing[*]} (run as root to install them)" >&2
        return 1
    fi
    echo "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
step "install packages" install_packages || { echo "cannot go on without the packages"; exit 1; }

# ---- builds ------------------------------------------------------------------------------------
build() { # DIR CMAKE-ARGS...
    local dir=$1
    shift
    cmake -S . -B "$dir" "$@" >"$LOGS/cmake-$dir.log" 2>&1 || { cat "$LOGS/cmake-$dir.log"; return 1; }
    cmake --build "$dir" -j"$JOBS" >"$LOGS/build-$dir.log" 2>&1 || {
        grep -E 'error|Error' -A3 "$LOGS/build-$dir.log" | head -n 60
        return 1
    }
    echo "built $dir"
}

run_ctest() { # DIR [ENV...]
    local dir=$1
    shift
    (cd "$dir" && env "$@" ctest -j"$JOBS" --output-on-failure --timeout 1200)
}

step "build (RelWithDebInfo)" build build -DCMAKE_BUILD_TYPE=RelWithDebInfo
BUILD_OK=$?
if [ $BUILD_OK = 0 ]; then
    step "ctest (normal build)" run_ctest build
fi

step "build (ASan + UBSan)" build build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPV_SANITIZE=ON
if [ $? = 0 ]; then
    step "ctest (ASan + UBSan)" run_ctest build-asan \
        ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 PV_BIG_MB=120 PV_INCR_MB=200
fi

# ---- valgrind over the unit tests --------------------------------------------------------------
valgrind_one() { # TEST: leaves "exit-code seconds" in $LOGS/valgrind-NAME.rc
    local name t0
    name=$(basename "$1")
    t0=$(date +%s)
    PV_SOURCE_DIR=$ROOT PV_BUILD_DIR=$ROOT/build timeout 1200 valgrind -q --error-exitcode=1 \
        --suppressions="$ROOT/tests/valgrind.supp" --leak-check=full --errors-for-leak-kinds=definite,indirect \
        --show-leak-kinds=definite,indirect "$1" >"$LOGS/valgrind-$name.log" 2>&1
    echo "$? $(( $(date +%s) - t0 ))" >"$LOGS/valgrind-$name.rc"
}
valgrind_units() {
    local t rc=0 name code secs
    local tests=(build/test_*)
    [ -e "${tests[0]}" ] || { echo "no unit tests built"; return 1; }
    for t in "${tests[@]}"; do
        [ -x "$t" ] || continue
        valgrind_one "$t" &
        while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
    done
    wait
    for t in "${tests[@]}"; do
        name=$(basename "$t")
        read -r code secs <"$LOGS/valgrind-$name.rc" || code=missing
        if [ "$code" = 0 ]; then
            echo "ok   $name (${secs}s)"
        else
            echo "FAIL $name (exit $code after ${secs:-?}s; log below)"
            grep -E '^==[0-9]+==' "$LOGS/valgrind-$name.log" | head -n 40
            tail -n 5 "$LOGS/valgrind-$name.log"
            rc=1
        fi
    done
    return $rc
}
if [ $BUILD_OK = 0 ]; then
    step "valgrind (unit tests)" valgrind_units
fi

# ---- failpoints: every write point crashed, power loss, full disks -------------------------------
# A third build with the failpoint layer (-DPV_FAILPOINTS=ON, base/failpoint.h) runs the tests
# that need it: crash_points (PV_CRASH_MAX points per command for crash and power loss,
# PV_CRASH_ERR_MAX for ENOSPC and EIO; 0 = all of them, the long setting of README
# "Reliability"), disk_full through the ENOSPC failpoint (the normal build
# runs it on tmpfs), the layer's unit test and its absence check.
failpoint_tests() {
    (cd build-fp && env PV_DISK_FULL_HOW=failpoint PV_CRASH_MAX="${PV_CRASH_MAX:-2}" \
        PV_CRASH_ERR_MAX="${PV_CRASH_ERR_MAX:-1}" ctest -j"$JOBS" --output-on-failure --timeout 1200 \
        -R '^(test_failpoint|it_crash_points|it_disk_full|it_failpoint_absent)$')
}
step "build (failpoints)" build build-fp -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPV_FAILPOINTS=ON
if [ $? = 0 ]; then
    step "crash points, power loss, full disks" failpoint_tests
fi

# ---- fuzzers -----------------------------------------------------------------------------------
fuzz_one() { # TARGET: runs it from its seeds; leaves its exit code in $LOGS/NAME.rc
    local f=$1 name seeds corpus
    name=$(basename "$f")
    corpus=$LOGS/corpus-$name
    mkdir -p "$corpus"
    for seeds in "tests/fuzz/corpus/$name" "tests/fuzz/corpus/${name#fuzz_}" "tests/fuzz/seeds/$name"; do
        [ -d "$seeds" ] && cp -r "$seeds"/. "$corpus"/
    done
    "$f" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$LOGS/$name-" "$corpus" >"$LOGS/$name.log" 2>&1
    echo $? >"$LOGS/$name.rc"
}
fuzz_all() {
    local f name rc=0
    local targets=(build-fuzz/fuzz_*)
    [ -e "${targets[0]}" ] || { echo "no fuzz targets"; return 0; }
    for f in "${targets[@]}"; do
        [ -x "$f" ] || continue
        fuzz_one "$f" &
        while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
    done
    wait
    for f in "${targets[@]}"; do
        name=$(basename "$f")
        if [ "$(cat "$LOGS/$name.rc" 2>/dev/null)" = 0 ]; then
            echo "ok   $name: $(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$LOGS/$name.log" | grep -Eo '[0-9]+$') runs in ${FUZZ_SECONDS}s"
        else
            echo "FAIL $name"
            grep -E 'ERROR|SUMMARY|==[0-9]+==' "$LOGS/$name.log" | head -n 20
            ls "$LOGS/$name-"* 2>/dev/null
            rc=1
        fi
    done
    return $rc
}
step "build (libFuzzer, clang)" build build-fuzz -DCMAKE_C_COMPILER=clang -DPV_FUZZ=ON -DPV_SANITIZE=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo
if [ $? = 0 ]; then
    step "fuzz (${FUZZ_SECONDS}s per target)" fuzz_all
fi

# ---- S3 against a local Ceph RGW ----------------------------------------------------------------
s3_tests() {
    # tests/s3-env.sh starts RGW on 127.0.0.1 (installing Ceph the first time) and exports what
    # the S3 tests read (PV_TEST_S3, AWS_*); it returns non-zero when the server cannot run here.
    # Then the backend conformance suite and the command-line S3 tests (it_s3, it_s3_faults,
    # it_s3_throttle, and it_interrupted's S3 half) run again, against it (without PV_TEST_S3, in the other steps, they say SKIPPED), and the
    # agent's end-to-end and deleted-backup tests run with their location in that bucket.
    # shellcheck disable=SC1091
    if ! source tests/s3-env.sh >"$LOGS/s3-env.log" 2>&1; then
        tail -n 20 "$LOGS/s3-env.log"
        return 2
    fi
    echo "S3 at $PV_TEST_S3"
    (cd build && ctest -j1 --output-on-failure --timeout 1200 -R '^(test_backend|it_s3.*|it_agent_e2e|it_agent_gc|it_interrupted|it_aws_identity|it_agent_identity)$')
}
# server_step NAME SKIP-VAR ENV-SCRIPT SERVER FUNC: a step against a server that the tests start
# (FUNC returns 2 when it cannot run here: then the step is skipped, not failed).
server_step() {
    local name=$1 skipvar=$2 script=$3 server=$4 fn=$5 t0 rc secs
    if [ "${!skipvar:-0}" = 1 ]; then
        skip "$name" "$skipvar=1"
    elif [ ! -f "$script" ]; then
        skip "$name" "$script is not in this tree"
    elif [ $BUILD_OK != 0 ]; then
        skip "$name" "the build failed"
    else
        say "$name"
        t0=$(date +%s)
        "$fn"
        rc=$?
        secs="$(( $(date +%s) - t0 ))s"
        if [ $rc = 2 ]; then
            skip "$name" "$server could not start here (see above)"
        elif [ $rc = 0 ]; then
            SUMMARY+=("PASS  $(printf '%-42s' "$name") $secs")
        else
            SUMMARY+=("FAIL  $(printf '%-42s' "$name") $secs (exit $rc)")
            FAILED=$((FAILED + 1))
        fi
    fi
}
server_step "S3 tests (Ceph RGW)" PV_SKIP_S3 tests/s3-env.sh RGW s3_tests

# ---- Azure Blob Storage against Azurite -------------------------------------------------------
azure_tests() {
    # Azurite is an npm package (pinned in tests/azure); Debian 12's nodejs (18) runs it. Without
    # node or npm, and as root, they come from apt. tests/azure-env.sh installs Azurite (npm ci),
    # starts it on 127.0.0.1 and exports PV_TEST_AZURE and AZURE_STORAGE_CONNECTION_STRING; then
    # the backend conformance suite (its Azure part), the command-line test it_azure, and the
    # agent's end-to-end test with an azure BackupStorageLocation on Azurite run.
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        if [ "$(id -u)" != 0 ]; then
            echo "node and npm are not installed (run as root to install them)"
            return 2
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm \
            >"$LOGS/azure-apt.log" 2>&1 || { tail -n 20 "$LOGS/azure-apt.log"; return 2; }
    fi
    # shellcheck disable=SC1091
    if ! source tests/azure-env.sh >"$LOGS/azure-env.log" 2>&1; then
        tail -n 20 "$LOGS/azure-env.log"
        return 2
    fi
    echo "Azure at $PV_TEST_AZURE"
    # Without the S3 step's variables: only the Azure part of test_backend runs again.
    (cd build && env -u PV_TEST_S3 ctest -j1 --output-on-failure --timeout 1200 -R '^(test_backend|it_azure|it_azure_entra|it_agent_e2e)$')
}
server_step "Azure tests (Azurite)" PV_SKIP_AZURE tests/azure-env.sh Azurite azure_tests

# ---- summary -----------------------------------------------------------------------------------
say "summary ($(( $(date +%s) - T_START ))s in all; logs in $LOGS)"
printf '%s\n' "${SUMMARY[@]}"
if [ $FAILED -gt 0 ]; then
    echo "$FAILED step(s) FAILED"
    exit 1
fi
echo "all steps passed"
