#!/usr/bin/env bash
# agent_kubectl_smoke.sh - runs tests/k8s/kubectl_smoke.sh (the real kubectl against the API server
# stand-in the agent tests use); passes with a SKIP line where kubectl is not installed.
src=${PV_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
bash "$src/tests/k8s/kubectl_smoke.sh"
rc=$?
[ $rc -eq 77 ] && exit 0
exit $rc
