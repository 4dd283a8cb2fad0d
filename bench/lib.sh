# Shared by the benchmark scripts (source it): a work directory removed at exit, throwaway clusters
# run as the postgres OS user when the script runs as root, the pgshift binary, and timing helpers.
# Each script passes its own server settings to start_cluster, so what differs between benchmarks
# stays visible in the script that measures.

PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# bench_init NAME: creates $WORK (removed at exit, with any cluster started in it) and builds
# $WORK/pgshift from this checkout.
bench_init() {
	WORK=$(mktemp -d "/tmp/pgshift-bench-$1.XXXXXX")
	chmod 755 "$WORK"
	RUNAS=()
	if [ "$(id -u)" = 0 ]; then RUNAS=(runuser -u postgres --); chown postgres "$WORK"; fi
	trap bench_cleanup EXIT
	log "building pgshift"
	(cd "$ROOT" && go build -o "$WORK/pgshift" ./cmd/pgshift)
}

bench_cleanup() {
	local d
	for d in "$WORK"/*/; do
		[ -f "$d/postmaster.pid" ] && "${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1 || true
	done
	rm -rf "$WORK"
}

# start_cluster NAME PORT: initdb into $WORK/NAME and start it on 127.0.0.1:PORT with wal_level=logical;
# further postgresql.conf lines are read from standard input.
start_cluster() {
	"${RUNAS[@]}" "$PGBIN/initdb" -D "$WORK/$1" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
	{
		printf "port = %s\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\n" "$2" "$WORK/$1"
		printf "wal_level = logical\nlogging_collector = off\n"
		cat
	} >>"$WORK/$1/postgresql.conf"
	# The benchmark lock's descriptor must not leak into the server, or it would hold the lock forever.
	"${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$WORK/$1" -l "$WORK/$1.log" -w start >/dev/null 9>&-
}
