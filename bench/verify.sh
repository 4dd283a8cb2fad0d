#!/usr/bin/env bash
# bench/verify.sh — `pgshift verify --mode checksum` against what a user would do instead, side by
# side in one run, on the same two local clusters holding the same data:
#
#   (a) naive: a full ordered dump of every table from both sides at once (COPY (SELECT * ...
#       ORDER BY key) TO STDOUT through psql), compared byte by byte on the client with cmp
#   (b) the physical floor: one SELECT per table that hashes every row on ONE side, the same
#       per-row hash pgshift uses (hashtextextended of the row text); an md5 variant is shown too
#   (c) pgshift verify --mode checksum --jobs J (both sides scanned in parallel), schema and
#       sequences included
#   (d) the same after 3 rows were changed on the target: it must report exactly those 3 keys
#
# Data: pgbench -i -s $SCALE on both clusters (100 → 10 million accounts, about 1.5 GB each with
# indexes), VACUUM ANALYZEd; shared_buffers large enough that every variant reads from memory,
# and one warm-up scan of each table before measuring, so they compare CPU work, not disk.
#
# Usage: bench/verify.sh             (SCALE=100 JOBS=2 RUNS=3 by default)
#        SCALE=10 bench/verify.sh
# The measured part holds /tmp/pgshift-bench.lock so two benchmarks never overlap.
set -euo pipefail

SCALE=${SCALE:-100}
JOBS=${JOBS:-2}
RUNS=${RUNS:-3}
SRC_PORT=${SRC_PORT:-56532}
DST_PORT=${DST_PORT:-56533}
. "$(dirname "$0")/lib.sh"
bench_init verify
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

