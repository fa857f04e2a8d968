# s3-lock-lib.sh - helpers of the Object Lock tests (tests/integration/s3_lock*.sh), sourced after
# tests/integration/lib.sh and tests/s3-lib.sh. Not a test itself.
#
#   lock_require            s3_require, then point $REPO at a fresh prefix of the bucket
#                           $LOCK_BUCKET (default "lock-it", created with Object Lock when missing);
#                           on exit every version under the prefix is deleted where the server
#                           allows it (governance retention is bypassed; compliance versions stay
#                           until their date, and a later run's lock_sweep removes them)
#   lock_aws ARGS...        the AWS CLI against the test server (s3api ...)
#   lock_versions           every version and delete marker under $REPO's prefix, as JSON lines
#                           {key, version, latest, marker, time} (key relative to the prefix)
#   lock_retention KEY [V]  "MODE UNTIL" of a key (its version V), or "none"
#   lock_sweep PREFIX       deletes what it can of every version under PREFIX of the bucket

lock_aws() {
    AWS_EC2_METADATA_DISABLED=true aws --endpoint-url "http://$(s3_hostport)" --output json "$@"
}

lock_require() {
    need aws
    need jq
    s3_require
    LOCK_BUCKET=${LOCK_BUCKET:-lock-it}
    if ! lock_aws s3api head-bucket --bucket "$LOCK_BUCKET" >/dev/null 2>&1; then
        lock_aws s3api create-bucket --bucket "$LOCK_BUCKET" --object-lock-enabled-for-bucket \
            >/dev/null || fail "cannot create the bucket $LOCK_BUCKET with Object Lock"
    fi
    LOCK_PREFIX=it-$TEST_NAME-$(basename "$T" | tr -cd 'A-Za-z0-9.-')
    REPO=s3:http://$(s3_hostport)/$LOCK_BUCKET/$LOCK_PREFIX
    PV_CLEANUP=("${PV_CLEANUP[@]/s3_delete_prefix/}")
    PV_CLEANUP+=("lock_sweep $LOCK_PREFIX/")
    # What earlier runs of this test left (compliance versions outlive their run).
    lock_sweep "it-$TEST_NAME-" >/dev/null 2>&1 || true
}

# Pages of list-object-versions as {key, version, latest, marker, time} lines.
lock_list_raw() {
    local prefix=$1
    lock_aws s3api list-object-versions --bucket "$LOCK_BUCKET" --prefix "$prefix" |
        jq -c '((.Versions // [])[] | {key: .Key, version: .VersionId, latest: .IsLatest,
                                        marker: false, time: .LastModified}),
               ((.DeleteMarkers // [])[] | {key: .Key, version: .VersionId, latest: .IsLatest,
                                             marker: true, time: .LastModified})'
}

lock_versions() {
    lock_list_raw "$LOCK_PREFIX/" | jq -c --arg p "$LOCK_PREFIX/" '.key |= ltrimstr($p)'
}

# Version IDs may start with '-', which the AWS CLI takes for an option: version-level
# requests go through curl (s3_curl signs them).
lock_vurl() { # KEY (relative to the bucket) VERSION [QUERY-PREFIX]
    echo "http://$(s3_hostport)/$LOCK_BUCKET/$1?${3:-}versionId=$(jq -rn --arg v "$2" '$v | @uri')"
}

lock_retention() {
    local key=$1 v=${2:-} out
    if [ -n "$v" ]; then
        out=$(s3_curl "$(lock_vurl "$LOCK_PREFIX/$key" "$v" 'retention=&')")
    else
        out=$(s3_curl "http://$(s3_hostport)/$LOCK_BUCKET/$LOCK_PREFIX/$key?retention=")
    fi
    case "$out" in
    *"<Retention>"*)
        echo "$(sed -n 's/.*<Mode>\([A-Z]*\)<.*/\1/p' <<<"$out") $(sed -n 's/.*<RetainUntilDate>\([^<]*\)<.*/\1/p' <<<"$out")" ;;
    *) echo none ;;
    esac
}

# lock_delete_version KEY VERSION [HEADER]: the HTTP status of DELETE ?versionId (KEY relative
# to the repository's prefix).
lock_delete_version() {
    local h=()
    [ -n "${3:-}" ] && h=(-H "$3")
    s3_curl -X DELETE "${h[@]}" -o "$T/delete.out" -w '%{http_code}' "$(lock_vurl "$LOCK_PREFIX/$1" "$2")"
}

lock_sweep() {
    local line key v
    lock_list_raw "$1" | while read -r line; do
        key=$(jq -r .key <<<"$line")
        v=$(jq -r .version <<<"$line")
        s3_curl -X DELETE -H "x-amz-bypass-governance-retention: true" -o /dev/null \
            "$(lock_vurl "$key" "$v")" || true
    done
    return 0
}
