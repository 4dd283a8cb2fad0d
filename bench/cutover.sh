#!/usr/bin/env bash
# bench/cutover.sh — the write pause of pgshift cutover and rollback under pgbench.
#
# Two fresh local clusters; pgbench -i -s $SCALE on the source; pgshift copy
# (--replica-identity-full: pgbench_history has no key), then `pgshift run` with its proxy and
# HTTP API. pgbench -M prepared -c 8 -j 2 runs through the proxy the whole time while the script
# does $CYCLES cycles of `pgshift cutover --yes` and `pgshift rollback`, $GAP seconds apart.
# For every switch it reports
#   pause_ms    the write pause pgshift measured (the proxy holds sessions from the start of the
#               pause to the resume; the command prints it)
#   client_ms   the longest client-side latency of a pgbench transaction that completed while
#               the switch ran or within a second after it (pgbench's per-transaction log), which
#               includes the pause and whatever the switch cost around it
#   took_s      the whole command (pre-checks included; traffic flows during them)
# and at the end p50 and max of each over all switches, pgbench's failed transactions, and a
# check that pgbench_history holds exactly the transactions pgbench reported on both sides (an
# independent count, after reverse replication caught up). Goal (issue 12): p50 < 100 ms,
# max < 500 ms, zero failed transactions.
#
# Usage: bench/cutover.sh                 (SCALE=10 CYCLES=10 GAP=3)
#        CYCLES=2 bench/cutover.sh        (a quick run)
set -euo pipefail
SCALE=${SCALE:-10}
CYCLES=${CYCLES:-10}
GAP=${GAP:-3}
source "$(dirname "$0")/lib.sh"
bench_init cutover
SRC=55632 DST=55633 PROXY=56632 HTTP=56633
log "starting clusters"
for c in "src $SRC" "dst $DST"; do
	# shellcheck disable=SC2086
	start_cluster $c <<'CONF'
shared_buffers = 256MB
max_connections = 100
max_wal_size = 4GB
CONF
done
for port in $SRC $DST; do
	"${RUNAS[@]}" "$PGBIN/psql" -X -q -h 127.0.0.1 -p $port -U postgres -c "CREATE DATABASE bench" postgres
done
log "loading pgbench scale $SCALE"
"$PGBIN/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p $SRC -U postgres bench >/dev/null 2>&1
PASS=bench-pw
printf '"postgres" "%s"\n' "$PASS" >"$WORK/userlist.txt"
chmod 644 "$WORK/userlist.txt"
CFG=$WORK/pgshift.yaml
cat >"$CFG" <<YAML
source: host=127.0.0.1 port=$SRC user=postgres dbname=bench sslmode=disable
target: host=127.0.0.1 port=$DST user=postgres dbname=bench sslmode=disable
proxy: 127.0.0.1:$PROXY
http: 127.0.0.1:$HTTP
replica_identity_full: true
proxy_settings:
  auth_file: $WORK/userlist.txt
  pause_timeout: 10s
cutover:
  require_verify: false
YAML
log "copying"
"$WORK/pgshift" copy -c "$CFG" --progress none --log-level warn >"$WORK/copy.out" 2>&1
"$WORK/pgshift" run -c "$CFG" --log-level info 2>"$WORK/run.log" &
AGENT=$!
stop_all() {
	kill "$AGENT" 2>/dev/null || true
	wait "$AGENT" 2>/dev/null || true
	bench_cleanup
}
trap stop_all EXIT

# ready: until a dry run of the cutover passes its pre-checks (forward lag measured).
ready() {
	local i
	for i in $(seq 200); do
		"$WORK/pgshift" cutover -c "$CFG" --dry-run >/dev/null 2>&1 && return 0
		sleep 0.3
	done
	echo "the cutover's pre-checks never passed; agent log: $WORK/run.log" >&2
	tail -20 "$WORK/run.log" >&2
	exit 1
}
ready

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GB RAM, PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}')"
echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
exec 9>/tmp/pgshift-bench.lock
flock 9
DURATION=$((CYCLES * 2 * (GAP + 6) + 10))
mkdir -p "$WORK/pgbench"
(cd "$WORK/pgbench" && PGPASSWORD=$PASS "$PGBIN/pgbench" -n -M prepared -c 8 -j 2 -T "$DURATION" -l \
	-h 127.0.0.1 -p $PROXY -U postgres bench >"$WORK/pgbench.out" 2>&1) &