start_cluster_bench() { # name port: everything in memory, no hidden parallel workers
	start_cluster "$1" "$2" <<CONF
fsync = off
full_page_writes = off
shared_buffers = 3GB
max_wal_size = 8GB
max_connections = 50
max_parallel_workers_per_gather = 0
CONF
}
start_cluster_bench src "$SRC_PORT"
start_cluster_bench dst "$DST_PORT"
SRC="host=127.0.0.1 port=$SRC_PORT user=postgres dbname=bench sslmode=disable"
DST="host=127.0.0.1 port=$DST_PORT user=postgres dbname=bench sslmode=disable"
psql_on() { local dsn=$1; shift; "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -At -d "$dsn" "$@"; }

log "pgbench -i -s $SCALE on both clusters"
for port in "$SRC_PORT" "$DST_PORT"; do
	"$PGBIN/createdb" -h 127.0.0.1 -p "$port" -U postgres bench
	# Same data on both sides: pgbench's generated rows are deterministic.
	"$PGBIN/pgbench" -i -s "$SCALE" -q -h 127.0.0.1 -p "$port" -U postgres bench >"$WORK/init-$port.log" 2>&1 &
done
wait
TABLES="pgbench_accounts:aid pgbench_branches:bid pgbench_tellers:tid pgbench_history:tid,bid,aid,delta,mtime,filler"
for dsn in "$SRC" "$DST"; do
	psql_on "$dsn" -c "VACUUM ANALYZE" -c "CHECKPOINT"
done
ROWS=$(psql_on "$SRC" -c "SELECT (SELECT count(*) FROM pgbench_accounts) + (SELECT count(*) FROM pgbench_branches) + (SELECT count(*) FROM pgbench_tellers) + (SELECT count(*) FROM pgbench_history)")
SIZE=$(psql_on "$SRC" -c "SELECT pg_size_pretty(pg_database_size('bench'))")
log "$ROWS rows, $SIZE per side; warming up"
for dsn in "$SRC" "$DST"; do
	for t in $TABLES; do psql_on "$dsn" -c "SELECT count(*) FROM ${t%%:*} t WHERE t::text <> ''" >/dev/null; done
done

naive() { # (a): both sides dumped in key order at the same time, compared byte by byte
	for t in $TABLES; do
		local name=${t%%:*} key=${t#*:}
		cmp -s <(psql_on "$SRC" -c "COPY (SELECT * FROM $name ORDER BY $key) TO STDOUT") \
			<(psql_on "$DST" -c "COPY (SELECT * FROM $name ORDER BY $key) TO STDOUT") || echo "differs: $name"
	done
}
# The per-row hash pgshift uses for these column types (see internal/verify/sql.go): each column's
# own extended hash function with a per-position seed, XOR-combined, NULLs as constants.
h() { echo "coalesce($1, $((-7046029254386353131 - $2 + 1)))"; }
FLOOR_SQL=(
	"SELECT sum($(h 'hashint4extended(aid, 1)' 1) # $(h 'hashint4extended(bid, 2)' 2) # $(h 'hashint4extended(abalance, 3)' 3) # $(h 'hashbpcharextended(filler COLLATE "C", 4)' 4)) FROM pgbench_accounts"
	"SELECT sum($(h 'hashint4extended(bid, 1)' 1) # $(h 'hashint4extended(bbalance, 2)' 2) # $(h 'hashbpcharextended(filler COLLATE "C", 3)' 3)) FROM pgbench_branches"
	"SELECT sum($(h 'hashint4extended(tid, 1)' 1) # $(h 'hashint4extended(bid, 2)' 2) # $(h 'hashint4extended(tbalance, 3)' 3) # $(h 'hashbpcharextended(filler COLLATE "C", 4)' 4)) FROM pgbench_tellers"
	"SELECT sum($(h 'hashint4extended(tid, 1)' 1) # $(h 'hashint4extended(bid, 2)' 2) # $(h 'hashint4extended(aid, 3)' 3) # $(h 'hashint4extended(delta, 4)' 4) # $(h 'timestamp_hash_extended(mtime, 5)' 5) # $(h 'hashbpcharextended(filler COLLATE "C", 6)' 6)) FROM pgbench_history"
)
floor_hash() { # (b): one side, every row hashed server-side with pgshift's row hash, one SELECT per table
	for q in "${FLOOR_SQL[@]}"; do psql_on "$SRC" -c "$q" >/dev/null; done
}
floor_text() { # (b'): the same over the row's text form
	for t in $TABLES; do
		psql_on "$SRC" -c "SELECT sum(hashtextextended(t::text, 0)) FROM ${t%%:*} t" >/dev/null
	done
}
floor_md5() {
	for t in $TABLES; do
		psql_on "$SRC" -c "SELECT sum(('x' || left(md5(t::text), 16))::bit(64)::bigint) FROM ${t%%:*} t" >/dev/null
	done
}
pgshift_verify() { # (c)
	"$WORK/pgshift" verify --source "$SRC" --target "$DST" --jobs "$1" --no-save --progress none --log-level warn >"$WORK/verify.out" 2>&1
}

declare -A T
measure() { # name command...: RUNS timings, median kept
	local name=$1; shift
	local times=()
	for _ in $(seq 1 "$RUNS"); do
		local a b
		a=$(now); "$@"; b=$(now)
		times+=("$(elapsed "$a" "$b")")
	done
	T[$name]=$(printf '%s\n' "${times[@]}" | median)
	log "$name: ${times[*]} s (median ${T[$name]})"
}

exec 9>/tmp/pgshift-bench.lock
log "waiting for the benchmark lock"
flock 9
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
log "measuring (load average before: $LOAD)"
measure floor_hash floor_hash
measure floor_text floor_text
measure floor_md5 floor_md5
measure verify_j1 pgshift_verify 1
measure verify pgshift_verify "$JOBS"
grep -q "Result: IDENTICAL (exit 0)" "$WORK/verify.out" || { cat "$WORK/verify.out" >&2; exit 1; }
measure naive naive

psql_on "$DST" -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid IN (17, $((SCALE * 50000)), $((SCALE * 100000 - 3)))" >/dev/null
a=$(now)
"$WORK/pgshift" verify --source "$SRC" --target "$DST" --jobs "$JOBS" --no-save --progress none --log-level warn >"$WORK/verify3.out" 2>&1 || true
b=$(now)
T[verify_3bad]=$(elapsed "$a" "$b")
FOUND=$(grep -cE "aid=(17|$((SCALE * 50000))|$((SCALE * 100000 - 3))): different" "$WORK/verify3.out" || true)
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
flock -u 9

rate() { awk -v r="$ROWS" -v s="$1" 'BEGIN { printf "%.0f", r / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
cat <<EOF

## verify — pgbench -i -s $SCALE ($ROWS rows, $SIZE per side), $(nproc) cores, $(date -u +%Y-%m-%d)

| variant | seconds (median of $RUNS) | rows/s |
|---|---|---|
| (a) naive: ordered COPY of both sides, compared with cmp | ${T[naive]} | $(rate "${T[naive]}") |
| (b) floor: one SELECT per table hashing every row on one side, pgshift's row hash | ${T[floor_hash]} | $(rate "${T[floor_hash]}") |
| (b') the same hashing each row's text (hashtextextended(t::text)) | ${T[floor_text]} | $(rate "${T[floor_text]}") |
| (b'') the same with md5 of the row text | ${T[floor_md5]} | $(rate "${T[floor_md5]}") |
| (c) pgshift verify --mode checksum --jobs 1 (both sides) | ${T[verify_j1]} | $(rate "${T[verify_j1]}") |
| (c) pgshift verify --mode checksum --jobs $JOBS (both sides) | ${T[verify]} | $(rate "${T[verify]}") |
| (d) the same with 3 rows changed on the target (1 run; found $FOUND of 3) | ${T[verify_3bad]} | $(rate "${T[verify_3bad]}") |

- pgshift --jobs $JOBS vs the floor (b): $(ratio "${T[verify]}" "${T[floor_hash]}")× the time (goal ≤ 1.5×)
- naive (a) vs pgshift --jobs $JOBS: $(ratio "${T[naive]}" "${T[verify]}")× slower (goal ≥ 5×)
- load average before/after: $LOAD / $LOAD_AFTER
EOF
