#!/usr/bin/env bash
# bench/ab.sh — what a change costs: this checkout's pgshift against an earlier commit's, on the
# same two local clusters and the same data, rounds interleaved (base, new, new, base, ...):
#
#   copy      `pgshift copy --jobs J` of pgbench -i -s $SCALE into a fresh target database
#   follow    with no agent running, `pgbench -t $TXS -c 4` on the source builds a backlog in the
#             round's slot; then `pgshift run` is started and `pgshift wait` timed until the
#             target has applied all of it (catch-up throughput of a fixed backlog)
#   verify    `pgshift verify --mode checksum` of the caught-up target (while nothing runs)
#
# Every round gets its own target database, slot and publication, dropped afterwards. After each
# round the script compares every table's row count and the balance sums with plain SQL.
#
# Usage: bench/ab.sh [BASE_REF]          (default bb254a7: main before the correctness fixes)
#        SCALE=20 JOBS=2 ROUNDS=3 TXS=4000 bench/ab.sh bb254a7
# The measured part holds /tmp/pgshift-bench.lock so two benchmarks never overlap.
set -euo pipefail

BASE=${1:-bb254a7}
SCALE=${SCALE:-20}
JOBS=${JOBS:-2}
ROUNDS=${ROUNDS:-3}
TXS=${TXS:-4000}
SRC_PORT=${SRC_PORT:-56542}
DST_PORT=${DST_PORT:-56543}
. "$(dirname "$0")/lib.sh"
bench_init ab
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

log "building pgshift at $BASE"
mkdir -p "$WORK/base-src"
(cd "$ROOT" && git archive "$BASE" | tar -x -C "$WORK/base-src")
(cd "$WORK/base-src" && go build -o "$WORK/pgshift-base" ./cmd/pgshift)
cp "$WORK/pgshift" "$WORK/pgshift-new"

for c in src:$SRC_PORT dst:$DST_PORT; do
	start_cluster "${c%%:*}" "${c##*:}" <<CONF
fsync = off
full_page_writes = off
shared_buffers = 1GB
max_wal_size = 8GB
max_replication_slots = 20
max_wal_senders = 20
CONF
done
SRC="host=127.0.0.1 port=$SRC_PORT user=postgres"
DST="host=127.0.0.1 port=$DST_PORT user=postgres"
psql() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }
psql "$SRC dbname=postgres" -c "CREATE DATABASE bench"
log "loading pgbench scale $SCALE"
"$PGBIN/pgbench" -q -i -s "$SCALE" "$SRC dbname=bench" >/dev/null 2>&1
psql "$SRC dbname=bench" -c "ALTER TABLE pgbench_history REPLICA IDENTITY FULL" -c "VACUUM ANALYZE"

declare -A T
exec 9>/tmp/pgshift-bench.lock
flock 9
for r in $(seq 1 "$ROUNDS"); do
	order="base new"
	[ $((r % 2)) = 0 ] && order="new base"
	for v in $order; do
		bin="$WORK/pgshift-$v"
		name="ab_${v}_$r"
		psql "$DST dbname=postgres" -c "CREATE DATABASE $name"
		args=(--source "$SRC dbname=bench" --target "$DST dbname=$name")
		t0=$(now)
		"$bin" copy --jobs "$JOBS" --progress none "${args[@]}" --slot "$name" --publication "$name" >"$WORK/$name.copy.log" 2>&1
		t1=$(now)
		T[$v.copy]+="$(elapsed "$t0" "$t1") "
		"$PGBIN/pgbench" -n -t "$TXS" -c 4 -j 2 "$SRC dbname=bench" >/dev/null 2>&1
		t0=$(now)
		"$bin" run "${args[@]}" >"$WORK/$name.run.log" 2>&1 &
		agent=$!
		"$bin" wait --timeout 30m "${args[@]}" >/dev/null 2>&1
		t1=$(now)
		T[$v.follow]+="$(elapsed "$t0" "$t1") "
		kill -TERM "$agent"
		wait "$agent" || true
		t0=$(now)
		"$bin" verify --mode checksum "${args[@]}" >"$WORK/$name.verify.log" 2>&1 || { log "verify of $name did not say identical:"; tail -20 "$WORK/$name.verify.log" >&2; exit 1; }
		t1=$(now)
		T[$v.verify]+="$(elapsed "$t0" "$t1") "
		q="SELECT (SELECT count(*) FROM pgbench_accounts) || ' ' || (SELECT sum(abalance) FROM pgbench_accounts) || ' ' || (SELECT count(*) FROM pgbench_history) || ' ' || (SELECT sum(bbalance) FROM pgbench_branches)"
		s=$(psql "$SRC dbname=bench" -Atc "$q")
		d=$(psql "$DST dbname=$name" -Atc "$q")
		[ "$s" = "$d" ] || { log "round $r $v: target $d, source $s"; exit 1; }
		psql "$SRC dbname=bench" -c "SELECT pg_drop_replication_slot('$name'); DROP PUBLICATION $name" >/dev/null
		psql "$DST dbname=postgres" -c "DROP DATABASE $name" >/dev/null
		log "round $r $v: copy $(echo "${T[$v.copy]}" | awk '{print $NF}') s, follow $(echo "${T[$v.follow]}" | awk '{print $NF}') s, verify $(echo "${T[$v.verify]}" | awk '{print $NF}') s"
	done
done
flock -u 9

printf '\n| phase | %s (base) median | this checkout median | ratio (base ÷ this: above 1 is faster now) | every round base / this |\n|---|---|---|---|---|\n' "$BASE"
for p in copy follow verify; do
	b=$(echo "${T[base.$p]}" | tr ' ' '\n' | grep . | median)
	n=$(echo "${T[new.$p]}" | tr ' ' '\n' | grep . | median)
	printf '| %s | %s s | %s s | %s | %s/ %s|\n' "$p" "$b" "$n" "$(awk -v b="$b" -v n="$n" 'BEGIN { printf "%.2f", b / n }')" "${T[base.$p]}" "${T[new.$p]}"
done
