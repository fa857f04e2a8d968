#!/bin/bash
# bench/maint.sh - prune and check beside restic on the same history: time and peak RSS of
# prune (after forgetting half of the snapshots), check, and check --read-data, beside the
# baseline of each tool (listing snapshots: opening the repository, whose key derivation alone
# takes tens of MiB), plus podvault's own memory figures (bytes of index and tables). Not part
# of the tests.
#
# The history: BENCH_FILES small files (1..8 KiB, one blob each in both tools, so the blob count
# is about the file count), backed up BENCH_SNAPSHOTS times, each time after rewriting
# BENCH_CHURN percent of them; then the older half of the snapshots is forgotten.
# Env: BENCH_DIR (default a new dir under /var/tmp), BENCH_FILES (default 200000),
#      BENCH_SNAPSHOTS (default 4), BENCH_CHURN (default 25), BENCH_KEEP=1 keeps the work dir,
#      PODVAULT (binary, default build/podvault), BENCH_SKIP_RESTIC=1
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PV=${PODVAULT:-$ROOT/build/podvault}
FILES=${BENCH_FILES:-200000}
SNAPS=${BENCH_SNAPSHOTS:-4}
CHURN=${BENCH_CHURN:-25}
[ -x "$PV" ] || { echo "bench: $PV not found; build first" >&2; exit 1; }
command -v /usr/bin/time >/dev/null || { echo "bench: /usr/bin/time is missing" >&2; exit 1; }
RESTIC=1
if [ "${BENCH_SKIP_RESTIC:-0}" = 1 ] || ! command -v restic >/dev/null; then RESTIC=0; fi

W=${BENCH_DIR:-$(mktemp -d /var/tmp/podvault-maint.XXXXXX)}
: "${W:?no work directory}"
mkdir -p "$W"
[ "${BENCH_KEEP:-0}" = 1 ] || trap 'rm -rf -- "${W:?}"' EXIT
DATA=$W/data
export PODVAULT_PASSWORD=bench RESTIC_PASSWORD=bench PODVAULT_CACHE_DIR=$W/pvcache
export RESTIC_CACHE_DIR=$W/rcache
PVR=("$PV" -r "$W/pv")
RR=(restic -r "$W/restic" -q)

# Writes files i..j-1 (text-like, 1..8 KiB, differing by `gen`).
make_files() {
    awk -v a="$1" -v b="$2" -v d="$DATA" -v gen="$3" 'BEGIN { srand(a * 7 + gen)
        for (i = a; i < b; i++) {
            dir = sprintf("%s/d%04d", d, int(i / 500)); if (i % 500 == 0 || i == a) system("mkdir -p " dir)
            f = sprintf("%s/f%07d", dir, i); size = 1024 + int(rand() * 7168); s = 0
            while (s < size) { l = sprintf("%d %d %x %.9f\n", gen, i, int(rand() * 2^31), rand())
                               printf "%s", l > f; s += length(l) }
            close(f) } }'
}

# measure NAME CMD...: runs CMD, records seconds and peak RSS (KiB) under NAME.
measure() {
    local name=$1
    shift
    /usr/bin/time -f "%e %M" -o "$W/time.$name" "$@" >"$W/out.$name" 2>"$W/err.$name" ||
        { echo "bench: $name failed:"; tail -n 5 "$W/err.$name"; exit 1; }
    read -r secs rss <"$W/time.$name"
    printf '%-28s %8.2f s %9d KiB\n' "$name" "$secs" "$rss"
}

echo "bench: $FILES files, $SNAPS snapshots, ${CHURN}% rewritten between them, in $W"
rm -rf -- "${DATA:?}"
mkdir -p "$DATA"
make_files 0 "$FILES" 0
"${PVR[@]}" init --chunk-min 16384 --chunk-avg 65536 --chunk-max 262144 --kdf-passes 1 --kdf-memory 8K >/dev/null
[ "$RESTIC" = 1 ] && "${RR[@]}" init >/dev/null
for s in $(seq 1 "$SNAPS"); do
    if [ "$s" -gt 1 ]; then
        # Rewrite a different CHURN% slice each time.
        n=$((FILES * CHURN / 100))
        a=$(( (s * n) % FILES ))
        b=$((a + n < FILES ? a + n : FILES))
        make_files "$a" "$b" "$s"
    fi
    "${PVR[@]}" backup "$DATA" -q
    [ "$RESTIC" = 1 ] && "${RR[@]}" backup "$DATA" >/dev/null
