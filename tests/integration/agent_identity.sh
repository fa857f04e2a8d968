#!/usr/bin/env bash
# agent_identity.sh - `podvault agent` with an AWS identity instead of keys, as IRSA gives one
# on EKS: the location names no credential Secret, the mounted credentials file does not exist,
# and the agent's environment has AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE. Its jobs inherit
# them and get credentials from an STS stand-in (tests/tools/pv_cloudstub.py), which also stands
# in front of the S3 server (Ceph RGW) and refuses any request without a live session token it
# handed out: the PodVolumeBackup completes, STS was asked, and no request was refused. Without
# the identity, the missing credentials file is the failed backup's reason.
# Runs when PV_TEST_S3 and the AWS_* keys are set (tests/s3-env.sh); says SKIP otherwise.
set -euo pipefail
src=${PV_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$src/tests/k8s/agent_lib.sh"
[ -n "${PV_TEST_S3:-}" ] && [ -n "${AWS_ACCESS_KEY_ID:-}" ] || skip "no S3 server: PV_TEST_S3 is not set"
case "$PV_TEST_S3" in s3:http://*) ;; *) skip "PV_TEST_S3 must be s3:http://host:port/bucket[/prefix]" ;; esac

agent_begin agent-identity
k8s_start "$tmp" || fail "the stand-in did not start"
s3=${PV_TEST_S3#s3:http://}
target=${s3%%/*} bucket=$(cut -d/ -f2 <<<"$s3") prefix=$(cut -d/ -f3- <<<"$s3")
prefix=${prefix:+$prefix/}agent-identity-$$-$RANDOM
KEY=$AWS_ACCESS_KEY_ID SECRET=$AWS_SECRET_ACCESS_KEY
on_exit "AWS_ACCESS_KEY_ID=$KEY AWS_SECRET_ACCESS_KEY=$SECRET AWS_REGION=us-east-1 \
    '$(dirname "$PODVAULT")/pv_objects' 's3:http://$target/$bucket/$prefix' rm-prefix '' >/dev/null 2>&1"

echo "jwt-$RANDOM" >"$tmp/jwt"
python3 "$src/tests/tools/pv_cloudstub.py" --target "$target" --access-key "$KEY" \
    --secret-key "$SECRET" --jwt-file "$tmp/jwt" --require-token --stats "$tmp/stub.json" \
    --max-seconds 300 >"$tmp/stub.out" 2>&1 &
on_exit "kill $!"
wait_for 10 grep -q '^listening' "$tmp/stub.out" || fail "the stub did not start: $(cat "$tmp/stub.out")"
port=$(sed -n 's/^listening 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$tmp/stub.out")

velero_setup "$src/deploy/agent/rbac.yaml"
velero_location default "config: {region: us-east-1, s3Url: \"http://127.0.0.1:$port\", s3ForcePathStyle: \"true\"}
  objectStorage: {bucket: $bucket, prefix: \"$prefix\"}"
bound_claim default data pv-data "hostPath: {path: /x}"
uid=$(mkpod src node-a '{name: data, persistentVolumeClaim: {claimName: data}}')
vol=$pods/$uid/volumes/kubernetes.io~hostpath/pv-data
mkdir -p "$vol"
head -c 200000 /dev/urandom >"$vol/a.bin"
echo hello >"$vol/b.txt"

# The agent's identity: IRSA's variables, no keys, no credentials file.
rm -f "$tmp/cloud"
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_SHARED_CREDENTIALS_FILE AWS_PROFILE
export HOME=$tmp AWS_EC2_METADATA_DISABLED=true
AWS_ROLE_ARN=arn:aws:iam::111122223333:role/podvault AWS_WEB_IDENTITY_TOKEN_FILE=$tmp/jwt \
    AWS_ENDPOINT_URL_STS=http://127.0.0.1:$port/ start_agent a node-a
create_pvb bk1 node-a src "$uid" data
wait_phase podvolumebackup bk1 Completed 120
python3 - "$tmp/stub.json" <<'PY' || fail "stub stats: $(cat "$tmp/stub.json")"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["sts"] >= 1 and s["s3_with_token"] >= 3 and s["s3_rejected"] == 0, s
PY
pass "IRSA: the agent's job got credentials from STS; every S3 request carried its session token"

# Without an identity: the reason.
start_agent b node-b
uid2=$(mkpod src2 node-b '{name: data, persistentVolumeClaim: {claimName: data}}')
mkdir -p "$pods/$uid2/volumes/kubernetes.io~hostpath/pv-data"
echo x >"$pods/$uid2/volumes/kubernetes.io~hostpath/pv-data/x"
create_pvb bk2 node-b src2 "$uid2" data
wait_phase podvolumebackup bk2 Failed 60
msg=$(field podvolumebackup bk2 .status.message)
[[ $msg == *"$tmp/cloud: No such file or directory"* ]] || fail "bk2: message '$msg'"
pass "no keys and no identity: the missing credentials file is the PodVolumeBackup's reason"
