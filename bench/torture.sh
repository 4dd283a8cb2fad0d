#!/usr/bin/env bash
# Runs pgshift's generative torture test (internal/torture) for as long as asked and prints the
# summary: cases run, source transactions, rows, agent kills, server restarts, failures by class
# with their seeds. Usage:
#
#   bench/torture.sh [DURATION]      # default 10m; e.g. 1h, 90m, 8h
#
# Any PGSHIFT_TORTURE_* variable passes through (PGSHIFT_TORTURE_CLASSES='-xml,-reg' switches
# generator classes off, PGSHIFT_TORTURE_BASE_SEED replays a whole run, PGSHIFT_TORTURE_SCALE=2
# doubles data and workload sizes). The full go test log and each case's pgshift output are kept
# under bench/out/; a failing seed is replayed with the command the summary prints.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10m}
mkdir -p bench/out
STAMP=$(date -u +%Y%m%dT%H%M%S)
LOG=$PWD/bench/out/torture-$STAMP.log
SUMMARY=$PWD/bench/out/torture-$STAMP.json

# go test's own deadline: the run's duration, plus room for the last case and cleanup.
secs=$(awk -v d="$DURATION" 'BEGIN {
	n = d + 0; u = substr(d, length(n "") + 1)
	if (u == "h") n *= 3600; else if (u == "m") n *= 60; else if (u == "s" || u == "") n *= 1; else n = -1
	print int(n) }')
if [ "$secs" -le 0 ]; then
	echo "bench/torture.sh: DURATION must look like 90s, 10m or 2h (got $DURATION)" >&2
	exit 2
fi
TIMEOUT=$((secs + 1800))s

echo "torture run for $DURATION; log: $LOG" >&2
rc=0
# New draws every run (the bounded run of make test always draws the same ones).
: "${PGSHIFT_TORTURE_BASE_SEED:=$(date +%s%N)}"
export PGSHIFT_TORTURE_BASE_SEED
PGSHIFT_TORTURE_DURATION=$DURATION PGSHIFT_TORTURE_SUMMARY=$SUMMARY \
	go test -count=1 -v -timeout "$TIMEOUT" -run 'TestTorture$' ./internal/torture/ >"$LOG" 2>&1 || rc=$?

if [ -f "$SUMMARY.txt" ]; then
	cat "$SUMMARY.txt"
else
	echo "no summary written (the test did not get to the end); last lines of $LOG:" >&2
	tail -40 "$LOG" >&2
fi
if [ "$rc" -ne 0 ]; then
	echo
	echo "first failure of each failing seed (all failures, diffs and replay commands: $LOG):"
	grep -E 'seed=[0-9]+ FAILURE \[' "$LOG" | sed -E 's/^ +[a-z_]+\.go:[0-9]+: //' |
		awk '{ split($1, a, "="); if (!(a[2] in seen)) { seen[a[2]] = 1; print } }' | cut -c1-200 | head -200 || true
fi
exit "$rc"
