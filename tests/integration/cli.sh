#!/bin/bash
# cli.sh - the command line contract (docs: README.md, `podvault --help`): options anywhere,
# environment variables, snapshot selection (ID, prefix, latest + --host/--path/--tag), ls and
# cat output, key management, --json output and exit codes.
. "$(dirname "$0")/lib.sh" || exit 1
: "${T:?lib.sh did not set the work directory}"
need jq

# ---- usage and help ---------------------------------------------------------------------------
run_raw 0 --help
grep -q '^usage: podvault' "$T/out" || fail "--help prints no usage"
for c in init backup snapshots ls restore cat key version; do
    run_raw 0 "$c" --help
    grep -q "^usage: podvault $c" "$T/out" || fail "$c --help prints no usage"
done
run_raw 0 help restore
grep -q '^usage: podvault restore' "$T/out" || fail "help restore"
run_raw 2
one_line_error command
run_raw 2 frobnicate
one_line_error frobnicate
run_raw 2 snapshots --frobnicate
one_line_error frobnicate
run_raw 2 snapshots
one_line_error repository
run_raw 2 backup -r "$REPO" --password-file "$PW"
one_line_error
run_raw 2 restore -r "$REPO" latest
one_line_error target
run_raw 0 version
grep -q '^podvault [0-9]' "$T/out" || fail "version"
run_raw 0 version --json
jq -e '.version' "$T/out" >/dev/null || fail "version --json"
ok "help, usage errors (exit 2, one line), version"

# ---- init options and the environment ---------------------------------------------------------
run_raw 2 init -r "$REPO" --password-file "$PW" --chunk-avg 1000K
one_line_error
run_pv 0 init --chunk-min 64K --chunk-avg 256K --chunk-max 1M --pack-size 4M --compression 5 \
    --kdf-memory 64K --kdf-passes 2
run_pv 0 cat config
jq -e '.' "$T/out" >/dev/null || fail "cat config is not JSON"
grep -q 262144 "$T/out" || fail "cat config does not show the average chunk size 262144"
PODVAULT_REPOSITORY=$REPO PODVAULT_PASSWORD=$(cat "$PW") run_raw 0 snapshots
PODVAULT_REPOSITORY=$REPO PODVAULT_PASSWORD_FILE=$PW run_raw 0 snapshots
run_raw 0 snapshots -r "$REPO" --password-file "$PW" --json
[ "$(jq length "$T/out")" = 0 ] || fail "a new repository has snapshots"
ok "init options shown by cat config; repository and password from the environment"

# ---- a local repository and the cache are private: 0600 files, 0700 directories ---------------
# (keys/ holds what an offline password guess needs). Under umask 0: the modes are podvault's own.
PRIV=$T/private-repo
(umask 0 && PODVAULT_PASSWORD=$(cat "$PW") "$PODVAULT" -q init -r "$PRIV" --kdf-memory 64K \
    --kdf-passes 2 && PODVAULT_PASSWORD=$(cat "$PW") "$PODVAULT" -q backup -r "$PRIV" "$(dirname "$0")/lib.sh") \
    >"$T/out" 2>&1 || fail "init and backup of the private repository: $(cat "$T/out")"
loose=$(find "$PRIV" \( -type f -perm /077 \) -o \( -type d -perm /077 \) | head -n 5)
[ -z "$loose" ] || fail "readable by others: $loose"
[ -n "$(find "$PRIV/keys" -type f -perm 0600)" ] || fail "no key file of mode 0600"
[ -n "$(find "$PRIV/data" -type f -perm 0600)" ] || fail "no pack file of mode 0600"
ok "a local repository: files 0600, directories 0700, whatever the umask (the cache: test_cache)"

