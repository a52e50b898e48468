#!/usr/bin/env bash
# Self-contained check of the SQL layer, without the Rust side: starts a
# throw-away PostgreSQL cluster, applies migrations/ in order and sql/ twice
# (all files in one transaction each time, as `marquee migrate` does, to prove
# idempotency), runs admin.seed_demo() twice, then tests/sql/run.sh.
#
#   tests/sql/selftest.sh            (PGBIN defaults to /usr/lib/postgresql/15/bin,
#                                     SELFTEST_PORT to 5499)
#
# Run as root it runs the cluster as the postgres user (PostgreSQL refuses root).
# Needs pg_prove/pgTAP (postgresql-<major>-pgtap, libtap-parser-sourcehandler-pgtap-perl) and
# optionally plpgsql_check (postgresql-<major>-plpgsql-check); see README.md, Prerequisites.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PORT=${SELFTEST_PORT:-5499}
DIR=$(mktemp -d /tmp/marquee-sql-selftest.XXXXXX)
chmod 755 "$DIR"

as_pg() {
    if [ "$(id -u)" = 0 ]; then
        chown -R postgres "$DIR"
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

stop() {
    as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$DIR"
}
trap stop EXIT

as_pg "$PGBIN/initdb" -A trust -N -U postgres -D "$DIR/data" >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w \
    -o "-c listen_addresses= -c unix_socket_directories=$DIR -c port=$PORT -c fsync=off" start >/dev/null

DB="host=$DIR port=$PORT user=postgres dbname=marquee"
psql -X -q -h "$DIR" -p "$PORT" -U postgres -d postgres -c 'CREATE DATABASE marquee'
run() { psql -X -q -v ON_ERROR_STOP=1 --dbname "$DB" "$@"; }

echo "# migrations"
for f in $(cd "$ROOT/migrations" && ls V*__*.sql | sort -V); do
    echo "#   $f"
    run -1 -f "$ROOT/migrations/$f" >/dev/null
done
for pass in 1 2; do
    echo "# sql/ in one transaction, pass $pass"
    cat "$ROOT"/sql/*.sql | run -1 -f - >/dev/null
done
echo "# admin.seed_demo() twice"
run -c 'SELECT admin.seed_demo()' -c 'SELECT admin.seed_demo()' >/dev/null
run -t -A -c "SELECT format('#   %s cinemas, %s halls, %s screenings, %s seat rows',
                     (SELECT count(*) FROM cinemas), (SELECT count(*) FROM halls),
                     (SELECT count(*) FROM screenings), (SELECT count(*) FROM seat_states))"
run -c 'CREATE EXTENSION IF NOT EXISTS pgtap' >/dev/null

"$HERE/run.sh" "$DB"
