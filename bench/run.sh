#!/bin/bash
# bench/run.sh - podvault against restic on the same data in the same run: first backup,
# unchanged re-backup and restore (seconds and MB/s), peak RSS, repository size; then the
# chunker's and the index's own figures (chunkbench, idxmem) when they are built.
# Not part of the tests. Needs build/podvault (./setup.sh) and restic (installed when root).
#
# Env: BENCH_DIR (work dir, default a new one under /var/tmp; needs ~3x the data size free)
#      BENCH_SMALL_FILES (default 50000; sizes 1..16 KiB), BENCH_LARGE_FILES (default 4),
#      BENCH_LARGE_MB (total of the large files, default 2048), BENCH_KEEP=1 keeps the work dir,
#      PODVAULT (binary, default build/podvault), BENCH_SKIP_RESTIC=1,
#      BENCH_S3=1 also compares first backup and restore on S3: a Ceph RGW on 127.0.0.1:7480
#      (started by tests/s3-env.sh), bucket podvault-bench, emptied again afterwards
#      BENCH_AZURE=1 also times podvault's first backup and restore on Azure Blob Storage:
#      Azurite on 127.0.0.1 (started by tests/azure-env.sh), container podvault-bench, beside the
#      S3 figures (restic 0.14 cannot reach Azurite: its Azure backend has no endpoint setting)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PV=${PODVAULT:-$ROOT/build/podvault}
SMALL=${BENCH_SMALL_FILES:-50000}
LARGE_N=${BENCH_LARGE_FILES:-4}
LARGE_MB=${BENCH_LARGE_MB:-2048}
[ -x "$PV" ] || { echo "bench: $PV not found; run ./setup.sh first" >&2; exit 1; }

need_pkg() { # COMMAND PACKAGE
    command -v "$1" >/dev/null && return 0
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null ||
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null; }
    fi
    command -v "$1" >/dev/null || { echo "bench: $1 is missing (apt-get install $2)" >&2; exit 1; }
}
need_pkg /usr/bin/time time
RESTIC=1
if [ "${BENCH_SKIP_RESTIC:-0}" = 1 ]; then RESTIC=0; else need_pkg restic restic; fi

W=${BENCH_DIR:-$(mktemp -d /var/tmp/podvault-bench.XXXXXX)}
: "${W:?no work directory}"
mkdir -p "$W"
# What a run leaves besides the data (repositories, caches, restored trees: 300,000 files) goes
# when it ends, also with BENCH_KEEP=1, so that the next run does not begin by deleting it (see
# the wait below).
outputs() { OUTPUTS=("$W/pv-repo" "$W/restic-repo" "$W/pv-cache" "$W/restic-cache" "$W/restic-s3-cache" "$W"/{pv,restic}{,-s3}-restore{,-2} "$W"/pv-az-restore{,-2}); }
cleanup() { if [ "${BENCH_KEEP:-0}" = 1 ]; then outputs; rm -rf -- "${OUTPUTS[@]}"; else rm -rf -- "${W:?}"; fi; }
trap cleanup EXIT
DATA=$W/data
echo "bench: work dir $W"

# ---- data -------------------------------------------------------------------------------------
if [ ! -f "$W/data.done" ]; then
    rm -rf -- "${DATA:?}"
    mkdir -p "$DATA/small" "$DATA/large"
    echo "bench: creating $SMALL small files and $LARGE_N large files ($LARGE_MB MiB)"
    # Small files: text-like content, 100 per directory, 1..16 KiB each.
    awk -v n="$SMALL" -v d="$DATA/small" 'BEGIN { srand(42)
        for (i = 0; i < n; i++) {
            if (i % 100 == 0) { dir = sprintf("%s/d%04d", d, i / 100); system("mkdir -p " dir) }
            f = sprintf("%s/f%06d.txt", dir, i); size = 1024 + int(rand() * 15360); s = 0
            while (s < size) { l = sprintf("%d %x record %d value %.6f\n", i, int(rand() * 2^31), s, rand())
                               printf "%s", l > f; s += length(l) }
            close(f) } }'
    # Large files: half random (does not compress), half base64 of random (compresses ~25%).
    per=$((LARGE_MB / LARGE_N))
    for i in $(seq 1 "$LARGE_N"); do
        if [ $((i % 2)) = 1 ]; then
            head -c $((per * 1024 * 1024)) /dev/urandom >"$DATA/large/random-$i.bin"
        else
            # base64 turns 57 bytes into a 77-byte line: this makes about per MiB.
            head -c $((per * 1024 * 1024 / 77 * 57)) /dev/urandom | base64 -w 76 >"$DATA/large/text-$i.b64"
        fi
    done
    touch "$W/data.done"