# ---- backups to select from -------------------------------------------------------------------
A=$T/alpha
B=$T/beta
mkdir -p "$A/sub/deeper" "$B"
echo one >"$A/one"
echo two >"$A/sub/two"
echo three >"$A/sub/deeper/three"
ln -s one "$A/link"
echo bee >"$B/bee"
run_pv 0 --json backup "$A" --host h1 --tag t1 --label pod=web --label ns=prod
s1=$(tail -n 1 "$T/out" | jq -r .snapshot_id)
run_pv 0 --json backup "$B" --host h2 --tag t2
s2=$(tail -n 1 "$T/out" | jq -r .snapshot_id)
echo four >"$A/four"
run_pv 0 --json backup "$A" --host h1 --tag t2,t3
s3=$(tail -n 1 "$T/out" | jq -r .snapshot_id)
run_pv 2 backup "$A" --label novalue
run_pv 2 backup "$A" --force --parent "$s1"

run_pv 0 --json snapshots
[ "$(jq length "$T/out")" = 3 ] || fail "expected 3 snapshots"
jq -e --arg id "$s1" --arg a "$A" '.[0] | (.id == $id) and (.short_id == $id[0:8])
    and (.time | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{9}(Z|[+-][0-9]{2}:[0-9]{2})$"))
    and (.hostname == "h1") and (.username | type == "string") and (.paths == [$a])
    and (.tags == ["t1"]) and (.labels == {"pod": "web", "ns": "prod"}) and (has("parent") | not)
    and (.tree | test("^[0-9a-f]{64}$")) and (.incomplete == false)
    and (.summary | has("files_new") and has("total_bytes") and has("bytes_stored") and has("duration"))' \
    "$T/out" >/dev/null || fail "snapshots --json: first snapshot fields wrong: $(jq -c '.[0]' "$T/out")"
jq -e --arg p "$s1" '.[2].parent == $p and (.[2].tags | sort) == ["t2", "t3"]' "$T/out" >/dev/null \
    || fail "third snapshot: parent should be the first, tags t2,t3"
ok "snapshots --json fields"

count() { run_pv 0 --json snapshots "$@"; jq length "$T/out"; }
[ "$(count --host h1)" = 2 ] || fail "--host h1"
[ "$(count --tag t2)" = 2 ] || fail "--tag t2"
[ "$(count --tag t2,t3)" = 1 ] || fail "--tag t2,t3"
[ "$(count --path "$A")" = 2 ] || fail "--path A"
[ "$(count --host h2 --tag t2)" = 1 ] || fail "--host h2 --tag t2"
[ "$(count --host nobody)" = 0 ] || fail "--host nobody"
run_pv 0 snapshots
grep -q "${s2:0:8}" "$T/out" && grep -q "3 snapshots" "$T/out" || fail "snapshots table"
ok "snapshot filters"

# ---- ls -----------------------------------------------------------------------------------------
run_pv 0 ls "$s1"
printf '%s\n' /link /one /sub /sub/deeper /sub/deeper/three /sub/two >"$T/want"
LC_ALL=C sort "$T/out" | diff - "$T/want" >/dev/null || fail "ls prints: $(cat "$T/out")"
run_pv 0 ls latest --host h1
grep -qx /four "$T/out" || fail "ls latest --host h1 is not the newest of h1"
run_pv 0 ls latest --host h2
[ "$(cat "$T/out")" = /bee ] || fail "ls latest --host h2: $(cat "$T/out")"
run_pv 0 ls latest --tag t1
! grep -qx /four "$T/out" || fail "ls latest --tag t1 picked the wrong snapshot"
run_pv 0 ls latest --path "$B"
[ "$(cat "$T/out")" = /bee ] || fail "ls latest --path B"
run_pv 0 ls "${s1:0:8}" /sub
printf '%s\n' /sub/deeper /sub/deeper/three /sub/two >"$T/want"
LC_ALL=C sort "$T/out" | diff - "$T/want" >/dev/null || fail "ls ID /sub prints: $(cat "$T/out")"
run_pv 0 ls "$s1" --long
grep -Eq '^-rw-r--r-- +[^ ]+ +[^ ]+ +4 [0-9-]+ [0-9:]+ /one$' "$T/out" || fail "ls --long: $(grep /one "$T/out")"
grep -Eq '^l.* /link -> one$' "$T/out" || fail "ls --long symlink: $(grep /link "$T/out")"
grep -Eq '^d.* /sub$' "$T/out" || fail "ls --long dir"
run_pv 0 --json ls "$s1"
[ "$(wc -l <"$T/out")" = 6 ] || fail "ls --json: one line per node"
jq -e -s 'all(has("path") and has("name") and has("type") and has("size") and has("mtime"))' "$T/out" >/dev/null \
    || fail "ls --json objects"
[ "$(jq -r 'select(.path == "/sub/two") | .type + " " + (.size | tostring)' "$T/out")" = "file 4" ] \
    || fail "ls --json /sub/two"
run_pv 1 ls "$s1" /nonexistent
one_line_error nonexistent
run_pv 1 ls ffffffffffff
one_line_error ffffffffffff
run_pv 1 ls not-hex
one_line_error
ok "ls: paths, latest with filters, prefixes, DIR, --long, --json, errors"

# ---- restore selection ------------------------------------------------------------------------
run_pv 0 restore latest --path "$B" --target "$T/rb"
tree_equal "$B" "$T/rb"
run_pv 0 restore "${s1:0:10}:/sub" --target "$T/rsub"
tree_equal "$A/sub" "$T/rsub" --no-atime
ok "restore latest --path, and ID:/dir"

# ---- backup and restore options ---------------------------------------------------------------
X=$T/excl
mkdir -p "$X/keep/skipdir" "$X/cache"
echo a >"$X/keep/a.txt"
echo b >"$X/keep/b.tmp"
echo c >"$X/keep/skipdir/c"
echo d >"$X/cache/d"
printf '# comment\n\n%s\n' "$X/keep/skipdir" >"$T/excludes"
run_pv 0 --json backup "$X" --exclude '*.tmp' --exclude "$X/cache" --exclude-file "$T/excludes" \
    --one-file-system --threads 1 --tag excl
run_pv 0 ls latest --tag excl
printf '%s\n' /keep /keep/a.txt >"$T/want"
LC_ALL=C sort "$T/out" | diff - "$T/want" >/dev/null || fail "excludes: ls shows $(cat "$T/out")"
run_pv 1 backup "$X" --exclude-file "$T/no-such-file"
one_line_error no-such-file
ok "--exclude (name and path patterns), --exclude-file, --one-file-system, --threads"

run_pv 0 restore latest --tag excl --target "$T/ow" --sparse --numeric-owner --threads 1
echo changed >"$T/ow/keep/a.txt"
run_pv 0 restore latest --tag excl --target "$T/ow" --overwrite never
[ "$(cat "$T/ow/keep/a.txt")" = changed ] || fail "--overwrite never replaced a file"
run_pv 0 restore latest --tag excl --target "$T/ow" --overwrite if-changed
[ "$(cat "$T/ow/keep/a.txt")" = a ] || fail "--overwrite if-changed kept a changed file"
echo changed >"$T/ow/keep/a.txt"
run_pv 0 restore latest --tag excl --target "$T/ow"
[ "$(cat "$T/ow/keep/a.txt")" = a ] || fail "--overwrite always (the default) kept a file"
run_pv 2 restore latest --target "$T/ow" --overwrite sometimes
ok "restore --overwrite never/if-changed/always, --sparse, --numeric-owner, --threads"

# ---- cat ----------------------------------------------------------------------------------------
run_pv 0 cat snapshot "${s1:0:8}"
jq -e --arg a "$A" '.paths == [$a]' "$T/out" >/dev/null || fail "cat snapshot"
tree=$(jq -r .tree "$T/out")
run_pv 0 cat snapshot latest
jq -e '.' "$T/out" >/dev/null || fail "cat snapshot latest"
run_pv 0 cat tree "$tree"
jq -e '[.nodes[].name] == ["link", "one", "sub"]' "$T/out" >/dev/null || fail "cat tree nodes: $(jq -c '[.nodes[].name]' "$T/out")"
jq -e '.nodes[] | select(.name == "one") | .content | length == 1' "$T/out" >/dev/null || fail "cat tree content"
idx=$(basename "$(find "$REPO/index" -type f | head -n 1)")
run_pv 0 cat index "$idx"
jq -e '.packs | length >= 1' "$T/out" >/dev/null || fail "cat index"
pack=$(jq -r '.packs[0].id' "$T/out")
run_pv 0 cat pack "${pack:0:12}"
jq -e '.blobs | length >= 1' "$T/out" >/dev/null || fail "cat pack"
key=$(basename "$(find "$REPO/keys" -type f | head -n 1)")
run_pv 0 cat key "${key:0:8}"
jq -e '.' "$T/out" >/dev/null || fail "cat key"
run_pv 0 --json cat config
[ "$(wc -l <"$T/out")" = 1 ] || fail "cat --json is one line"
run_pv 2 cat
run_pv 2 cat snapshot
run_pv 2 cat config extra
run_pv 2 cat nonsense x
run_pv 1 cat index 0123456789abcdef
one_line_error
ok "cat config, snapshot, tree, index, pack, key"

# ---- keys ---------------------------------------------------------------------------------------
run_pv 0 key list
[ "$(grep -c '^\*' "$T/out")" = 1 ] || fail "key list marks the key in use"
printf 'second password\n' >"$T/pw2"
run_pv 0 key add --new-password-file "$T/pw2"
run_pv 0 --json key list
[ "$(jq length "$T/out")" = 2 ] || fail "key add: 2 keys expected"
k2=$(jq -r '.[] | select(.current | not) | .id' "$T/out")
k1=$(jq -r '.[] | select(.current) | .id' "$T/out")
run_raw 0 -r "$REPO" --password-file "$T/pw2" snapshots
PODVAULT_NEW_PASSWORD="third password" run_pv 0 key add
PODVAULT_PASSWORD="third password" run_raw 0 -r "$REPO" snapshots
run_pv 1 key remove "$k1"
one_line_error
run_pv 0 key remove "${k2:0:8}"
run_raw 12 -r "$REPO" --password-file "$T/pw2" snapshots
ok "key add (file and environment), list, remove; the key in use cannot be removed"

run_pv 0 --json key list
[ "$(jq -r '.[] | select(.current) | "\(.opslimit) \(.memlimit)"' "$T/out")" = "2 65536" ] ||
    fail "init --kdf-memory 64K --kdf-passes 2: $(cat "$T/out")"
PODVAULT_NEW_PASSWORD="fourth password" run_pv 0 --json key add --kdf-passes 3 --kdf-memory 32K
k4=$(jq -r .id "$T/out")
run_pv 0 --json key list
[ "$(jq -r --arg k "$k4" '.[] | select(.id == $k) | "\(.opslimit) \(.memlimit)"' "$T/out")" = "3 32768" ] ||
    fail "key add --kdf-passes 3 --kdf-memory 32K: $(cat "$T/out")"
run_pv 2 key add --kdf-passes many
PODVAULT_NEW_PASSWORD="fifth" run_pv 1 key add --kdf-memory 1K
one_line_error
run_pv 0 --json key list
[ "$(jq length "$T/out")" = 3 ] || fail "a refused key add wrote a key file: $(cat "$T/out")"
run_pv 0 key remove "${k4:0:8}"
ok "init and key add take the key derivation's cost (--kdf-memory, --kdf-passes)"

printf 'new main password\n' >"$T/pw4"
run_pv 0 key passwd --new-password-file "$T/pw4"
run_raw 12 -r "$REPO" --password-file "$PW" snapshots
cp "$T/pw4" "$PW"
run_pv 0 --json key list
[ "$(jq length "$T/out")" = 2 ] || fail "passwd should replace one key: $(cat "$T/out")"
run_pv 2 key
run_pv 2 key remove
run_pv 2 key frob
ok "key passwd: the old password no longer opens the repository"

# ---- --json progress and summary --------------------------------------------------------------
mkdir -p "$T/prog"
rand_file "$T/prog/r" $((96 * 1024 * 1024))
for i in $(seq 1 200); do echo "$i" >"$T/prog/f$i"; done
run_pv 0 --json backup "$T/prog"
jq -e -s 'all(.message_type == "status" or .message_type == "error" or .message_type == "summary")' "$T/out" >/dev/null \
    || fail "backup --json: lines that are not JSON messages"
jq -e -s '[.[] | select(.message_type == "status")] | all(has("seconds_elapsed") and has("percent_done")
    and has("total_files") and has("files_done") and has("total_bytes") and has("bytes_done")
    and has("bytes_new") and has("errors"))' "$T/out" >/dev/null || fail "backup --json status fields"
