#!/bin/bash
# azure_identity.sh - Microsoft Entra ID tokens (backend/azure_token.c, through
# tests/tools/pv_azure_token) against the stand-ins of tests/tools/pv_cloudstub.py on 127.0.0.1:
#  - client secret (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET at AZURE_AUTHORITY_HOST);
#    a wrong secret, an unknown client and an unknown tenant fail with Entra ID's error code and
#    description (AADSTS...);
#  - workload identity (AZURE_FEDERATED_TOKEN_FILE): tokens that live 3 s, refreshed 2 s before
#    they expire, over 4 gets 1.2 s apart while the token file is rewritten (the stand-in accepts
#    only its current content): new tokens are fetched, so the file is read again each time;
#  - managed identity (no tenant: IMDS with "Metadata: true", the stand-in refuses it without),
#    at AZURE_POD_IDENTITY_AUTHORITY_HOST as azidentity reads it.
# Needs no S3 server: the stub's S3 proxy is not used.
. "$(dirname "$0")/lib.sh" || exit 1
need python3
need jq
TOOL=$PV_BUILD_DIR/pv_azure_token
[ -x "$TOOL" ] || fail "pv_azure_token not built"
STUB=${PV_SOURCE_DIR:-$(dirname "$0")/../..}/tests/tools/pv_cloudstub.py
unset AZURE_TENANT_ID AZURE_CLIENT_ID AZURE_CLIENT_SECRET AZURE_FEDERATED_TOKEN_FILE AZURE_AUTHORITY_HOST

out=$T/stub.out
echo "assertion-1" >"$T/fed"
python3 "$STUB" --access-key unused --secret-key unused --lifetime 3 --tenant tenant-1 \
    --client-id client-1 --client-secret secret-1 --assertion-file "$T/fed" --max-seconds 120 \
    --stats "$T/stats.json" >"$out" 2>&1 &
PV_CLEANUP+=("kill $! 2>/dev/null")
listening_port port "$out" pv_cloudstub

# run_tool CODE ARGS...: the tool, exit CODE expected; output in $T/out and $T/err.
run_tool() {
    local want=$1 rc
    shift
    timeout 60 "$TOOL" "$@" >"$T/out" 2>"$T/err"
    rc=$?
    [ "$rc" = "$want" ] || fail "pv_azure_token $* exited $rc, expected $want: $(cat "$T/err")"
}

export AZURE_AUTHORITY_HOST=http://127.0.0.1:$port/ AZURE_TENANT_ID=tenant-1 AZURE_CLIENT_ID=client-1
export AZURE_CLIENT_SECRET=secret-1 PODVAULT_AWS_REFRESH_WINDOW_S=2
run_tool 0
grep -q '^entra-' "$T/out" || fail "no Entra ID token: $(cat "$T/out")"
AZURE_CLIENT_SECRET=wrong run_tool 1
grep -q "invalid_client: AADSTS7000215: Invalid client secret provided" "$T/err" || fail "wrong secret: $(cat "$T/err")"
AZURE_CLIENT_ID=nobody run_tool 1
grep -q "unauthorized_client: AADSTS700016" "$T/err" || fail "unknown client: $(cat "$T/err")"
AZURE_TENANT_ID=elsewhere run_tool 1
grep -q "AADSTS90002" "$T/err" || fail "unknown tenant: $(cat "$T/err")"
AZURE_FEDERATED_TOKEN_FILE=$T/fed run_tool 1
grep -q "one of AZURE_CLIENT_SECRET and AZURE_FEDERATED_TOKEN_FILE" "$T/err" || fail "secret and file: $(cat "$T/err")"
ok "client secret: a token; a wrong secret, client or tenant fails with Entra ID's reason"

unset AZURE_CLIENT_SECRET
export AZURE_FEDERATED_TOKEN_FILE=$T/fed
(for i in $(seq 2 12); do sleep 0.5; echo "assertion-$i" >"$T/fed.new" && mv "$T/fed.new" "$T/fed"; done) &
PV_CLEANUP+=("kill $! 2>/dev/null")
run_tool 0 --count 4 --sleep-ms 1200
tokens=$(grep -c '^entra-' "$T/out") distinct=$(grep '^entra-' "$T/out" | sort -u | wc -l)
fetches=$(sed -n 's/^fetches //p' "$T/out")
[ "$tokens" = 4 ] || fail "expected 4 tokens: $(cat "$T/out")"
[ "$distinct" -ge 2 ] && [ "$fetches" -ge 2 ] || fail "no refresh over 3.6 s of 3 s tokens: $(cat "$T/out")"
ok "workload identity: $fetches tokens fetched over 3.6 s, the rotating token file read again each time"
echo "not-the-assertion" >"$T/other"
AZURE_FEDERATED_TOKEN_FILE=$T/other run_tool 1
grep -q "invalid_client: AADSTS700024" "$T/err" || fail "wrong assertion: $(cat "$T/err")"
AZURE_FEDERATED_TOKEN_FILE=$T/missing run_tool 1
grep -q "$T/missing" "$T/err" || fail "missing token file: $(cat "$T/err")"
ok "a wrong or missing federated token fails with the reason"

unset AZURE_TENANT_ID AZURE_FEDERATED_TOKEN_FILE AZURE_CLIENT_ID
AZURE_POD_IDENTITY_AUTHORITY_HOST=http://127.0.0.1:$port run_tool 0
grep -q '^msi-' "$T/out" || fail "no managed identity token: $(cat "$T/out")"
[ "$(jq -r .msi "$T/stats.json")" -ge 1 ] || fail "the stand-in gave no managed identity token"
ok "managed identity (IMDS, Metadata: true)"
