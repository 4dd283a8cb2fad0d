#!/usr/bin/env bash
# bench/assess.sh — `pgshift assess` against what a user would run instead, side by side in one
# run on the same source, and its copy-time estimate against a real copy of the same database.
#
#   (a) the case study's hand-written assessment query (sizes, activity, index use) through psql
#   (b) pgshift assess --sample-mb 0       (all readiness checks + sizes, no timed sample read)
#   (c) pgshift assess                     (the same plus the timed sample read for the estimate)
#   (d) pg_dump -Fd -j JOBS | pg_restore -j JOBS into an empty target database: the real copy
#       time the estimate of (c) should bracket
#
# Data: the demo's sample supply-chain database at --scale $SCALE, plus $EXTRA_TABLES small
# tables (10 rows, a primary key and one secondary index each) in schema "many", so the catalog
# work of hundreds of tables shows. The clusters are the demo's own (pgshift demo --keep).
#
# Usage: bench/assess.sh                 (SCALE=4 EXTRA_TABLES=1000 JOBS=4 RUNS=3 by default)
#        SCALE=1 EXTRA_TABLES=200 bench/assess.sh
# The measured part holds /tmp/pgshift-bench.lock so two benchmarks never overlap.
set -euo pipefail

SCALE=${SCALE:-4}
EXTRA_TABLES=${EXTRA_TABLES:-1000}
JOBS=${JOBS:-4}
RUNS=${RUNS:-3}
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/pgshift-bench-assess.XXXXXX)
chmod 755 "$WORK"

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

DEMO_PID=""
cleanup() {
	if [ -n "$DEMO_PID" ] && kill -0 "$DEMO_PID" 2>/dev/null; then
		kill -INT "$DEMO_PID" # the demo stops and removes its clusters
		wait "$DEMO_PID" || true
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT

log "building pgshift"
(cd "$ROOT" && go build -o "$WORK/pgshift" ./cmd/pgshift)

log "starting the demo clusters with the sample database at scale $SCALE"
"$WORK/pgshift" demo --keep --scale "$SCALE" --warmup 0 --log-level warn >"$WORK/demo.out" 2>&1 &
DEMO_PID=$!
for _ in $(seq 1 600); do
	grep -q "until you press Ctrl-C" "$WORK/demo.out" && break
	kill -0 "$DEMO_PID" 2>/dev/null || { cat "$WORK/demo.out" >&2; exit 1; }
	sleep 0.5
done
SRC=$(awk '/^  source: host=/ { sub(/^  source: /, ""); print; exit }' "$WORK/demo.out")
DST=$(awk '/^  target: host=/ { sub(/^  target: /, ""); print; exit }' "$WORK/demo.out")
[ -n "$SRC" ] && [ -n "$DST" ] || { echo "could not read the demo's DSNs" >&2; cat "$WORK/demo.out" >&2; exit 1; }
DST_ADMIN=${DST/dbname=supply_chain/dbname=postgres}
psql_src() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -At -d "$SRC" "$@"; }

log "adding $EXTRA_TABLES small tables"
psql_src -c "CREATE SCHEMA many" -c "
DO \$\$ BEGIN
  FOR i IN 1..$EXTRA_TABLES LOOP
    EXECUTE format('CREATE TABLE many.t%s (id int PRIMARY KEY, v text)', i);
    EXECUTE format('CREATE INDEX ON many.t%s (v)', i);
    EXECUTE format('INSERT INTO many.t%s SELECT g, md5(g::text) FROM generate_series(1, 10) g', i);
  END LOOP;
END \$\$" -c "VACUUM ANALYZE" -c "CHECKPOINT"
TABLES=$(psql_src -c "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")
SIZE=$(psql_src -c "SELECT pg_size_pretty(pg_database_size(current_database()))")

