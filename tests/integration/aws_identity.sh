#!/bin/bash
# aws_identity.sh - the AWS credentials chain against stand-ins on 127.0.0.1
# (tests/tools/pv_cloudstub.py: an STS, an IMDSv2, an EKS Pod Identity endpoint) in front of the
# real S3 server (Ceph RGW). RGW accepts and ignores a session token it did not issue, so the
# stub is also a checking proxy: with --require-token every S3 request must carry, signed, an
# x-amz-security-token the stub handed out and that has not expired, or the stub refuses it
# (the request never reaches RGW). The stub hands out RGW's own keys with its tokens.
#  - IRSA (web identity): credentials that live 4 s, refreshed 2 s before expiry, over a backup
#    that lasts longer (every upload's answer held back): the backup finishes, several sets were handed
#    out and used, no request was refused; the token file is rewritten during the backup (the
#    STS accepts only its current content), so it is read again at each refresh; restore byte
#    for byte.
#  - a refused role fails with STS's code and message; a wrong token file with STS's reason.
#  - EKS Pod Identity (the Authorization token from a file), and a wrong token.
#  - EC2 instance metadata (IMDSv2: the stub serves credentials only with a session token).
#  - AWS_ENDPOINT_URL_S3 replaces the location's scheme://host[:port].
#  - a location with no region finds the bucket's region (the stub answers requests signed for
#    another region as AWS does: 301 with x-amz-bucket-region, 400 AuthorizationHeaderMalformed).
. "$(dirname "$0")/lib.sh" || exit 1
. "$(dirname "$0")/../s3-lib.sh" || exit 1
need jq
need python3
s3_require
STUB=$PV_SOURCE_DIR/tests/tools/pv_cloudstub.py
[ -f "$STUB" ] || STUB=$(dirname "$0")/../tools/pv_cloudstub.py
KEY=$AWS_ACCESS_KEY_ID SECRET=$AWS_SECRET_ACCESS_KEY
# The cleanup (s3_delete_prefix) needs the keys and the server's own location back.
PV_CLEANUP=("export AWS_ACCESS_KEY_ID=$KEY AWS_SECRET_ACCESS_KEY=$SECRET REPO=$REPO" "${PV_CLEANUP[@]}")
# Nothing of the test runner's own identity reaches podvault: only what each case gives.
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE AWS_SHARED_CREDENTIALS_FILE \
    AWS_ROLE_ARN AWS_WEB_IDENTITY_TOKEN_FILE AWS_CONTAINER_CREDENTIALS_FULL_URI \
    AWS_CONTAINER_AUTHORIZATION_TOKEN AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE AWS_ENDPOINT_URL_STS
export HOME=$T/home AWS_EC2_METADATA_DISABLED=true
mkdir -p "$HOME"

# stub VAR ARGS...: starts the stub; its port goes into $VAR, its stats file is $T/VAR.json.
stub() {
    local var=$1 out port
    shift
    out=$T/stub-$var.out
    python3 "$STUB" --target "$TARGET" --access-key "$KEY" --secret-key "$SECRET" \
        --stats "$T/$var.json" --max-seconds 300 "$@" >"$out" 2>&1 &
    PV_CLEANUP+=("kill $! 2>/dev/null")
    listening_port port "$out" pv_cloudstub
    printf -v "$var" '%s' "$port"
}
stat_of() { jq -r "$2" "$T/$1.json"; }
S3REPO=$REPO TARGET=$(s3_hostport)
via() { REPO="s3:http://127.0.0.1:$1/$(s3_path)"; }

# ---- IRSA: web identity, credentials expiring during a backup ----
echo "jwt-$RANDOM-0" >"$T/jwt"
stub STS --jwt-file "$T/jwt" --lifetime 4 --require-token --delay-ms 900 \
    --refuse-role arn:aws:iam::111122223333:role/denied
export AWS_ROLE_ARN=arn:aws:iam::111122223333:role/podvault AWS_WEB_IDENTITY_TOKEN_FILE=$T/jwt
export AWS_ENDPOINT_URL_STS=http://127.0.0.1:$STS/ AWS_REGION=us-east-1
export PODVAULT_AWS_REFRESH_WINDOW_S=2 PODVAULT_S3_UPLOADS=1
via "$STS"
# A small tree (s3_make_tree's 500 files take long to write): packs of 4 MiB, a few files.
S=$T/src
mkdir -p "$S/d"
rand_file "$S/big" $((13 * 1024 * 1024 + 4321))
text_file "$S/d/words" $((1024 * 1024))
for i in $(seq 1 40); do echo "file $i" >"$S/d/f$i"; done
: >"$S/empty"
run_pv 0 init --pack-size "$S3_PACK_SIZE"
# The kubelet rewrites the projected token now and then: so does this loop, during the backup.
(for i in $(seq 1 60); do sleep 0.5; echo "jwt-$RANDOM-$i" >"$T/jwt.new" && mv "$T/jwt.new" "$T/jwt"; done) &
rot=$!
PV_CLEANUP+=("kill $rot 2>/dev/null")
start=$(date +%s)
run_pv 0 --json backup "$S"
took=$(($(date +%s) - start))
kill $rot 2>/dev/null
tail -n 1 "$T/out" | jq -e '.message_type == "summary" and .errors == 0' >/dev/null ||
    fail "backup summary: $(tail -n 1 "$T/out")"
