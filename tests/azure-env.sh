#!/bin/bash
# azure-env.sh - makes sure Azurite (Microsoft's Azure Storage emulator, which checks Shared Key
# signatures) serves Blob Storage on 127.0.0.1, and prints the environment the Azure tests read:
#
#   eval "$(tests/azure-env.sh)"      # or:  . tests/azure-env.sh
#   (cd build && ctest -R 'test_backend|it_azure' --output-on-failure)
#
# Azurite is the npm package pinned in tests/azure/package.json (installed there with `npm ci`
# the first time; needs node and npm). It keeps running in the background between runs, its
# data, log, pid and port in PV_AZURE_DIR (default $TMPDIR/podvault-azurite-$UID); it listens on
# PV_AZURE_PORT, or a free port picked the first time. Progress goes to stderr; only the export
# lines go to stdout. PV_AZURE_CONTAINER names the test container (default podvault-azure).

# Sourced: run as a program and take its exports, without changing the caller's shell options.
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
  _pv_az_env=$(bash "${BASH_SOURCE[0]}") && eval "$_pv_az_env"
  _pv_rc=$?
  unset _pv_az_env
  return $_pv_rc
fi

set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pkg=$root/tests/azure
dir=${PV_AZURE_DIR:-${TMPDIR:-/tmp}/podvault-azurite-$(id -u)}
account=devstoreaccount1
# Azurite's published development key (not a secret).
key='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
container=${PV_AZURE_CONTAINER:-podvault-azure}

for tool in node npm curl; do
  command -v "$tool" >/dev/null || { echo "azure-env.sh: $tool is not installed" >&2; exit 1; }
done
if [[ ! -x "$pkg/node_modules/.bin/azurite-blob" ]]; then
  echo "azure-env.sh: installing Azurite (npm ci in $pkg) ..." >&2
  # Debian's node trusts only the CAs it was built with: a machine whose registry traffic passes
  # a TLS proxy with a CA in the system store needs that store added.
  if [[ -z "${NODE_EXTRA_CA_CERTS:-}" && -f /etc/ssl/certs/ca-certificates.crt ]]; then
    export NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
  fi
  (cd "$pkg" && timeout -k 10 600 npm ci --no-audit --no-fund >&2)
fi

# Whether Azurite answers on port $1: any HTTP answer from the blob service will do.
answers() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 "http://127.0.0.1:$1/$account?comp=list") || true
  [[ "$code" =~ ^[2-4][0-9][0-9]$ ]]
}

mkdir -p "$dir/data"
port=$(cat "$dir/port" 2>/dev/null || true)
if [[ -z "$port" ]] || ! answers "$port"; then
  port=${PV_AZURE_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
  echo "azure-env.sh: starting Azurite on 127.0.0.1:$port (data in $dir)" >&2
  setsid "$pkg/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$port" \
    -l "$dir/data" >"$dir/azurite.log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
  echo "$port" >"$dir/port"
  for _ in $(seq 1 60); do
    answers "$port" && break
    kill -0 "$(cat "$dir/pid")" 2>/dev/null || { tail -n 20 "$dir/azurite.log" >&2; exit 1; }
    sleep 0.5
  done
  answers "$port" || { echo "azure-env.sh: Azurite did not answer in 30 s" >&2; exit 1; }
fi
echo "azure-env.sh: Azurite serves http://127.0.0.1:$port/$account" >&2

cat <<EOT
export PV_TEST_AZURE=azure:$container/tests
export AZURE_STORAGE_CONNECTION_STRING='DefaultEndpointsProtocol=http;AccountName=$account;AccountKey=$key;BlobEndpoint=http://127.0.0.1:$port/$account;'
EOT
