# s3-lib.sh - helpers of the S3 integration tests (tests/integration/s3*.sh), sourced after
# tests/integration/lib.sh. Not a test itself (it lives outside tests/integration for that).
#
#   s3_require              skip the test (exit 0, "SKIPPED") unless PV_TEST_S3 and AWS_* are set;
#                           else point $REPO at a fresh prefix (deleted again on exit) and bound
#                           every podvault run to $PV_RUN_LIMIT seconds (default 300)
#   s3_make_tree DIR        the test tree: empty files and an empty directory, a random file
#                           larger than S3_PACK_SIZE, many small files, compressible text, a link
#   s3_proxy VAR ARGS...    start pv_faultproxy in front of the server (ARGS: its options); the
#                           repository location through it goes into $VAR, its pid into $VAR_pid
#   s3_keys                 the keys under $REPO (relative to it); s3_delete_prefix deletes them
#   s3_gets LOG [OFFSET]    GET requests for index files, snapshots and packs in a proxy --log
#                           (from byte OFFSET on), one path a line; existence probes (the
#                           one-byte GET before an upload) are left out
#   s3_probes LOG [OFFSET]  those existence probes, for packs, index files and snapshots

S3_PACK_SIZE=4M

s3_require() {
    if [ -z "${PV_TEST_S3:-}" ] || [ -z "${AWS_ACCESS_KEY_ID:-}" ]; then
        echo "SKIPPED [$TEST_NAME]: no S3 server: PV_TEST_S3 is not set (eval \"\$(tests/s3-env.sh)\" starts Ceph RGW and sets it)"
        exit 0
    fi
    case "$PV_TEST_S3" in
    s3:http://*) ;;
    *) fail "PV_TEST_S3 must be s3:http://host:port/bucket[/prefix], not $PV_TEST_S3" ;;
    esac
    REPO=$PV_TEST_S3/it-$TEST_NAME-$(basename "$T" | tr -cd 'A-Za-z0-9.-')
    PV_CLEANUP+=("s3_delete_prefix")
    local limit=${PV_RUN_LIMIT:-300}
    printf '#!/bin/sh\nexec timeout -k 10 %s "%s" "$@"\n' "$limit" "$PODVAULT" >"$T/podvault-timed"
    chmod +x "$T/podvault-timed"
    PODVAULT=$T/podvault-timed
}

# host:port and bucket/prefix of $REPO.
s3_hostport() { local r=${REPO#s3:http://}; echo "${r%%/*}"; }
s3_path() { local r=${REPO#s3:http://}; echo "${r#*/}"; }

# s3_keys: the keys under $REPO's prefix, one a line, relative to it (ListObjectsV2, up to 50
# pages of 1000). s3_delete_prefix: deletes them all, so the shared server does not fill up
# with test repositories; it never fails (it runs from exit traps, also under set -e).
s3_curl() {
    curl -s -m 30 --aws-sigv4 "aws:amz:${AWS_REGION:-us-east-1}:s3" \
        --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
        -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" "$@"
}

s3_keys() {
    local base path bucket prefix page token="" query
    base=http://$(s3_hostport)
    path=$(s3_path)
    bucket=${path%%/*}
    prefix=${path#*/}/
    for _ in $(seq 1 50); do
        # The query is signed as written: sorted, with the values' slashes (and more) encoded.
        query="list-type=2&max-keys=1000&prefix=${prefix//\//%2F}"
        [ -n "$token" ] && query="continuation-token=$(jq -rn --arg t "$token" '$t | @uri')&$query"
        page=$(s3_curl "$base/$bucket?$query") || return 0
        grep -o '<Key>[^<]*</Key>' <<<"$page" | sed "s|<Key>$prefix\(.*\)</Key>|\1|" || true
        token=$(grep -o '<NextContinuationToken>[^<]*' <<<"$page" | sed 's/<NextContinuationToken>//') || true
        [ -n "$token" ] || return 0
    done
}

s3_delete_prefix() {
    local base path k
    base=http://$(s3_hostport)
    path=$(s3_path)
    for k in $(s3_keys); do s3_curl -X DELETE -o /dev/null "$base/$path/$k" || true; done
}

s3_make_tree() {
    local d=$1 i f
    mkdir -p "$d/big" "$d/text/b" "$d/empty-dir" "$d/small"
    rand_file "$d/big/random" $((13 * 1024 * 1024 + 12345)) # > S3_PACK_SIZE: several packs
    text_file "$d/text/b/words" $((6 * 1024 * 1024))
    text_file "$d/text/short" 1000
    : >"$d/empty"
    : >"$d/text/b/empty"
    for i in $(seq 1 500); do
        mkdir -p "$d/small/d$((i % 20))"
        f=$d/small/d$((i % 20))/f$i
        if [ $((i % 3)) = 0 ]; then rand_file "$f" $((i * 7 % 5000 + 1)); else echo "file $i" >"$f"; fi
    done
    ln -s big/random "$d/link"
}

s3_proxy() {
    local var=$1 out port pid
    shift
    out=$(mktemp "$T/proxy-$var.XXXXXX") # fresh: an old proxy's port must not be read
    "$PV_BUILD_DIR/pv_faultproxy" --target "$(s3_hostport)" "$@" >"$out" 2>&1 &
    pid=$!
    PV_CLEANUP+=("kill $pid 2>/dev/null")
    listening_port port "$out" pv_faultproxy
    printf -v "$var" '%s' "s3:http://127.0.0.1:$port/$(s3_path)"
    printf -v "${var}_pid" '%s' "$pid"
}

# GETs of index files, snapshots and packs in a proxy log from byte OFF on: the existence
# probes (PROBES=1) or the others (PROBES=0).
s3_log_gets() {
    local log=$1 off=$2 probes=$3
    [ -f "$log" ] || return 0
    tail -c +$((off + 1)) "$log" | tr -d '\r' |
        awk -v probes="$probes" 'BEGIN { RS = "" }
            /^GET / && (/\n[Rr]ange: bytes=0-0(\n|$)/ ? probes : !probes) { split($0, f, " "); print f[2] }' |
        grep -E '/(index|snapshots|data)/' || true
}
s3_gets() { s3_log_gets "$1" "${2:-0}" 0; }
s3_probes() { s3_log_gets "$1" "${2:-0}" 1; }

# Bytes in a file (for s3_gets offsets).
file_size() { stat -c %s "$1" 2>/dev/null || echo 0; }
