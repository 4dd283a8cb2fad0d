#!/usr/bin/env bash
# bench/plan.sh — does `pgshift plan` make the copy's target faster and quieter? One source and
# two targets, all local, fresh from initdb:
#
#   default: PostgreSQL's defaults (max_wal_size 1GB, checkpoint_timeout 5min, shared_buffers
#            128MB, ...), wal_level = logical
#   planned: the same, then `pgshift plan --source S --target T --target-memory $MEM --target-cpus
#            $CPUS --format sql` applied with psql, and the server restarted
#   walonly: the same as default, with only the plan's max_wal_size and checkpoint_* statements
#            applied: the checkpoint settings' share of the difference, apart from memory and workers
#
# Each round copies pgbench -i -s $SCALE with `pgshift copy --jobs $JOBS` into a fresh database on
# each target (default, planned, walonly, default, ...), and counts, on that target during that
# copy: "checkpoints are occurring too frequently" lines in its log, checkpoints requested by WAL
# volume (pg_stat_bgwriter.checkpoints_req) and the WAL written (pg_stat_wal.wal_bytes). Medians
# are compared. The measured part holds /tmp/pgshift-bench.lock so two benchmarks never overlap.
#
# Usage: bench/plan.sh                       (SCALE=100 JOBS=4 ROUNDS=5 MEM=4GB CPUS=2)
set -euo pipefail

SCALE=${SCALE:-100}
JOBS=${JOBS:-4}
ROUNDS=${ROUNDS:-5}
MEM=${MEM:-4GB}
CPUS=${CPUS:-2}
SRC_PORT=${SRC_PORT:-56532}
DEF_PORT=${DEF_PORT:-56533}
PLAN_PORT=${PLAN_PORT:-56534}
WAL_PORT=${WAL_PORT:-56535}
. "$(dirname "$0")/lib.sh"
bench_init plan

dsn() { echo "host=127.0.0.1 port=$1 user=postgres dbname=$2"; }
SRC=$(dsn "$SRC_PORT" bench)
q() { local port=$1 db=$2; shift 2; "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -At -d "$(dsn "$port" "$db")" "$@"; }

log "starting clusters ($PGBIN) in $WORK"
# The source's settings are not under test; they only keep pgbench -i quick.
start_cluster src "$SRC_PORT" <<CONF
shared_buffers = 1GB
max_wal_size = 16GB
CONF
start_cluster default "$DEF_PORT" </dev/null
start_cluster planned "$PLAN_PORT" </dev/null
start_cluster walonly "$WAL_PORT" </dev/null
q "$SRC_PORT" postgres -c "CREATE DATABASE bench"

log "pgbench -i -s $SCALE"
"$PGBIN/pgbench" -i -q -s "$SCALE" -d "$SRC" >"$WORK/pgbench.log" 2>&1
q "$SRC_PORT" bench -c "ALTER TABLE pgbench_history REPLICA IDENTITY FULL" -c "VACUUM ANALYZE" -c "CHECKPOINT"
SIZE=$(q "$SRC_PORT" bench -c "SELECT pg_size_pretty(pg_database_size(current_database()))")
log "source database: $SIZE"

log "pgshift plan (text and sql) for the planned target"
"$WORK/pgshift" plan --source "$SRC" --target "$(dsn "$PLAN_PORT" postgres)" --target-memory "$MEM" --target-cpus "$CPUS" \
	--jobs "$JOBS" >"$WORK/plan.txt" 2>/dev/null
"$WORK/pgshift" plan --source "$SRC" --target "$(dsn "$PLAN_PORT" postgres)" --target-memory "$MEM" --target-cpus "$CPUS" \
	--jobs "$JOBS" --format sql >"$WORK/plan.sql" 2>/dev/null
"$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$(dsn "$PLAN_PORT" postgres)" -f "$WORK/plan.sql" >/dev/null
"${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$WORK/planned" -l "$WORK/planned.log" -w restart >/dev/null 9>&-
APPLIED=$(grep '^ALTER SYSTEM' "$WORK/plan.sql" | sed 's/^ALTER SYSTEM SET //; s/;$//' | paste -sd ';' | sed 's/;/; /g')
log "applied: $APPLIED"
{ grep -E '^ALTER SYSTEM SET (max_wal_size|checkpoint_)' "$WORK/plan.sql"; echo "SELECT pg_reload_conf();"; } >"$WORK/walonly.sql"
"$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$(dsn "$WAL_PORT" postgres)" -f "$WORK/walonly.sql" >/dev/null
WAL_APPLIED=$(grep '^ALTER SYSTEM' "$WORK/walonly.sql" | sed 's/^ALTER SYSTEM SET //; s/;$//' | paste -sd ';' | sed 's/;/; /g')

port_of() { case $1 in default) echo "$DEF_PORT" ;; planned) echo "$PLAN_PORT" ;; walonly) echo "$WAL_PORT" ;; esac; }
TARGETS="default planned walonly"
warnings() { grep -c 'checkpoints are occurring too frequently' "$WORK/$1.log" || true; }
counters() { q "$(port_of "$1")" postgres -c "SELECT (SELECT checkpoints_req FROM pg_stat_bgwriter) || ' ' || (SELECT wal_bytes FROM pg_stat_wal)"; }

