#!/usr/bin/env bash
# slow-podvault.sh - stands in for `podvault` in agent tests that need a job to last: for a backup
# or restore it first waits $PV_SLOW_SECONDS (exiting 130 on SIGTERM, as podvault does when
# interrupted), then runs the real program, $PODVAULT_REAL, with the same arguments. With
# PV_RECORD_TMPDIR set, it first appends the TMPDIR it was given to that file.
[ -n "${PV_RECORD_TMPDIR:-}" ] && echo "${TMPDIR:-unset}" >>"$PV_RECORD_TMPDIR"
for a in "$@"; do
    if [ "$a" = backup ] || [ "$a" = restore ]; then
        sleep "${PV_SLOW_SECONDS:-30}" &
        sleeper=$!
        trap 'kill $sleeper 2>/dev/null; exit 130' TERM INT
        wait $sleeper
        trap - TERM INT
        break
    fi
done
exec "$PODVAULT_REAL" "$@"
