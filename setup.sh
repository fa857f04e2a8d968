#!/bin/bash
# setup.sh - the first set-up command: installs what is missing (Debian 12, with apt-get when run
# as root), builds podvault into build/, then shows it at work: a real backup and restore of a
# generated sample tree through a local repository, printing each step.
set -euo pipefail
cd "$(dirname "$0")"

say() { printf '\n==> %s\n' "$*"; }

PACKAGES=(build-essential cmake pkg-config libcurl4-openssl-dev libssl-dev libsodium-dev libzstd-dev
          libxxhash-dev libjansson-dev libuv1-dev libexpat1-dev libyaml-dev libcmocka-dev
          attr acl)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup.sh: missing Debian packages: ${missing[*]}" >&2
        echo "setup.sh: run this script as root, or: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

say "building into build/"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" 2>&1 | grep -Ev '^\[ *[0-9]+%\]|^-- ' || true
[ -x build/podvault ] || { echo "setup.sh: the build failed" >&2; exit 1; }
PV=$(pwd)/build/podvault
"$PV" version

# ---- the main job, on an embedded default: a sample tree backed up and restored ----------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/podvault-demo.XXXXXX")
: "${WORK:?mktemp gave no work directory}"
trap 'rm -rf -- "${WORK:?}"' EXIT
SRC=$WORK/sample
REPO=$WORK/repository
say "creating a sample tree in $SRC"
mkdir -p "$SRC/docs/notes" "$SRC/db" "$SRC/empty-dir" "$SRC/bin"
for i in $(seq 1 200); do
    printf 'note %d: backups that are never restored are only hopes.\n' "$i" >"$SRC/docs/notes/note-$i.txt"
done
seq 1 400000 | awk '{ print "row", $1, $1 * 7 % 1000, "some compressible text" }' >"$SRC/db/table.csv"
head -c $((20 * 1024 * 1024)) /dev/urandom >"$SRC/db/blob.bin"
cp "$SRC/db/blob.bin" "$SRC/db/blob-copy.bin"   # deduplicated: stored once
: >"$SRC/docs/empty.txt"
truncate -s 64M "$SRC/db/sparse.img"             # a hole, not stored as data
printf '#!/bin/sh\necho hello from the sample\n' >"$SRC/bin/hello.sh"
chmod 0755 "$SRC/bin/hello.sh"
ln -s ../db/table.csv "$SRC/docs/table-link"
touch -d '2020-02-02 20:20:20.123456789' "$SRC/docs/empty.txt"
if command -v setfattr >/dev/null && setfattr -n user.demo -v sample "$SRC/docs/empty.txt" 2>/dev/null; then
    echo "(with an extended attribute user.demo on docs/empty.txt)"
fi
echo "sample tree: $(du -sh --apparent-size "$SRC" | cut -f1) in $(find "$SRC" -mindepth 1 | wc -l) entries"

# The password comes from a file here; interactively podvault asks on the terminal.
head -c 24 /dev/urandom | base64 >"$WORK/password"
export PODVAULT_REPOSITORY=$REPO PODVAULT_PASSWORD_FILE=$WORK/password
export PODVAULT_CACHE_DIR=$WORK/cache

say "podvault init -r $REPO"
"$PV" init
say "podvault backup $SRC --tag demo"
"$PV" backup "$SRC" --tag demo --label app=demo
say "changing one file, then backing up again (incremental: unchanged files are not read)"
echo "a new line" >>"$SRC/docs/notes/note-1.txt"
"$PV" backup "$SRC" --tag demo
say "podvault snapshots"
"$PV" snapshots
say "podvault ls latest /bin --long"
"$PV" ls latest /bin --long
say "podvault restore latest --target $WORK/restored"
"$PV" restore latest --target "$WORK/restored"

say "comparing the restored tree with the sample"
# pv_treecmp first: it compares access times, which the reads of diff would change.
if [ -x build/pv_treecmp ] && ! build/pv_treecmp "$SRC" "$WORK/restored" --no-root; then
    echo "setup.sh: pv_treecmp found differences" >&2
    exit 1
fi
if ! diff -r --no-dereference "$SRC" "$WORK/restored"; then
    echo "setup.sh: the restored tree differs from the sample" >&2
    exit 1
fi
listing() { (cd "$1" && find . -mindepth 1 -printf '%P %y %m %s %T@ %l\n' | LC_ALL=C sort | awk '$2 == "d" { $4 = "-" } { print }'); }
if ! diff <(listing "$SRC") <(listing "$WORK/restored"); then
    echo "setup.sh: the restored tree's metadata differs from the sample" >&2
    exit 1
fi
src_bytes=$(du -sb --apparent-size "$SRC" | cut -f1)
repo_bytes=$(du -sb "$REPO" | cut -f1)
echo "identical: every file's content, type, mode, owner, size, times, link target$([ -x build/pv_treecmp ] && echo ', xattrs, hard links and holes')."
echo "sample: $((src_bytes / 1048576)) MiB; repository after two backups: $((repo_bytes / 1048576)) MiB" \
     "(deduplicated, compressed, encrypted)"
say "done: podvault is built at build/podvault; run ./run-tests.sh for the test suite"