[ "$took" -ge 5 ] || fail "the backup took ${took}s, not longer than the credentials live (4s): the test proves nothing"
issued=$(stat_of STS .issued) used=$(stat_of STS '.tokens_used | length')
[ "$(stat_of STS .s3_rejected)" = 0 ] || fail "the stub refused requests: $(stat_of STS .errors)"
[ "$(stat_of STS .s3)" = "$(stat_of STS .s3_with_token)" ] || fail "requests without a valid token"
[ "$issued" -ge 3 ] || fail "only $issued credentials handed out over a ${took}s backup"
[ "$used" -ge 3 ] || fail "only $used session tokens used over a ${took}s backup"
ok "IRSA: a ${took}s backup with 4s credentials: $issued handed out by STS, $used used, $(stat_of STS .s3) requests each with a live signed token"
run_pv 0 restore latest --target "$T/restore"
tree_equal "$S" "$T/restore"
ok "restore byte for byte with web identity credentials"

export AWS_ROLE_ARN=arn:aws:iam::111122223333:role/denied
run_pv 1 snapshots
errors_name "AccessDenied: Not authorized to perform sts:AssumeRoleWithWebIdentity"
errors_name "role/denied"
export AWS_ROLE_ARN=arn:aws:iam::111122223333:role/podvault
echo "not-the-token" >"$T/other-jwt"
AWS_WEB_IDENTITY_TOKEN_FILE=$T/other-jwt run_pv 1 snapshots
errors_name "InvalidIdentityToken"
ok "a refused role and a wrong web identity token fail with STS's code and message"
unset AWS_ROLE_ARN AWS_WEB_IDENTITY_TOKEN_FILE AWS_ENDPOINT_URL_STS PODVAULT_AWS_REFRESH_WINDOW_S

# ---- EKS Pod Identity ----
podtok=pod-secret-$RANDOM$RANDOM
stub POD --pod-token "$podtok" --require-token
echo "$podtok" >"$T/podtok"
export AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:$POD/v1/credentials
export AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=$T/podtok
via "$POD"
run_pv 0 --json snapshots
jq -e 'length == 1' "$T/out" >/dev/null || fail "snapshots through Pod Identity: $(cat "$T/out")"
[ "$(stat_of POD .pod)" -ge 1 ] && [ "$(stat_of POD .s3_rejected)" = 0 ] && [ "$(stat_of POD .s3_with_token)" -ge 1 ] ||
    fail "Pod Identity stats: $(cat "$T/POD.json")"
echo wrong >"$T/podtok"
run_pv 1 snapshots
errors_name "AccessDeniedException: invalid authorization token"
ok "EKS Pod Identity: credentials for the file's token; a wrong token fails with the endpoint's reason"
unset AWS_CONTAINER_CREDENTIALS_FULL_URI AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE

# ---- EC2 instance metadata, IMDSv2 ----
stub IMDS --require-token
unset AWS_EC2_METADATA_DISABLED
export AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:$IMDS
via "$IMDS"
run_pv 0 --json snapshots
jq -e 'length == 1' "$T/out" >/dev/null || fail "snapshots through IMDS: $(cat "$T/out")"
[ "$(stat_of IMDS .imds)" -ge 1 ] && [ "$(stat_of IMDS .s3_rejected)" = 0 ] ||
    fail "IMDS stats: $(cat "$T/IMDS.json")"
ok "EC2 instance metadata (IMDSv2, session token first)"
unset AWS_EC2_METADATA_SERVICE_ENDPOINT
export AWS_EC2_METADATA_DISABLED=true

# ---- the bucket's region ----
export AWS_ACCESS_KEY_ID=$KEY AWS_SECRET_ACCESS_KEY=$SECRET
stub REG --bucket-region eu-west-3
via "$REG"
AWS_REGION=us-east-1 run_pv 1 snapshots
errors_name "AuthorizationHeaderMalformed"
unset AWS_REGION AWS_DEFAULT_REGION PODVAULT_S3_REGION
run_pv 0 --json snapshots
jq -e 'length == 1' "$T/out" >/dev/null || fail "snapshots with the region found: $(cat "$T/out")"
[ "$(stat_of REG .redirects)" -ge 2 ] || fail "no redirect seen: $(cat "$T/REG.json")"
ok "a location with no region asks the bucket (eu-west-3) instead of assuming us-east-1"

# ---- AWS_ENDPOINT_URL_S3 replaces the location's host (nothing listens on port 1) ----
REPO="s3:http://127.0.0.1:1/$(s3_path)"
AWS_ENDPOINT_URL_S3=http://127.0.0.1:$REG run_pv 0 --json snapshots
jq -e 'length == 1' "$T/out" >/dev/null || fail "snapshots through AWS_ENDPOINT_URL_S3: $(cat "$T/out")"
ok "AWS_ENDPOINT_URL_S3 replaces the location's scheme and host"
REPO=$S3REPO
