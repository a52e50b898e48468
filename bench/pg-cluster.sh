#!/usr/bin/env bash
# A throw-away PostgreSQL 15 cluster for benchmarks, run as the postgres
# user, durable settings (fsync and synchronous_commit on: bookings must
# survive a crash, so the benchmark keeps what production keeps).
#
#   bench/pg-cluster.sh start   # initdb if needed, start; prints DATABASE_URL
#   bench/pg-cluster.sh stop
#   bench/pg-cluster.sh url
#
# Environment: BENCH_PG_DIR (default /tmp/marquee-bench), BENCH_PG_PORT (5499),
# PG_BIN (default /usr/lib/postgresql/15/bin), BENCH_PG_EXTRA (more
# postgresql.conf lines, used at initdb; bench/pg-profile.sh uses it).
set -euo pipefail
DIR=${BENCH_PG_DIR:-/tmp/marquee-bench}
PORT=${BENCH_PG_PORT:-5499}
BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
URL="postgres://postgres@127.0.0.1:$PORT/marquee"
as_pg() { if [ "$(id -un)" = postgres ]; then "$@"; else runuser -u postgres -- "$@"; fi; }

case "${1:-}" in
  start)
    mkdir -p "$DIR"
    chown postgres:postgres "$DIR"
    if [ ! -f "$DIR/pg/PG_VERSION" ]; then
      as_pg "$BIN/initdb" -D "$DIR/pg" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
      cat >>"$DIR/pg/postgresql.conf" <<CONF
# bench/pg-cluster.sh
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DIR'
max_connections = 400
shared_buffers = 1GB
wal_buffers = 16MB
max_wal_size = 8GB
checkpoint_timeout = 15min
fsync = on
synchronous_commit = on
full_page_writes = on
jit = off
log_min_messages = warning
${BENCH_PG_EXTRA:-}
CONF
    fi
    if ! as_pg "$BIN/pg_ctl" -D "$DIR/pg" status >/dev/null 2>&1; then
      as_pg "$BIN/pg_ctl" -D "$DIR/pg" -l "$DIR/log" -w start >/dev/null
    fi
    as_pg psql -X -q -h "$DIR" -p "$PORT" -U postgres -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = 'marquee'" | grep -q 1 ||
      as_pg psql -X -q -h "$DIR" -p "$PORT" -U postgres -d postgres -c "CREATE DATABASE marquee"
    echo "$URL"
    ;;
  stop)
    as_pg "$BIN/pg_ctl" -D "$DIR/pg" -m fast stop
    ;;
  url)
    echo "$URL"
    ;;
  *)
    sed -n '2,14p' "$0"
    exit 2
    ;;
esac
