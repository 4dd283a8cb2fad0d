#!/usr/bin/env bash
# bench/proxy.sh — pgshift proxy against PgBouncer (Debian package, session mode) and a direct
# connection, side by side in one run, alternated.
#
# On one fresh local cluster loaded with pgbench -i -s $SCALE, it runs
#   pgbench -S -c 8 -j 2 -T $DURATION         (simple protocol)    and
#   pgbench -S -c 8 -j 2 -T $DURATION -M prepared
# against each contender in turn, round after round:
#   direct      the server itself
#   pgbouncer   PgBouncer, pool_mode = session, auth_type = scram-sha-256
#   pgshift     pgshift proxy --mode source, SCRAM from its auth file
#   pgshift-split  pgshift proxy --mode split with a 0% rule: every statement goes through the
#               classifier (cached parse) and the rules, and still runs on the source
# For each run it reports TPS and latency percentiles (p50, p99) from pgbench's per-transaction
# log (10% sample); the added p99 is the contender's p99 minus direct's in the same round. The
# parser's own cost per statement (cold parse and cache hit) comes from the route package's Go
# benchmarks, run after the rounds. Results go to stdout; bench/RESULTS.md records them.
#
# Usage: bench/proxy.sh                  (SCALE=10 DURATION=30 ROUNDS=1)
#        DURATION=5 bench/proxy.sh       (a quick run)
set -euo pipefail
SCALE=${SCALE:-10}
DURATION=${DURATION:-30}
ROUNDS=${ROUNDS:-1}
source "$(dirname "$0")/lib.sh"
command -v pgbouncer >/dev/null || { echo "pgbouncer not found: run scripts/deps.sh" >&2; exit 2; }
bench_init proxy
PG=55432 PGSHIFT=56432 BOUNCER=57432 SPLIT=58432 TARGETPORT=55433
log "starting clusters"
start_cluster src $PG <<'CONF'
shared_buffers = 512MB
max_connections = 200
CONF
start_cluster dst $TARGETPORT <<'CONF'
shared_buffers = 128MB
max_connections = 50
CONF
"${RUNAS[@]}" "$PGBIN/psql" -X -q -h 127.0.0.1 -p $PG -U postgres -c "CREATE DATABASE bench" postgres
"${RUNAS[@]}" "$PGBIN/psql" -X -q -h 127.0.0.1 -p $TARGETPORT -U postgres -c "CREATE DATABASE bench" postgres
log "loading pgbench scale $SCALE"
"$PGBIN/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p $PG -U postgres bench >/dev/null 2>&1
PASS=bench-pw
printf '"postgres" "%s"\n' "$PASS" >"$WORK/userlist.txt"
chmod 644 "$WORK/userlist.txt"

# PgBouncer in session mode, run as the postgres OS user (it refuses root).
cat >"$WORK/pgbouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$PG dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $WORK/userlist.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 20
logfile = $WORK/pgbouncer.log
pidfile = $WORK/pgbouncer.pid
INI
chmod 644 "$WORK/pgbouncer.ini"
"${RUNAS[@]}" pgbouncer -d "$WORK/pgbouncer.ini"
cat >"$WORK/split.yaml" <<YAML
proxy_settings:
  rules:
    - name: nothing
      percent: 0
YAML
"$WORK/pgshift" proxy --listen 127.0.0.1:$PGSHIFT --source "host=127.0.0.1 port=$PG user=postgres dbname=bench" \
	--auth-file "$WORK/userlist.txt" --mode source --log-level warn 2>"$WORK/pgshift.log" &
PIDS=($!)
"$WORK/pgshift" proxy -c "$WORK/split.yaml" --listen 127.0.0.1:$SPLIT --source "host=127.0.0.1 port=$PG user=postgres dbname=bench" \
	--target "host=127.0.0.1 port=$TARGETPORT user=postgres dbname=bench" \
	--auth-file "$WORK/userlist.txt" --mode split --log-level warn 2>"$WORK/pgshift-split.log" &
PIDS+=($!)
stop_all() {
	kill "${PIDS[@]}" 2>/dev/null || true
	[ -f "$WORK/pgbouncer.pid" ] && kill "$(cat "$WORK/pgbouncer.pid")" 2>/dev/null || true
	bench_cleanup
}
trap stop_all EXIT
sleep 1
for port in $PGSHIFT $BOUNCER $SPLIT; do
	PGPASSWORD=$PASS "$PGBIN/psql" -X -At -h 127.0.0.1 -p $port -U postgres -c "SELECT 1" bench >/dev/null
done

# run NAME PORT MODE: one pgbench run; prints "NAME MODE tps p50_ms p99_ms".
run() {
	local name=$1 port=$2 mode=$3 dir="$WORK/log-$1-$3"
	mkdir -p "$dir"
	local out
	out=$(cd "$dir" && PGPASSWORD=$PASS "$PGBIN/pgbench" -n -S -c 8 -j 2 -T "$DURATION" -M "$mode" -l --sampling-rate=0.1 \
		-h 127.0.0.1 -p "$port" -U postgres bench 2>&1)
	local tps
	tps=$(awk '/^tps = / {print $3}' <<<"$out")
	# Per-transaction log: field 3 is the latency in microseconds.
	local pct
	pct=$(cat "$dir"/pgbench_log.* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {
		printf "%.3f %.3f", a[int(NR*0.50)]/1000, a[int(NR*0.99)]/1000 }')
	rm -rf "$dir"
	echo "$name $mode $tps $pct"
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GB RAM, PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), $(pgbouncer --version | head -1)"
echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "contender mode tps p50_ms p99_ms"
exec 9>/tmp/pgshift-bench.lock
flock 9
for round in $(seq "$ROUNDS"); do
	for mode in simple prepared; do
		run direct $PG $mode
		run pgbouncer $BOUNCER $mode
		run pgshift $PGSHIFT $mode
		run pgshift-split $SPLIT $mode
	done
done
flock -u 9
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "parser cost per statement (go test -bench, route package):"
(cd "$ROOT" && go test -run XXX -bench 'BenchmarkClassify' -benchtime 2s ./internal/proxy/route/ | grep -E '^Benchmark')