BENCH=$!
sleep "$GAP"
: >"$WORK/switches"
for i in $(seq "$CYCLES"); do
	for op in cutover rollback; do
		[ "$op" = cutover ] && ready
		args=(-c "$CFG")
		[ "$op" = cutover ] && args+=(--yes)
		t0=$(now)
		out=$("$WORK/pgshift" "$op" "${args[@]}" 2>&1) || {
			echo "$op $i failed:" >&2
			echo "$out" >&2
			mkdir -p "$ROOT/bench/out"
			cp "$WORK/run.log" "$ROOT/bench/out/cutover-run-$(date -u +%Y%m%dT%H%M%S).log"
			echo "agent log kept in bench/out/" >&2
			exit 1
		}
		t1=$(now)
		pause=$(sed -nE 's/.*write pause ([0-9.]+) ms.*/\1/p' <<<"$out" | tail -1)
		printf '%s\n' "$out" >"$WORK/out-$op-$i"
		echo "$op $i $t0 $t1 $pause" >>"$WORK/switches"
		sleep "$GAP"
	done
done
wait "$BENCH" || { echo "pgbench failed:" >&2; cat "$WORK/pgbench.out" >&2; exit 1; }
flock -u 9

# Client-side: the longest latency of a transaction that completed in [t0, t1 + 1 s] of a switch.
# pgbench's log line: client_id transaction_no latency_us script_no epoch_s epoch_us.
cat "$WORK"/pgbench/pgbench_log.* >"$WORK/txlog"
echo "op cycle pause_ms client_ms took_s"
awk 'NR == FNR { t = $5 + $6 / 1e6; n++; end[n] = t; lat[n] = $3 / 1000; next }
	{ m = 0; for (k = 1; k <= n; k++) if (end[k] >= $3 && end[k] <= $4 + 1 && lat[k] > m) m = lat[k]
	  printf "%s %s %.1f %.1f %.2f\n", $1, $2, $5, m, $4 - $3 }' "$WORK/txlog" "$WORK/switches" | tee "$WORK/result"
summary() { # summary OP COLUMN NAME
	awk -v op="$1" -v c="$2" '$1 == op { print $c }' "$WORK/result" | sort -n |
		awk -v name="$3" -v op="$1" '{ a[NR] = $1 } END { printf "%s %s: p50 %.1f, max %.1f (%d switches)\n", op, name, a[int((NR + 1) / 2)], a[NR], NR }'
}
for op in cutover rollback; do
	summary $op 3 "pause_ms"
	summary $op 4 "client_ms"
done
# Where the time goes: each step's median duration, from the commands' own step lines
# ("NN. name  state  D ms  detail").
for op in cutover rollback; do
	echo "$op steps, median ms over $CYCLES:"
	cat "$WORK"/out-$op-* | awk '/^ ?[0-9]+\. / && match($0, / [0-9.]+ ms  /) {
		no = $1 + 0; ms = substr($0, RSTART + 1, RLENGTH - 5) + 0; name = substr($0, 5, 66); sub(/ +$/, "", name)
		n[no]++; v[no, n[no]] = ms; names[no] = name }
		END { for (no = 1; no <= 20; no++) if (n[no]) {
			m = n[no]; for (k = 1; k <= m; k++) a[k] = v[no, k]
			for (k = 2; k <= m; k++) for (j = k; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
			printf "  %2d. %-60s %8.1f\n", no, names[no], a[int((n[no] + 1) / 2)] } }'
done
awk '{ print $3 }' "$WORK/result" | sort -n | awk '{ a[NR] = $1 } END { printf "all switches pause_ms: p50 %.1f, max %.1f\n", a[int((NR + 1) / 2)], a[NR] }'
grep -E 'number of transactions actually processed|number of failed transactions|^tps|latency average' "$WORK/pgbench.out" || true
processed=$(sed -nE 's/number of transactions actually processed: ([0-9]+).*/\1/p' "$WORK/pgbench.out")

# Both sides hold every committed transaction: the live side (the source, after the last
# rollback) at once, the other after forward replication caught up.
for i in $(seq 100); do
	s=$("${RUNAS[@]}" "$PGBIN/psql" -X -At -h 127.0.0.1 -p $SRC -U postgres -c "SELECT count(*) FROM pgbench_history" bench)
	d=$("${RUNAS[@]}" "$PGBIN/psql" -X -At -h 127.0.0.1 -p $DST -U postgres -c "SELECT count(*) FROM pgbench_history" bench)
	[ "$s" = "$processed" ] && [ "$d" = "$processed" ] && break
	sleep 0.3
done
echo "pgbench_history rows: source $s, target $d, pgbench reported $processed"
[ "$s" = "$processed" ] && [ "$d" = "$processed" ] || { echo "MISMATCH" >&2; exit 1; }
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
