#!/usr/bin/env bash
# bench/follow.sh — the follow phase against native logical replication, side by side in one run.
#
# For each follower, on fresh local PostgreSQL clusters (fsync on), with the same starting data
# (pgbench -i -s $SCALE, copied to the target before the slot is created):
#   (a) pgshift run            — this repository's agent, built from source
#   (b) native subscription    — CREATE SUBSCRIPTION ... WITH (copy_data = false), defaults otherwise
# it measures source TPS and lag (seconds and bytes) during `pgbench -c 8 -j 2 -T $DURATION` on
# the source, the catch-up time after the load stops, and the replay rate of a backlog of
# $BACKLOG row changes built while the follower is stopped. Every figure comes from SQL run by
# bench/follow/main.go on the servers themselves; see the comment there for exact definitions.
# At the end it checks, with md5 of every table on both sides, that the follower was exact.
#
# Usage: bench/follow.sh                      (SCALE=10 DURATION=120 BACKLOG=1000000)
#        SCALE=1 DURATION=10 BACKLOG=100000 bench/follow.sh      (a quick run)
# The measured part holds /tmp/pgshift-bench.lock so two benchmarks never overlap.
set -euo pipefail
SCALE=${SCALE:-10}
DURATION=${DURATION:-120}
BACKLOG=${BACKLOG:-1000000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BIN=$(mktemp -d /tmp/pgshift-bench-follow.XXXXXX)
trap 'rm -rf "$BIN"' EXIT
# PROFILE=1: pgshift writes a CPU profile of its run to bench/out/follow-pgshift.pprof
# (go tool pprof -top bench/out/follow-pgshift.pprof).
if [ "${PROFILE:-0}" = 1 ]; then
	mkdir -p "$ROOT/bench/out"
	go build -tags profile -o "$BIN/pgshift" ./cmd/pgshift
	export PGSHIFT_CPUPROFILE=$ROOT/bench/out/follow-pgshift.pprof
else
	go build -o "$BIN/pgshift" ./cmd/pgshift
fi
go build -o "$BIN/follow" ./bench/follow
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GB RAM, $(uname -sr), PostgreSQL $(ls /usr/lib/postgresql | sort -V | tail -1)" >&2
echo "load during the run: $(cat /proc/loadavg)" >&2
exec flock /tmp/pgshift-bench.lock "$BIN/follow" -pgshift "$BIN/pgshift" -scale "$SCALE" -T "$DURATION" -c 8 -j 2 -backlog "$BACKLOG"
