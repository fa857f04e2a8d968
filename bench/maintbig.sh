#!/bin/bash
# bench/maintbig.sh - prune and check at millions of blobs, unbounded and under --max-memory at
# about a quarter of the unbounded tables: time, peak RSS, passes, repack batches, and the tables'
# bytes (and bytes a blob) each run reports. The repository is written by bench/synthrepo.c
# (BENCH_BLOBS small unique blobs, one snapshot with all of them and newer ones that drop and
# add some), then the oldest snapshot is forgotten, so prune deletes and repacks. Not part of the
# tests.
# Env: BENCH_BLOBS (default 2000000), BENCH_SNAPSHOTS (default 3), BENCH_PACK_MIB (default 4),
#      BENCH_DIR (default a new dir under /var/tmp), BENCH_KEEP=1 keeps it,
#      PODVAULT, SYNTHREPO (binaries, default build/podvault, build/synthrepo)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PV=${PODVAULT:-$ROOT/build/podvault}
SYNTH=${SYNTHREPO:-$ROOT/build/synthrepo}
BLOBS=${BENCH_BLOBS:-2000000}
SNAPS=${BENCH_SNAPSHOTS:-3}
PACK=${BENCH_PACK_MIB:-4}
for b in "$PV" "$SYNTH"; do [ -x "$b" ] || { echo "bench: $b not found; build first" >&2; exit 1; }; done
command -v /usr/bin/time >/dev/null || { echo "bench: /usr/bin/time is missing" >&2; exit 1; }
command -v jq >/dev/null || { echo "bench: jq is missing" >&2; exit 1; }

W=${BENCH_DIR:-$(mktemp -d /var/tmp/podvault-maintbig.XXXXXX)}
: "${W:?no work directory}"
mkdir -p "$W"
[ "${BENCH_KEEP:-0}" = 1 ] || trap 'rm -rf -- "${W:?}"' EXIT
export PODVAULT_PASSWORD=bench BENCH_KDF_MIN=1 PODVAULT_CACHE_DIR=$W/pvcache

# row NAME REPO ARGS...: runs podvault --json ARGS on REPO;
# prints time, peak RSS and the figures of its summary.
row() {
    local name=$1 repo=$2
    shift 2
    /usr/bin/time -f "%e %M" -o "$W/time" "$PV" -r "$repo" --json "$@" >"$W/out" 2>"$W/err" ||
        { echo "bench: $name failed:"; tail -n 5 "$W/err"; exit 1; } >&2
    read -r secs rss <"$W/time"
    grep '"message_type":"summary"' "$W/out" | tail -n 1 >"$W/sum.$name"
    jq -r --arg n "$name" --arg s "$secs" --arg r "$rss" '
        "\($n)|\($s) s|\(($r | tonumber) / 1024 * 10 | floor / 10) MiB|\(.passes)|" +
        "\(.repack_batches // "-")|\(.memory)|\((.memory / .blobs * 10 | floor) / 10)"' \
        "$W/sum.$name"
}

echo "bench: $BLOBS blobs, $SNAPS snapshots, $PACK MiB packs, in $W"
/usr/bin/time -f "synthrepo: %e s, %M KiB" -o "$W/time" "$SYNTH" "$W/repo" "$BLOBS" "$SNAPS" "$PACK"
cat "$W/time"
"$PV" -r "$W/repo" forget --keep-last $((SNAPS - 1)) -q
du -sh "$W/repo" | sed 's/^/repository: /'
echo "command|time|peak RSS|passes|batches|tables (bytes)|bytes a blob"
# (Under a bound the CLI fixes glibc's mmap threshold itself; see cli/cmd_maint.c.)
row "check" "$W/repo" check >"$W/rows"
cq=$(($(jq .memory "$W/sum.check") / 4))
row "check --max-memory $cq" "$W/repo" check --max-memory "$cq" >>"$W/rows"
row "prune --dry-run" "$W/repo" prune --dry-run >>"$W/rows"
pq=$(($(jq .memory "$W/sum.prune --dry-run") / 4))
# A quarter may be too little for the largest pack to repack: then the least bound that works.
if ! "$PV" -r "$W/repo" prune --dry-run --max-memory "$pq" >/dev/null 2>"$W/err"; then
    pq=$(sed -n 's/.*(\([0-9]*\) bytes) is needed.*/\1/p' "$W/err")
    [ -n "$pq" ] || { cat "$W/err" >&2; exit 1; }
    # At the least, the repack would need thousands of passes: half as much again.
    pq=$((pq + pq / 2))
    echo "(a quarter of prune's tables is too little to repack the largest pack; bound: $pq)"
fi
row "prune --dry-run --max-memory $pq" "$W/repo" prune --dry-run --max-memory "$pq" >>"$W/rows"
cp -a "$W/repo" "$W/repo2"
row "prune" "$W/repo" prune >>"$W/rows"
row "prune --max-memory $pq" "$W/repo2" prune --max-memory "$pq" >>"$W/rows"
column -t -s '|' "$W/rows"
jq -r '"prune: \(.blobs) blobs (\(.blobs_used) used) in \(.packs) packs, \(.snapshots) snapshots, \(.trees) trees; deleted \(.packs_deleted) packs, repacked \(.packs_repacked) (\(.blobs_repacked) blobs)"' \
    "$W/sum.prune"
for r in repo repo2; do
    "$PV" -r "$W/$r" --json check >"$W/out" 2>"$W/err" || { echo "bench: check of $r failed"; exit 1; }
done
echo "the pruned repositories check clean"
