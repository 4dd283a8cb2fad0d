#!/usr/bin/env bash
# bench/copy.sh — `pgshift copy` against what a user would pick instead, side by side in one run,
# on the same two local clusters and the same data:
#
#   (a) pg_dump -Fd -j N  then  pg_restore -j N            (end to end, indexes included)
#   (b) native logical replication: schema (pg_dump --schema-only | psql), then CREATE
#       SUBSCRIPTION and wait until every table's initial sync is ready ('r')
#   (c) pgshift copy --jobs N                                (end to end, indexes included)
#   (d) pgcopydb clone --table-jobs N --index-jobs N --split-tables-larger-than 256MB
#       (Debian's package; big tables split like pgshift's 256 MiB chunks; end to end)
#
# Data: pgbench -i -s $SCALE on the source (100 → about 1.5 GB with indexes). pgbench_history
# has no key; it is given REPLICA IDENTITY FULL (it is empty) so every tool can take it.
#
# Usage: bench/copy.sh                        (SCALE=100 JOBS=4 ROUNDS=3 by default)
#        SCALE=10 JOBS=2 ROUNDS=1 bench/copy.sh
# The contenders run interleaved (a b c d a b c d ...) for ROUNDS rounds, each into a fresh target
# database, and their medians are compared: on a shared machine, load from other processes then
# falls on all of them alike. The measured part holds /tmp/pgshift-bench.lock so two benchmarks
# never overlap.
set -euo pipefail

SCALE=${SCALE:-100}
JOBS=${JOBS:-4}
ROUNDS=${ROUNDS:-3}
SRC_PORT=${SRC_PORT:-56432}
DST_PORT=${DST_PORT:-56433}
. "$(dirname "$0")/lib.sh"
bench_init copy

start_cluster_bench() { # name port: the same settings for every contender
	start_cluster "$1" "$2" <<CONF
max_replication_slots = 20
max_wal_senders = 20
max_worker_processes = 20
max_logical_replication_workers = 16
max_sync_workers_per_subscription = $JOBS
shared_buffers = 1GB
max_wal_size = 16GB
checkpoint_timeout = 30min
maintenance_work_mem = 512MB
CONF
}

