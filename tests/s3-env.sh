#!/bin/bash
# s3-env.sh - makes sure a real S3 server (Ceph RGW, which checks SigV4 signatures) answers on
# 127.0.0.1:7480, creates the test bucket, and prints the environment the S3 tests read:
#
#   eval "$(tests/s3-env.sh)"      # or:  . tests/s3-env.sh
#   (cd build && ctest -R backend --output-on-failure)
#
# RGW comes from ../shared/tools/ceph-rgw next to the repository (installs Ceph 16 from Debian
# the first time; about 20 s and 250 MB of RAM to start). Progress goes to stderr; only the
# export lines go to stdout. PV_SHARED_DIR overrides where ../shared is; PV_S3_BUCKET the bucket;
# PV_S3_START_TIMEOUT (seconds, default 1800) bounds the install and start.

# Sourced: run as a program and take its exports, without changing the caller's shell options.
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
  _pv_s3_env=$(bash "${BASH_SOURCE[0]}") && eval "$_pv_s3_env"
  _pv_rc=$?
  unset _pv_s3_env
  return $_pv_rc
fi

set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

find_shared() {
  if [[ -n "${PV_SHARED_DIR:-}" ]]; then echo "$PV_SHARED_DIR"; return; fi
  if [[ -d "$root/../shared/tools/ceph-rgw" ]]; then echo "$root/../shared"; return; fi
  # A git worktree lives elsewhere: ../shared is next to the main checkout.
  local common
  common=$(git -C "$root" rev-parse --path-format=absolute --git-common-dir 2>/dev/null) || return 1
  echo "$(dirname "$common")/../shared"
}

shared=$(find_shared) || true
ensure="${shared:-}/tools/ceph-rgw/ensure-rgw.sh"
if [[ ! -f "$ensure" ]]; then
  echo "s3-env.sh: $ensure not found (set PV_SHARED_DIR to the shared/ folder)" >&2
  exit 1
fi

echo "s3-env.sh: making sure Ceph RGW runs on 127.0.0.1:7480 ..." >&2
# Bounded: the first run downloads Ceph, but a hung install or start must not hang the tests.
timeout -k 10 "${PV_S3_START_TIMEOUT:-1800}" bash "$ensure" >&2

endpoint=http://127.0.0.1:7480
key=testkey
secret=testsecret
bucket=${PV_S3_BUCKET:-podvault-test}
empty_sha=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
# 200: created; 409 BucketAlreadyOwnedByYou: there from an earlier run.
code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT --aws-sigv4 'aws:amz:us-east-1:s3' \
  --user "$key:$secret" -H "x-amz-content-sha256: $empty_sha" -m 30 "$endpoint/$bucket")
if [[ "$code" != 200 && "$code" != 409 ]]; then
  echo "s3-env.sh: creating bucket $bucket answered HTTP $code" >&2
  exit 1
fi
echo "s3-env.sh: bucket $bucket ready" >&2

cat <<EOF
export PV_TEST_S3=s3:$endpoint/$bucket/tests
export AWS_ACCESS_KEY_ID=$key
export AWS_SECRET_ACCESS_KEY=$secret
export AWS_REGION=us-east-1
EOF
