#!/bin/bash
# azure_entra.sh - the Azure backend authorized by Microsoft Entra ID bearer tokens, end to end:
# Azurite on 127.0.0.1 over HTTPS with --oauth basic (it refuses Bearer over HTTP, and checks each
# token's audience, issuer, nbf and exp: an expired token fails) and the Entra ID stand-in of
# tests/tools/pv_cloudstub.py (--jwt: tokens carrying those claims) for the client secret flow.
#  - init, backup and restore byte for byte with AZURE_STORAGE_ACCOUNT and AZURE_TENANT_ID /
#    AZURE_CLIENT_ID / AZURE_CLIENT_SECRET, no key and no SAS; tokens live 3 s and are fetched
#    again 2 s before they expire, so a backup of several seconds only works by refreshing them
#    (the stand-in's count shows the refreshes);
#  - a wrong client secret fails at once with Entra ID's AADSTS code, before any request to the
#    store;
#  - a self-signed certificate that is not trusted fails (TLS is verified), and --cacert trusts it.
# Needs Azurite installed in tests/azure (tests/azure-env.sh does it); says SKIPPED otherwise.
. "$(dirname "$0")/lib.sh" || exit 1
. "$(dirname "$0")/../s3-lib.sh" || exit 1
need python3
need openssl
need curl
: "${T:?}"
SRC=${PV_SOURCE_DIR:-$(dirname "$0")/../..}
AZURITE=$SRC/tests/azure/node_modules/.bin/azurite-blob
if [ ! -x "$AZURITE" ]; then
    echo "SKIPPED [$TEST_NAME]: Azurite is not installed in tests/azure (tests/azure-env.sh installs it)"
    exit 0
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# ---- Azurite over HTTPS with OAuth ----
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$T/key.pem" -out "$T/cert.pem" >/dev/null 2>&1 ||
    fail "openssl could not make a certificate"
port=$(free_port)
"$AZURITE" --blobHost 127.0.0.1 --blobPort "$port" -l "$T/azurite" --oauth basic \
    --cert "$T/cert.pem" --key "$T/key.pem" >"$T/azurite.log" 2>&1 </dev/null &
PV_CLEANUP+=("kill $! 2>/dev/null")
up=
for _ in $(seq 1 60); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 --cacert "$T/cert.pem" \
        "https://127.0.0.1:$port/devstoreaccount1?comp=list") || true
    [[ "$code" =~ ^[2-4][0-9][0-9]$ ]] && { up=1; break; }
    sleep 0.5
done
[ -n "$up" ] || fail "Azurite (HTTPS, OAuth) did not answer in 30 s: $(tail -n 5 "$T/azurite.log")"

# ---- the Entra ID stand-in ----
python3 "$SRC/tests/tools/pv_cloudstub.py" --access-key unused --secret-key unused --jwt \
    --lifetime 3 --tenant tenant-1 --client-id client-1 --client-secret secret-1 \
    --max-seconds 300 --stats "$T/stats.json" >"$T/stub.out" 2>&1 &
PV_CLEANUP+=("kill $! 2>/dev/null")
sport=
for _ in $(seq 1 100); do
    sport=$(sed -n 's/^listening 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$T/stub.out")
    [ -n "$sport" ] && break
    sleep 0.1
done
[ -n "$sport" ] || fail "pv_cloudstub did not start: $(cat "$T/stub.out")"
jwts() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("entra", 0))' "$T/stats.json" 2>/dev/null || echo 0; }

unset AZURE_STORAGE_CONNECTION_STRING AZURE_STORAGE_KEY AZURE_STORAGE_SAS_TOKEN \
    AZURE_FEDERATED_TOKEN_FILE AZURE_STORAGE_AUTH_MODE
export AZURE_STORAGE_ACCOUNT=devstoreaccount1
export PODVAULT_AZURE_ENDPOINT=https://127.0.0.1:$port/devstoreaccount1
export AZURE_TENANT_ID=tenant-1 AZURE_CLIENT_ID=client-1 AZURE_CLIENT_SECRET=secret-1
export AZURE_AUTHORITY_HOST=http://127.0.0.1:$sport/
export PODVAULT_AWS_REFRESH_WINDOW_S=2
# Small blocks and one upload at a time: the backup takes several token lifetimes.
export PODVAULT_AZURE_BLOCK_SIZE=65536 PODVAULT_S3_UPLOADS=1
REPO=azure:entra-it/repo
printf '#!/bin/sh\nexec timeout -k 10 %s "%s" "$@"\n' "${PV_RUN_LIMIT:-300}" "$PODVAULT" >"$T/podvault-timed"
chmod +x "$T/podvault-timed"
PODVAULT=$T/podvault-timed

# ---- TLS is verified: the self-signed certificate is refused until trusted ----
run_pv 1 init
grep -qi 'certificate' "$T/err" || fail "an untrusted certificate was not refused: $(cat "$T/err")"
ok "an untrusted certificate is refused: $(head -c 200 "$T/err")"
export PODVAULT_S3_CACERT=$T/cert.pem

# ---- a wrong client secret fails at once with Entra ID's reason ----
start=$(date +%s%N)
AZURE_CLIENT_SECRET=wrong run_pv 1 init
ms=$((($(date +%s%N) - start) / 1000000))
grep -q 'AADSTS7000215' "$T/err" || fail "wrong secret: $(cat "$T/err")"
[ $ms -le 10000 ] || fail "a wrong secret took $ms ms to fail"
ok "a wrong client secret fails in $ms ms: $(head -c 200 "$T/err")"

# ---- init, a backup over several token lifetimes, restore byte for byte ----
S=$T/src
s3_make_tree "$S"
head -c 3000000 /dev/urandom >"$S/big"
run_pv 0 init
before=$(jwts)
start=$(date +%s)
run_pv 0 --json backup "$S"
took=$(($(date +%s) - start))
tail -n 1 "$T/out" | jq -e '.message_type == "summary" and .incomplete == false and .errors == 0' >/dev/null ||
    fail "backup summary: $(tail -n 1 "$T/out")"
fetched=$(($(jwts) - before))
[ "$fetched" -ge 1 ] || fail "the backup fetched no token"
# Tokens live 3 s and are renewed 2 s before expiry: a backup of N seconds needs about N of them.
if [ "$took" -ge 3 ]; then
    [ "$fetched" -ge 2 ] || fail "a ${took} s backup fetched only $fetched token(s): no refresh"
fi
run_pv 0 restore latest --target "$T/restore"
tree_equal "$S" "$T/restore"
run_pv 0 check --read-data
grep -q "no errors" "$T/out" || fail "check --read-data: $(cat "$T/out")"
ok "Entra ID (client secret): backup of ${took} s with $fetched tokens, restore byte for byte, check clean"
"$PV_BUILD_DIR/pv_objects" "$REPO" rm-prefix '' >/dev/null 2>&1 || true