SRC="host=127.0.0.1 port=$SRC_PORT user=postgres dbname=bench"
dst() { echo "host=127.0.0.1 port=$DST_PORT user=postgres dbname=$1"; }
psql_src() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -At -d "$SRC" "$@"; }
psql_dst() { local db=$1; shift; "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -At -d "$(dst "$db")" "$@"; }

log "starting clusters ($PGBIN) in $WORK"
start_cluster_bench src "$SRC_PORT"
start_cluster_bench dst "$DST_PORT"
"$PGBIN/psql" -X -q -d "host=127.0.0.1 port=$SRC_PORT user=postgres dbname=postgres" -c "CREATE DATABASE bench"

log "pgbench -i -s $SCALE"
"$PGBIN/pgbench" -i -q -s "$SCALE" -d "$SRC" >"$WORK/pgbench.log" 2>&1
psql_src -c "ALTER TABLE pgbench_history REPLICA IDENTITY FULL" -c "VACUUM ANALYZE" -c "CHECKPOINT"
SIZE=$(psql_src -c "SELECT pg_size_pretty(pg_database_size(current_database()))")
ROWS=$(psql_src -c "SELECT sum(n_live_tup) FROM pg_stat_user_tables")
log "source database: $SIZE, $ROWS rows"
# Warm the source's cache the same way for everyone.
psql_src -c "SELECT count(*) FROM pgbench_accounts" >/dev/null

fresh_target() { # drop and re-create a target database, then checkpoint so every contender starts alike
	"$PGBIN/psql" -X -q -d "host=127.0.0.1 port=$DST_PORT user=postgres dbname=postgres" \
		-c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" -c "CHECKPOINT"
}

exec 9>/tmp/pgshift-bench.lock
log "waiting for /tmp/pgshift-bench.lock"
flock 9
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "measuring (JOBS=$JOBS, ROUNDS=$ROUNDS, load average $LOAD_AT_START)"
: >"$WORK/times"
: >"$WORK/splits"
for round in $(seq 1 "$ROUNDS"); do
	# (a) pg_dump -Fd -j N, then pg_restore -j N. Timed from pg_dump's start to pg_restore's end.
	fresh_target bench_dump
	rm -rf "$WORK/dump"
	t0=$(now)
	"$PGBIN/pg_dump" -Fd -j "$JOBS" -f "$WORK/dump" -d "$SRC"
	t1=$(now)
	"$PGBIN/pg_restore" -j "$JOBS" -d "$(dst bench_dump)" "$WORK/dump"
	t2=$(now)
	echo "a $(elapsed "$t0" "$t2") $(elapsed "$t0" "$t1") $(elapsed "$t1" "$t2")" >>"$WORK/times"
	log "round $round (a) pg_dump+pg_restore: $(elapsed "$t0" "$t2")s (dump $(elapsed "$t0" "$t1")s, restore $(elapsed "$t1" "$t2")s)"

	# (b) native logical replication: schema, then subscription until every table is 'r' (ready).
	fresh_target bench_native
	psql_src -c "CREATE PUBLICATION bench_pub FOR ALL TABLES"
	t0=$(now)
	"$PGBIN/pg_dump" --schema-only -d "$SRC" | "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$(dst bench_native)" >/dev/null
	t1=$(now)
	psql_dst bench_native -c "CREATE SUBSCRIPTION bench_sub CONNECTION '$SRC' PUBLICATION bench_pub" 2>/dev/null
	while :; do
		left=$(psql_dst bench_native -c "SELECT count(*) FILTER (WHERE srsubstate <> 'r') || '/' || count(*) FROM pg_subscription_rel")
		case $left in 0/0) ;; 0/*) break ;; esac
		sleep 0.2
	done
	t2=$(now)
	echo "b $(elapsed "$t0" "$t2") $(elapsed "$t0" "$t1") $(elapsed "$t1" "$t2")" >>"$WORK/times"
	psql_dst bench_native -c "DROP SUBSCRIPTION bench_sub" 2>/dev/null
	psql_src -c "DROP PUBLICATION bench_pub"
	log "round $round (b) native initial sync: $(elapsed "$t0" "$t2")s (schema $(elapsed "$t0" "$t1")s, sync $(elapsed "$t1" "$t2")s)"

	# (c) pgshift copy --jobs N. Timed around the process; peak RSS from /usr/bin/time.
	fresh_target bench_pgshift
	psql_src -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'pgshift_bench'" \
		-c "DROP PUBLICATION IF EXISTS pgshift_bench" >/dev/null
	t0=$(now)
	/usr/bin/time -f '%M' -o "$WORK/rss" "$WORK/pgshift" copy --source "$SRC" --target "$(dst bench_pgshift)" \
		--jobs "$JOBS" --progress none >"$WORK/pgshift.out" 2>"$WORK/pgshift.err"
	t1=$(now)
	rss=$(awk '{ printf "%.0f", $1 / 1024 }' "$WORK/rss")
	split=$(sed -n 's/^  \(schema .*\)$/\1/p' "$WORK/pgshift.out")
	echo "c $(elapsed "$t0" "$t1") $rss" >>"$WORK/times"
	echo "round $round: $split" >>"$WORK/splits"
	log "round $round (c) pgshift copy: $(elapsed "$t0" "$t1")s, peak RSS ${rss} MB — $split"

	# (d) pgcopydb clone, same jobs for tables and indexes, big tables split. It runs pg_dump
	# and pg_restore itself, the same binaries as (a).
	fresh_target bench_pgcopydb
	rm -rf "$WORK/pgcopydb"
	t0=$(now)
	PATH="$PGBIN:$PATH" pgcopydb clone --source "$SRC" --target "$(dst bench_pgcopydb)" --dir "$WORK/pgcopydb" \
		--table-jobs "$JOBS" --index-jobs "$JOBS" --split-tables-larger-than 256MB >"$WORK/pgcopydb.log" 2>&1 ||
		{ tail -20 "$WORK/pgcopydb.log" >&2; exit 1; }
	t1=$(now)
	echo "d $(elapsed "$t0" "$t1")" >>"$WORK/times"
	log "round $round (d) pgcopydb clone: $(elapsed "$t0" "$t1")s"
done
flock -u 9
LOAD_AT_END=$(cut -d' ' -f1-3 /proc/loadavg)

median() { # contender column
	awk -v k="$1" -v c="$2" '$1 == k { print $c }' "$WORK/times" | sort -n |
		awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
all() { awk -v k="$1" '$1 == k { printf "%s%s", sep, $2; sep = ", " }' "$WORK/times"; }
A_TOTAL=$(median a 2) A_DUMP=$(median a 3) A_RESTORE=$(median a 4)
B_TOTAL=$(median b 2) B_SCHEMA=$(median b 3) B_SYNC=$(median b 4)
C_TOTAL=$(median c 2)
D_TOTAL=$(median d 2)
C_RSS_MB=$(awk '$1 == "c" && $3 > m { m = $3 } END { print m }' "$WORK/times")

# Same rows everywhere (independent check of the three results of the last round).
check() { echo "SELECT count(*) || ' accounts, ' || sum(abalance) || ' balance, ' || (SELECT count(*) FROM pg_indexes WHERE schemaname = 'public') || ' indexes' FROM pgbench_accounts"; }
SRC_CHECK=$(psql_src -c "$(check)")
for db in bench_dump bench_native bench_pgshift bench_pgcopydb; do
	d=$(psql_dst "$db" -c "$(check)")
	log "check $db: $d"
	[ "$d" = "$SRC_CHECK" ] || { log "MISMATCH in $db (source: $SRC_CHECK)"; exit 1; }
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
cat <<REPORT

== copy benchmark: pgbench scale $SCALE ($SIZE, $ROWS rows), N = $JOBS, $ROUNDS rounds, $(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%MZ)
load average at start / end of the measurement: $LOAD_AT_START / $LOAD_AT_END
medians [every round]:
(a) pg_dump -Fd -j $JOBS + pg_restore -j $JOBS : ${A_TOTAL} s  (dump ${A_DUMP} s, restore ${A_RESTORE} s)  [$(all a)]
(b) native logical replication initial sync : ${B_TOTAL} s  (schema ${B_SCHEMA} s, sync ${B_SYNC} s)  [$(all b)]
(c) pgshift copy --jobs $JOBS                    : ${C_TOTAL} s  peak RSS ${C_RSS_MB} MB  [$(all c)]
$(sed 's/^/    /' "$WORK/splits")
(d) pgcopydb clone, $JOBS table and index jobs  : ${D_TOTAL} s  [$(all d)]
speed-up of pgshift (medians): vs (a) $(ratio "$A_TOTAL" "$C_TOTAL")x, vs (b) $(ratio "$B_TOTAL" "$C_TOTAL")x, vs (d) $(ratio "$D_TOTAL" "$C_TOTAL")x
source check: $SRC_CHECK (all four targets identical)
REPORT