tail -n 1 "$T/out" | jq -e 'all(.files_new, .files_changed, .files_unmodified, .dirs_new, .dirs_changed,
    .dirs_unmodified, .total_files, .total_bytes, .bytes_read, .blobs_new, .bytes_new, .bytes_stored,
    .errors, .files_changed_during, .duration, .seconds; type == "number")
    and (.snapshot_id | test("^[0-9a-f]{64}$")) and .incomplete == false' >/dev/null \
    || fail "backup --json summary fields: $(tail -n 1 "$T/out")"
[ "$(tail -n 1 "$T/out" | jq .total_files)" = 201 ] || fail "summary total_files"
status_lines=$(grep -c '"status"' "$T/out" || true)
run_pv 0 --json restore latest --target "$T/rprog"
jq -e -s 'all(.message_type == "status" or .message_type == "summary")' "$T/out" >/dev/null || fail "restore --json lines"
tail -n 1 "$T/out" | jq -e '.message_type == "summary" and .files == 201 and .errors == 0' >/dev/null \
    || fail "restore --json summary: $(tail -n 1 "$T/out")"
tree_equal "$T/prog" "$T/rprog"
ok "--json: every line is a message ($status_lines status lines in the backup), summaries complete"

# ---- exit 3: a file that cannot be read -------------------------------------------------------
mkdir -p "$T/part"
echo readable >"$T/part/ok"
echo secret >"$T/part/secret"
chmod 000 "$T/part/secret"
partial() { "$PODVAULT" -r "$REPO" --password-file "$PW" --json backup "$T/part" >"$T/out" 2>"$T/err"; }
if [ "$(id -u)" = 0 ]; then
    # root reads anything; without the DAC capabilities it is held to the file's mode.
    partial() {
        setpriv --bounding-set -dac_override,-dac_read_search \
            "$PODVAULT" -r "$REPO" --password-file "$PW" --json backup "$T/part" >"$T/out" 2>"$T/err"
    }
