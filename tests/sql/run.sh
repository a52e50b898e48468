#!/usr/bin/env bash
# Runs the SQL tests against a database that already has migrations/, sql/ and
# `CREATE EXTENSION pgtap` applied. Applies nothing itself.
#
#   tests/sql/run.sh DBNAME_OR_CONNINFO
#
# e.g. tests/sql/run.sh marquee_test
#      tests/sql/run.sh "host=/tmp/sqldev port=5499 user=postgres dbname=marquee_test"
#      tests/sql/run.sh postgresql://postgres@localhost:5433/marquee_test
#
# 1. every tests/sql/*.sql file through pg_prove (or psql when pg_prove is
#    missing): each runs in one transaction and rolls back, so the database
#    is left as it was;
# 2. tests/sql/live.sh: the checks that need committed transactions (real
#    LISTEN delivery, concurrent sessions). It creates its own cinema and
#    users and deletes them again. Set MARQUEE_SQL_SKIP_LIVE=1 to skip it.
#
# Exits non-zero when any test fails.
set -uo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 DBNAME_OR_CONNINFO" >&2
    exit 2
fi
DB=$1
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE"

status=0
if command -v pg_prove >/dev/null 2>&1; then
    # pg_prove mangles a conninfo or URI given as --dbname (it splits options on '='), so it gets a psql
    # wrapper that adds the connection itself.
    wrapper=$(mktemp)
    trap 'rm -f "$wrapper"' EXIT
    printf '#!/bin/sh\nexec psql --dbname "$MARQUEE_SQL_DB" "$@"\n' >"$wrapper"
    chmod +x "$wrapper"
    MARQUEE_SQL_DB=$DB pg_prove --psql-bin "$wrapper" --ext .sql ./*.sql || status=1
else
    # Fallback: psql prints the TAP; a file fails on a psql error, a "not ok" line or a bad plan.
    for f in ./*.sql; do
        out=$(psql -X -q -t -A -v ON_ERROR_STOP=1 --dbname "$DB" -f "$f" 2>&1)
        rc=$?
        if [ $rc -ne 0 ] || grep -q '^not ok' <<<"$out" || grep -q '^# Looks like' <<<"$out"; then
            echo "$f .. FAILED"
            echo "$out" | grep -E '^(not ok|#)|ERROR' | sed 's/^/    /'
            status=1
        else
            echo "$f .. ok"
        fi
    done
fi

if [ "${MARQUEE_SQL_SKIP_LIVE:-0}" != "1" ]; then
    bash "$HERE/live.sh" "$DB" || status=1
fi

exit $status