fi
DATA_BYTES=$(du -sb --apparent-size "$DATA" | cut -f1)
DATA_MB=$(awk -v b="$DATA_BYTES" 'BEGIN { printf "%.0f", b / 1048576 }')
warm() { find "$DATA" -type f -print0 | xargs -0 cat >/dev/null; }

# ---- measuring ----------------------------------------------------------------------------------
declare -A SEC RSS CPU SRV
# CPU seconds (user + system) used so far by the local S3 server's processes (Ceph RGW, OSD,
# monitor) and Azurite's (AZURITE_PID), or 0 when none runs: on one machine they share the cores with the tool measured.
server_cpu() {
    local pid t=0 f
    for pid in $(pgrep -x 'radosgw|ceph-osd|ceph-mon|ceph-mgr' || true); do
        f=$(cut -d')' -f2- "/proc/$pid/stat" 2>/dev/null) || continue
        set -- $f
        t=$((t + ${12} + ${13}))
    done
    for pid in ${AZURITE_PID:-}; do
        f=$(cut -d')' -f2- "/proc/$pid/stat" 2>/dev/null) || continue
        set -- $f
        t=$((t + ${12} + ${13}))
    done
    echo "$t"
}
# timed KEY COMMAND...: wall seconds, peak RSS (MiB) and CPU seconds of a command, and the CPU
# the S3 server spent meanwhile. Dirty pages of the run before are written out first, so no
# command pays for its predecessor's writeback.
timed() {
    local key=$1 s0 s1
    shift
    sync
    s0=$(server_cpu)
    if ! /usr/bin/time -f '%e %M %U %S' -o "$W/time" "$@" >"$W/out.$key" 2>&1; then
        echo "bench: '$*' failed:" >&2
        tail -n 20 "$W/out.$key" >&2
        exit 1
    fi
    s1=$(server_cpu)
    SEC[$key]=$(cut -d' ' -f1 "$W/time")
    RSS[$key]=$(awk '{ printf "%.0f", $2 / 1024 }' "$W/time")
    CPU[$key]=$(awk '{ printf "%.1f", $3 + $4 }' "$W/time")
    SRV[$key]=$(awk -v a="$s0" -v b="$s1" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", (b - a) / hz }')
    printf '  %-22s %8.2f s  %6s MiB peak RSS  %6s s CPU' "$key" "${SEC[$key]}" "${RSS[$key]}" "${CPU[$key]}"
    [ "${SRV[$key]}" = 0.0 ] || printf '  (server %s s CPU)' "${SRV[$key]}"
    echo
}

PVREPO=$W/pv-repo
RREPO=$W/restic-repo
outputs
if [ -n "$(ls -d "${OUTPUTS[@]}" 2>/dev/null)" ]; then
    # Left by an interrupted run. On ext4 without a journal (this machine's root), a new inode is
    # not taken from those freed in the last 5 minutes while their inode table block is unwritten
    # (fs/ext4/ialloc.c, recently_deleted), and every one passed over costs a lookup: a restore of
    # 50,000 files a minute after 300,000 were deleted took 28 s of CPU instead of 13. So the
    # freed ones age first, whichever tool restores first.
    rm -rf "${OUTPUTS[@]}"
    sync
    echo "bench: removed a previous run's output; waiting 330 s for the file system"
    sleep 330
fi
echo "bench password" >"$W/password"
export PODVAULT_PASSWORD_FILE=$W/password PODVAULT_CACHE_DIR=$W/pv-cache
export RESTIC_PASSWORD_FILE=$W/password
# Commands as arrays: /usr/bin/time runs programs, not shell functions.
pv=("$PV" -r "$PVREPO" -q)
rs=(restic -r "$RREPO" --cache-dir "$W/restic-cache" -q)

echo "bench: $DATA_MB MiB in $(find "$DATA" -type f | wc -l) files; warming the page cache"
warm
"${pv[@]}" init >/dev/null
[ $RESTIC = 1 ] && "${rs[@]}" init >/dev/null
versions="podvault $("$PV" version | cut -d' ' -f2)"
[ $RESTIC = 1 ] && versions="$versions, $(restic version | cut -d' ' -f1-2)"
echo "bench: runs ($versions)"
# Each phase runs podvault then restic, so both see the same cache state.
timed pv-backup "${pv[@]}" backup "$DATA" --host bench
[ $RESTIC = 1 ] && timed restic-backup "${rs[@]}" backup "$DATA" --host bench
timed pv-rebackup "${pv[@]}" backup "$DATA" --host bench
[ $RESTIC = 1 ] && timed restic-rebackup "${rs[@]}" backup "$DATA" --host bench
# Restores vary most with the file system's state (a restore creating 50 000 files right after
# the backups measured up to 1.7x slower than the same restore a minute later, whichever tool
# came first). So each tool restores twice, in the order pv, restic, restic, pv, into fresh
# directories, and its faster run counts (with that run's CPU).
best() { # KEY KEY2: under KEY, the faster run's time and CPU, and the higher peak RSS of the two
    if awk -v a="${SEC[$1]}" -v b="${SEC[$2]}" 'BEGIN { exit !(b < a) }'; then
        SEC[$1]=${SEC[$2]} CPU[$1]=${CPU[$2]} SRV[$1]=${SRV[$2]}
    fi
    [ "${RSS[$2]}" -gt "${RSS[$1]}" ] && RSS[$1]=${RSS[$2]}
    return 0
}
timed pv-restore "${pv[@]}" restore latest --target "$W/pv-restore"
if [ $RESTIC = 1 ]; then
    timed restic-restore "${rs[@]}" restore latest --target "$W/restic-restore"
    timed restic-restore-2 "${rs[@]}" restore latest --target "$W/restic-restore-2"
    best restic-restore restic-restore-2
fi
timed pv-restore-2 "${pv[@]}" restore latest --target "$W/pv-restore-2"
best pv-restore pv-restore-2
for d in pv-restore pv-restore-2; do
    diff -rq "$DATA" "$W/$d" >/dev/null || { echo "bench: podvault's restore ($d) differs from the data!" >&2; exit 1; }
done
PV_SIZE=$(du -sb "$PVREPO" | cut -f1)
R_SIZE=$([ $RESTIC = 1 ] && du -sb "$RREPO" | cut -f1 || echo 0)

# ---- the same on S3 (BENCH_S3=1) ----------------------------------------------------------------
S3=${BENCH_S3:-0}
if [ "$S3" = 1 ]; then
    # shellcheck disable=SC1091
    PV_S3_BUCKET=podvault-bench source tests/s3-env.sh || { echo "bench: no S3 server here" >&2; exit 1; }
    # shellcheck disable=SC1091
    . tests/s3-lib.sh # s3_delete_prefix
    S3BASE=${PV_TEST_S3%/tests}/run-$(date +%s)-$$
    trap 'REPO=$S3BASE s3_delete_prefix; cleanup' EXIT
    echo "bench: S3 runs at $S3BASE"
    pvs=("$PV" -r "$S3BASE/podvault" -q)
    rss=(restic -r "$S3BASE/restic" --cache-dir "$W/restic-s3-cache" -q)
    pvs2=("$PV" -r "$S3BASE/podvault-2" -q)
    rss2=(restic -r "$S3BASE/restic-2" --cache-dir "$W/restic-s3-cache" -q)
    "${pvs[@]}" init >/dev/null
    "${pvs2[@]}" init >/dev/null
    if [ $RESTIC = 1 ]; then
        "${rss[@]}" init >/dev/null
        "${rss2[@]}" init >/dev/null
    fi
    # First backups twice each too, into two repositories (pv, restic, restic, pv): the same
    # backup took 17 to 22 s on this machine from one minute to the next, restic's 32 to 43 s.
    timed pv-s3-backup "${pvs[@]}" backup "$DATA" --host bench
    if [ $RESTIC = 1 ]; then
        timed restic-s3-backup "${rss[@]}" backup "$DATA" --host bench
        timed restic-s3-backup-2 "${rss2[@]}" backup "$DATA" --host bench
        best restic-s3-backup restic-s3-backup-2
    fi
    timed pv-s3-backup-2 "${pvs2[@]}" backup "$DATA" --host bench
    best pv-s3-backup pv-s3-backup-2
    # Twice each, as above: restic's S3 restore of this data took 16 s in one run and 22 in another.
    timed pv-s3-restore "${pvs[@]}" restore latest --target "$W/pv-s3-restore"
    if [ $RESTIC = 1 ]; then
        timed restic-s3-restore "${rss[@]}" restore latest --target "$W/restic-s3-restore"
        timed restic-s3-restore-2 "${rss[@]}" restore latest --target "$W/restic-s3-restore-2"
        best restic-s3-restore restic-s3-restore-2
    fi
    timed pv-s3-restore-2 "${pvs[@]}" restore latest --target "$W/pv-s3-restore-2"
    best pv-s3-restore pv-s3-restore-2
    for d in pv-s3-restore pv-s3-restore-2; do
        diff -rq "$DATA" "$W/$d" >/dev/null || { echo "bench: podvault's S3 restore ($d) differs from the data!" >&2; exit 1; }
    done
fi

# ---- podvault on Azure Blob Storage (BENCH_AZURE=1) ---------------------------------------------
AZ=${BENCH_AZURE:-0}
if [ "$AZ" = 1 ]; then
    PV_AZURE_CONTAINER=podvault-bench source tests/azure-env.sh || { echo "bench: no Azurite here" >&2; exit 1; }
    AZURITE_PID=$(cat "${PV_AZURE_DIR:-${TMPDIR:-/tmp}/podvault-azurite-$(id -u)}/pid" 2>/dev/null || true)
    AZBASE=${PV_TEST_AZURE%/tests}/run-$(date +%s)-$$
    echo "bench: Azure runs at $AZBASE"
    pva=("$PV" -r "$AZBASE/podvault" -q)
    pva2=("$PV" -r "$AZBASE/podvault-2" -q)
    "${pva[@]}" init >/dev/null
    "${pva2[@]}" init >/dev/null
    timed pv-az-backup "${pva[@]}" backup "$DATA" --host bench
    timed pv-az-backup-2 "${pva2[@]}" backup "$DATA" --host bench
    best pv-az-backup pv-az-backup-2
    timed pv-az-restore "${pva[@]}" restore latest --target "$W/pv-az-restore"
    timed pv-az-restore-2 "${pva[@]}" restore latest --target "$W/pv-az-restore-2"
    best pv-az-restore pv-az-restore-2
    for d in pv-az-restore pv-az-restore-2; do
        diff -rq "$DATA" "$W/$d" >/dev/null || { echo "bench: podvault's Azure restore ($d) differs from the data!" >&2; exit 1; }
    done
    for r in "$AZBASE/podvault" "$AZBASE/podvault-2"; do
        "$(dirname "$PV")/pv_objects" "$r" rm-prefix '' >/dev/null 2>&1 || true
    done
fi

# ---- table --------------------------------------------------------------------------------------
mbs() { awk -v s="$1" -v b="$DATA_BYTES" 'BEGIN { if (s > 0) printf "%.0f", b / 1048576 / s; else print "-" }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
verdict() { awk -v r="$1" -v t="$2" -v dir="$3" 'BEGIN { if (r == "-") print ""; else if ((dir == "ge" && r >= t) || (dir == "le" && r <= t)) print "met"; else print "MISSED" }'; }
row() { # label podvault restic ratio target verdict
    printf '%-28s %14s %14s %10s %12s %8s\n' "$@"
}
echo
echo "podvault vs restic on $DATA_MB MiB ($SMALL small files + $LARGE_N large files), $(nproc) cores"
row "" podvault restic ratio target ""
if [ $RESTIC = 1 ]; then
    r=$(ratio "${SEC[restic-backup]}" "${SEC[pv-backup]}")
    row "first backup (s)" "${SEC[pv-backup]}" "${SEC[restic-backup]}" "${r}x" ">= 2x" "$(verdict "$r" 2 ge)"
    row "first backup (MB/s)" "$(mbs "${SEC[pv-backup]}")" "$(mbs "${SEC[restic-backup]}")" "" "" ""
    r=$(ratio "${SEC[restic-rebackup]}" "${SEC[pv-rebackup]}")
    row "unchanged re-backup (s)" "${SEC[pv-rebackup]}" "${SEC[restic-rebackup]}" "${r}x" ">= 3x" "$(verdict "$r" 3 ge)"
    r=$(ratio "${SEC[restic-restore]}" "${SEC[pv-restore]}")
    row "restore (s)" "${SEC[pv-restore]}" "${SEC[restic-restore]}" "${r}x" ">= 2x" "$(verdict "$r" 2 ge)"
    row "restore (MB/s)" "$(mbs "${SEC[pv-restore]}")" "$(mbs "${SEC[restic-restore]}")" "" "" ""
    for k in backup rebackup restore; do
        r=$(ratio "${RSS[pv-$k]}" "${RSS[restic-$k]}")
        row "peak RSS $k (MiB)" "${RSS[pv-$k]}" "${RSS[restic-$k]}" "$r" "<= 0.25" "$(verdict "$r" 0.25 le)"
    done
    r=$(ratio "$PV_SIZE" "$R_SIZE")
    row "repository (MiB)" "$((PV_SIZE / 1048576))" "$((R_SIZE / 1048576))" "$r" "<= 1" "$(verdict "$r" 1 le)"
    if [ "$S3" = 1 ]; then
        for k in backup restore; do
            r=$(ratio "${SEC[restic-s3-$k]}" "${SEC[pv-s3-$k]}")
            row "S3 $k (s)" "${SEC[pv-s3-$k]}" "${SEC[restic-s3-$k]}" "${r}x" ">= 2x" "$(verdict "$r" 2 ge)"
            row "S3 $k (MB/s)" "$(mbs "${SEC[pv-s3-$k]}")" "$(mbs "${SEC[restic-s3-$k]}")" "" "" ""
            r=$(ratio "${RSS[pv-s3-$k]}" "${RSS[restic-s3-$k]}")
            row "S3 peak RSS $k (MiB)" "${RSS[pv-s3-$k]}" "${RSS[restic-s3-$k]}" "$r" "<= 0.25" "$(verdict "$r" 0.25 le)"
            row "S3 $k CPU: tool + server (s)" "${CPU[pv-s3-$k]} + ${SRV[pv-s3-$k]}" "${CPU[restic-s3-$k]} + ${SRV[restic-s3-$k]}" "" "" ""
        done
        # The server shares the cores: podvault's CPU plus the server's, spread over every core,
        # is the least wall time this machine allows; 2x restic needs half of restic's time.
        for k in backup restore; do
            floor=$(awk -v a="${CPU[pv-s3-$k]}" -v b="${SRV[pv-s3-$k]}" -v n="$(nproc)" 'BEGIN { printf "%.1f", (a + b) / n }')
            half=$(awk -v t="${SEC[restic-s3-$k]}" 'BEGIN { printf "%.1f", t / 2 }')
            echo "S3 $k: least wall time on $(nproc) cores for podvault's CPU and the server's: $floor s (2x restic: $half s)"
        done
    fi
else
    for k in backup rebackup restore; do row "$k (s / MiB RSS)" "${SEC[pv-$k]} / ${RSS[pv-$k]}" - - - -; done
    if [ "$S3" = 1 ]; then
        for k in backup restore; do row "S3 $k (s / MiB RSS)" "${SEC[pv-s3-$k]} / ${RSS[pv-s3-$k]}" - - - -; done
    fi
    row "repository (MiB)" "$((PV_SIZE / 1048576))" - - - -
fi

if [ "$AZ" = 1 ]; then
    for k in backup restore; do
        row "Azure $k (s)" "${SEC[pv-az-$k]}" - - - -
        row "Azure $k (MB/s)" "$(mbs "${SEC[pv-az-$k]}")" - - - -
        row "Azure peak RSS $k (MiB)" "${RSS[pv-az-$k]}" - - - -
        row "Azure $k CPU: tool + Azurite (s)" "${CPU[pv-az-$k]} + ${SRV[pv-az-$k]}" - - - -
    done
fi

# ---- the parts' own figures ------------------------------------------------------------------
for tool in chunkbench idxmem; do
    bin=$(dirname "$PV")/$tool
    echo
    if [ -x "$bin" ]; then
        echo "$tool:"
        "$bin" 2>&1 | sed 's/^/  /'
    else
        echo "$tool: not built (bench/$tool.c is not in this tree)"
    fi
done
