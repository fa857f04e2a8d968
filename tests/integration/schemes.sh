#!/bin/bash
# schemes.sh - a location whose scheme podvault does not know ("gs:", "b2:", "swift:") or that
# mistypes one ("s3;http://...", "s3//...") is refused by every command with one line naming the
# schemes there are, and leaves nothing behind: no directory named after it appears in the
# current directory. "./gs:odd" is a directory and works.
. "$(dirname "$0")/lib.sh" || exit 1
mkdir "$T/cwd"
cd "$T/cwd" || fail "cd"
for loc in "gs:bucket/repo" "b2:bucket" "swift:container/p" "s3;http://127.0.0.1:7480/bucket" \
    "S3:http://127.0.0.1:7480/bucket"; do
    for cmd in init snapshots; do
        REPO=$loc run_pv 1 $cmd
        one_line_error "unknown repository scheme"
        grep -q "s3:http\[s\]://host/bucket" "$T/err" || fail "$loc: the error lists no scheme: $(cat "$T/err")"
    done
    [ -z "$(ls -A "$T/cwd")" ] || fail "$loc: left $(ls -A "$T/cwd") in the current directory"
done
ok "unknown and mistyped schemes are refused with the known ones, nothing created"
REPO=./gs:odd run_pv 0 init
[ -f "$T/cwd/gs:odd/config" ] || fail "./gs:odd is not a repository directory"
ok "./gs:odd is a directory"