exec 9>/tmp/pgshift-bench.lock
log "waiting for /tmp/pgshift-bench.lock"
flock 9
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "measuring (JOBS=$JOBS, ROUNDS=$ROUNDS, load average $LOAD_AT_START)"
: >"$WORK/times"
for round in $(seq 1 "$ROUNDS"); do
	for target in $TARGETS; do
		port=$(port_of "$target")
		q "$port" postgres -c "DROP DATABASE IF EXISTS bench" -c "CREATE DATABASE bench" -c "CHECKPOINT"
		q "$SRC_PORT" bench -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'pgshift_bench'" \
			-c "DROP PUBLICATION IF EXISTS pgshift_bench" >/dev/null
		w0=$(warnings "$target")
		read -r c0 b0 <<<"$(counters "$target")"
		t0=$(now)
		"$WORK/pgshift" copy --source "$SRC" --target "$(dsn "$port" bench)" --jobs "$JOBS" --progress none \
			>"$WORK/copy.out" 2>"$WORK/copy-$target.err"
		t1=$(now)
		sleep 1 # the log line of a checkpoint requested at the very end
		w1=$(warnings "$target")
		read -r c1 b1 <<<"$(counters "$target")"
		split=$(sed -n 's/^  \(schema .*\)$/\1/p' "$WORK/copy.out")
		wal_mb=$(((b1 - b0) >> 20))
		echo "$target $(elapsed "$t0" "$t1") $((w1 - w0)) $((c1 - c0)) $wal_mb" >>"$WORK/times"
		log "round $round $target: $(elapsed "$t0" "$t1")s, $((w1 - w0)) checkpoint warnings, $((c1 - c0)) requested checkpoints, ${wal_mb}MB of WAL — $split"
	done
done
flock -u 9
LOAD_AT_END=$(cut -d' ' -f1-3 /proc/loadavg)

median() { # target column
	awk -v k="$1" -v c="$2" '$1 == k { print $c }' "$WORK/times" | sort -n |
		awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
all() { awk -v k="$1" -v c="$2" '$1 == k { printf "%s%s", sep, $c; sep = ", " }' "$WORK/times"; }

check() { echo "SELECT count(*) || ' accounts, ' || sum(abalance) || ' balance, ' || (SELECT count(*) FROM pg_indexes WHERE schemaname = 'public') || ' indexes' FROM pgbench_accounts"; }
SRC_CHECK=$(q "$SRC_PORT" bench -c "$(check)")
for target in $TARGETS; do
	d=$(q "$(port_of "$target")" bench -c "$(check)")
	[ "$d" = "$SRC_CHECK" ] || { log "MISMATCH on $target: $d (source: $SRC_CHECK)"; exit 1; }
done
COPY_WARNING=$(grep -o 'max_wal_size is .*the other settings)' "$WORK/copy-default.err" | head -1 | sed 's/\\"/"/g' || true)

cat <<REPORT

== plan benchmark: pgbench scale $SCALE ($SIZE), copy --jobs $JOBS, $ROUNDS rounds, $(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%MZ)
load average at start / end of the measurement: $LOAD_AT_START / $LOAD_AT_END
plan --target-memory $MEM --target-cpus $CPUS applied to the planned target: $APPLIED
medians [every round]:
default target : copy $(median default 2) s [$(all default 2)], checkpoint warnings $(median default 3) [$(all default 3)], requested checkpoints $(median default 4) [$(all default 4)], WAL $(median default 5) MB
planned target : copy $(median planned 2) s [$(all planned 2)], checkpoint warnings $(median planned 3) [$(all planned 3)], requested checkpoints $(median planned 4) [$(all planned 4)], WAL $(median planned 5) MB
walonly target : copy $(median walonly 2) s [$(all walonly 2)], checkpoint warnings $(median walonly 3) [$(all walonly 3)], requested checkpoints $(median walonly 4) [$(all walonly 4)], WAL $(median walonly 5) MB
  (walonly has only: $WAL_APPLIED)
copy's own warning on the default target: ${COPY_WARNING:-none}
source check: $SRC_CHECK (every target identical)

-- the plan (text) --
$(cat "$WORK/plan.txt")
REPORT