done
keep=$((SNAPS / 2))
"${PVR[@]}" forget --keep-last "$keep" -q
[ "$RESTIC" = 1 ] && "${RR[@]}" forget --keep-last "$keep" >/dev/null
printf '%-28s %10s %13s\n' "" "time" "peak RSS"
# The baseline: opening the repository (the key derivation alone takes tens of MiB in both).
measure "podvault snapshots" "${PVR[@]}" snapshots
[ "$RESTIC" = 1 ] && measure "restic snapshots" "${RR[@]}" snapshots
# --max-memory: a bound that makes 4 passes, from the figures a too-small bound reports (the
# fixed cost F of every pass, and O for one pass: a range then costs (O-F)/4, plus 1/16 and 8
# blobs of slack, as walk_plan_passes counts).
four_passes() {
    "${PVR[@]}" "$@" --max-memory 1K >/dev/null 2>"$W/err.bound" && return 1
    local f o q
    f=$(sed -n 's/.*alone take \([0-9]*\) bytes.*/\1/p' "$W/err.bound")
    o=$(sed -n 's/.*one pass needs \([0-9]*\) bytes.*/\1/p' "$W/err.bound")
    q=$(( (o - f + 3) / 4 ))
    echo $((f + q + q / 16 + 8 * 56))
}
pbound=$(four_passes prune --dry-run)
measure "podvault prune --dry-run" "${PVR[@]}" --json prune --dry-run --max-unused 5%
measure "prune --dry-run (4 passes)" "${PVR[@]}" --json prune --dry-run --max-unused 5% --max-memory "$pbound"
cbound=$(four_passes check)
measure "podvault check (1st)" "${PVR[@]}" --json check
measure "check (4 passes)" "${PVR[@]}" --json check --max-memory "$cbound"
measure "podvault prune" "${PVR[@]}" --json prune --max-unused 5%
[ "$RESTIC" = 1 ] && measure "restic prune" "${RR[@]}" prune --max-unused 5%
measure "podvault check" "${PVR[@]}" --json check
[ "$RESTIC" = 1 ] && measure "restic check" "${RR[@]}" check
measure "podvault check --read-data" "${PVR[@]}" --json check --read-data
[ "$RESTIC" = 1 ] && measure "restic check --read-data" "${RR[@]}" check --read-data
jq -r '"podvault prune: \(.blobs) blobs (\(.blobs_used) used) in \(.packs) packs, \(.snapshots) snapshots, \(.trees) trees; deleted \(.packs_deleted) packs, repacked \(.packs_repacked); index and tables: \(.memory) bytes = \((.memory / .blobs * 10 | floor) / 10) bytes a blob"' "$W/out.podvault prune"
jq -r 'select(.message_type == "summary") | "podvault check: index and tables: \(.memory) bytes = \((.memory / .blobs * 10 | floor) / 10) bytes a blob"' "$W/out.podvault check"
for n in "podvault prune --dry-run" "prune --dry-run (4 passes)"; do
    jq -r --arg n "$n" '"\($n): \(.passes) passes, tables \(.memory) bytes = \((.memory / .blobs * 10 | floor) / 10) bytes a blob"' "$W/out.$n"
done
echo "  (bound $pbound bytes for prune, $cbound for check)"
jq -r 'select(.message_type == "summary") | "check (4 passes): \(.passes) passes, tables \(.memory) bytes = \((.memory / .blobs * 10 | floor) / 10) bytes a blob"' "$W/out.check (4 passes)"
echo "repository sizes: podvault $(du -sh "$W/pv" | cut -f1)$([ "$RESTIC" = 1 ] && echo ", restic $(du -sh "$W/restic" | cut -f1)")"