fi
partial
rc=$?
if [ "$rc" = 0 ] && [ "$(id -u)" = 0 ]; then
    note "could not make a file unreadable for root (setpriv); exit 3 not tested"
else
    [ "$rc" = 3 ] || fail "backup with an unreadable file: exit $rc, expected 3"
    jq -e -s --arg p "$T/part/secret" 'any(.message_type == "error" and .path == $p and (.error | length > 0))' "$T/out" >/dev/null \
        || fail "no JSON error line for the unreadable file: $(cat "$T/out")"
    tail -n 1 "$T/out" | jq -e '.incomplete == true and .errors >= 1' >/dev/null || fail "summary not incomplete"
    run_pv 0 --json snapshots
    jq -e '.[-1].incomplete == true' "$T/out" >/dev/null || fail "snapshot not marked incomplete"
    ok "unreadable file: exit 3, JSON error line, snapshot marked incomplete"
fi

# ---- --parent latest follows --host --------------------------------------------------------------
# A repository of its own: the snapshots above are counted by the tests before.
REPO=$T/parent-repo
run_pv 0 init
run_pv 0 --json backup "$A" --host p1
p1=$(tail -n 1 "$T/out" | jq -r .snapshot_id)
run_pv 0 --json backup "$B" --host p2
p2=$(tail -n 1 "$T/out" | jq -r .snapshot_id)
run_pv 0 --json backup "$B" --host p1 --parent latest
tail -n 1 "$T/out" | jq -e --arg p "$p1" '.parent == $p' >/dev/null ||
    fail "backup --host p1 --parent latest: parent should be p1's latest $p1, not $p2: $(tail -n 1 "$T/out")"
run_pv 1 backup "$B" --host nobody --parent latest
one_line_error
ok "backup --parent latest takes the newest snapshot of --host"
