#!/usr/bin/env bash
# version.sh - the version is written once, project(VERSION) in CMakeLists.txt, and everything
# else follows it (README "Releasing"): the program's `version`, the image tag both kustomizations
# set, the Dockerfile's PODVAULT_VERSION (its label; the image build also checks the program), and
# every podvault:X.Y.Z the README and the docs show.
src=${PV_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$src/tests/integration/lib.sh" || exit 1
: "${T:?lib.sh did not set the work directory}"
. "$src/tests/k8s/lib.sh" || exit 1

v=$(project_version "$src")
[[ "$v" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || fail "no project(podvault VERSION X.Y.Z) in CMakeLists.txt: '$v'"

run_raw 0 version
grep -q "^podvault $v " "$T/out" || fail "podvault version prints $(cat "$T/out"), not $v"
run_raw 0 version --json
[ "$(jq -r .version "$T/out")" = "$v" ] || fail "podvault version --json: $(cat "$T/out"), not $v"
ok "podvault version is the project's $v"

for k in deploy/agent/kustomization.yaml deploy/maintenance/kustomization.yaml; do
    tag=$(sed -n 's/^ *newTag: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$src/$k")
    [ "$tag" = "$v" ] || fail "$k: newTag '$tag', the project's version is $v (README \"Releasing\")"
done
ok "the kustomizations tag the image $v"

arg=$(sed -n 's/^ARG PODVAULT_VERSION=\(.*\)$/\1/p' "$src/deploy/Dockerfile")
[ "$arg" = "$v" ] || fail "deploy/Dockerfile: PODVAULT_VERSION '$arg', the project's version is $v"
ok "the Dockerfile labels the image $v"

# Every example of the image with a version names this one.
stale=$(grep -rnoE 'podvault:[0-9]+\.[0-9]+\.[0-9]+' "$src/README.md" "$src/docs" "$src/deploy" |
    grep -v ":podvault:$v\$" || true)
[ -z "$stale" ] || fail "an image of another version than $v: $stale"
ok "README, docs/ and deploy/ show the image podvault:$v only"