# The case study's Phase 1 query, verbatim apart from whitespace.
cat >"$WORK/case-study.sql" <<'EOF'
WITH table_sizes AS (
    SELECT schemaname, tablename,
        pg_size_pretty(pg_total_relation_size(schemaname||'.'||tablename)) as size,
        pg_total_relation_size(schemaname||'.'||tablename) as size_bytes,
        n_tup_ins + n_tup_upd + n_tup_del as total_operations
    FROM pg_tables
    JOIN pg_stat_user_tables ON pg_tables.tablename = pg_stat_user_tables.relname
    WHERE schemaname NOT IN ('information_schema', 'pg_catalog')
),
index_usage AS (
    SELECT schemaname, tablename, indexname, idx_scan, idx_tup_read, idx_tup_fetch
    FROM pg_stat_user_indexes
    JOIN pg_indexes ON pg_stat_user_indexes.indexname = pg_indexes.indexname
)
SELECT ts.schemaname, ts.tablename, ts.size, ts.total_operations,
    COUNT(iu.indexname) as index_count, SUM(iu.idx_scan) as total_index_scans
FROM table_sizes ts
LEFT JOIN index_usage iu ON ts.tablename = iu.tablename
GROUP BY ts.schemaname, ts.tablename, ts.size, ts.total_operations
ORDER BY ts.size_bytes DESC;
EOF

measure() { # label command... ; prints the median wall time of $RUNS runs
	local label=$1 rc t0 t1
	shift
	: >"$WORK/$label.times"
	for _ in $(seq 1 "$RUNS"); do
		t0=$(now)
		rc=0
		"$@" >"$WORK/$label.out" 2>"$WORK/$label.err" || rc=$?
		t1=$(now)
		# pgshift assess exits 1 when it finds blockers: still a complete run.
		if [ "$rc" -gt 1 ]; then cat "$WORK/$label.err" >&2; return 1; fi
		elapsed "$t0" "$t1" >>"$WORK/$label.times"
		echo >>"$WORK/$label.times"
	done
	median <"$WORK/$label.times"
}

exec 9>/tmp/pgshift-bench.lock
log "waiting for the benchmark lock"
flock 9
log "measuring ($RUNS runs each, median)"
T_CASE=$(measure case "$PGBIN/psql" -X -q -At -d "$SRC" -f "$WORK/case-study.sql")
T_NOSAMPLE=$(measure nosample "$WORK/pgshift" assess --source "$SRC" --target "$DST" --jobs "$JOBS" --sample-mb 0 --log-level error --format json)
T_FULL=$(measure full "$WORK/pgshift" assess --source "$SRC" --target "$DST" --jobs "$JOBS" --log-level error --format json)
EST=$(python3 -c 'import json,sys; e=json.load(open(sys.argv[1]))["estimate"]; print("%.1f %.1f %.0f" % (e["low_seconds"], e["high_seconds"], e["measured_bytes_per_sec"]/2**20))' "$WORK/full.out")
read -r EST_LOW EST_HIGH EST_RATE <<<"$EST"
FINDINGS=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(len(r["findings"]), len(r["tables"]), r["ready"])' "$WORK/full.out")

log "real copy: pg_dump -Fd -j $JOBS | pg_restore -j $JOBS"
"$PGBIN/psql" -X -q -d "$DST_ADMIN" -c "CREATE DATABASE copy_check"
t0=$(now)
"$PGBIN/pg_dump" -Fd -j "$JOBS" -f "$WORK/dump" -d "$SRC"
"$PGBIN/pg_restore" -j "$JOBS" -d "${DST/dbname=supply_chain/dbname=copy_check}" "$WORK/dump"
t1=$(now)
T_COPY=$(elapsed "$t0" "$t1")
flock -u 9

cat <<EOF

assess benchmark — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}')
source: sample database scale $SCALE + $EXTRA_TABLES extra tables = $TABLES tables, $SIZE; runs: $RUNS (median)

| what | wall time |
|---|---|
| (a) case study's assessment query (psql) | ${T_CASE} s |
| (b) pgshift assess --sample-mb 0 | ${T_NOSAMPLE} s |
| (c) pgshift assess (with timed sample read) | ${T_FULL} s |
| (d) pg_dump -Fd -j $JOBS + pg_restore -j $JOBS | ${T_COPY} s |

pgshift's copy-time estimate (c): ${EST_LOW}–${EST_HIGH} s with $JOBS jobs (measured read rate ${EST_RATE} MB/s per job)
findings / tables / ready in (c): $FINDINGS
EOF
