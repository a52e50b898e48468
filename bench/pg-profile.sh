#!/usr/bin/env bash
# Where PostgreSQL spends a seat change: a separate throw-away cluster with
# pg_stat_statements tracking statements nested in functions, Marquee's
# schema applied by `marquee migrate`, bench/pgbench.sh run against it, then
# the statements by total execution time (inside api.hold_seats /
# api.release_seats / api.book_seats and their triggers).
#
#   bench/pg-profile.sh [hold|book] [CLIENTS] [SECONDS] [SCREENINGS]
#
# Environment: MARQUEE (the server binary, default
# target/bench-build/release/marquee), BENCH_PG_PORT (5498).
set -euo pipefail
cd "$(dirname "$0")/.."
WORKLOAD=${1:-hold}
CLIENTS=${2:-16}
SECS=${3:-15}
SCREENINGS=${4:-1}
MARQUEE=${MARQUEE:-target/bench-build/release/marquee}
export BENCH_PG_DIR=/tmp/marquee-bench-profile BENCH_PG_PORT=${BENCH_PG_PORT:-5498}
export BENCH_PG_EXTRA="shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
track_functions = all"
URL=$(bench/pg-cluster.sh start)
DATABASE_URL=$URL JWT_SECRET=profile-secret-profile-secret-profile-0123 RUST_LOG=warn "$MARQUEE" migrate >&2
psql -X -q -d "$URL" -c 'CREATE EXTENSION IF NOT EXISTS pg_stat_statements' \
  -c 'SELECT pg_stat_statements_reset()' -c 'SELECT pg_stat_reset()' >/dev/null
bench/pgbench.sh --db "$URL" --workload "$WORKLOAD" --clients "$CLIENTS" --duration "$SECS" --screenings "$SCREENINGS" 2>/dev/null | tail -n 1
psql -X -d "$URL" <<'SQL'
\pset format aligned
SELECT round(total_exec_time::numeric, 0) AS total_ms,
       calls,
       round((total_exec_time / calls * 1000)::numeric, 1) AS mean_us,
       round((100 * total_exec_time / sum(total_exec_time) FILTER (WHERE toplevel) OVER ())::numeric, 1) AS pct_of_top,
       toplevel AS top,
       left(regexp_replace(query, '\s+', ' ', 'g'), 110) AS statement
  FROM pg_stat_statements
 WHERE calls > 100
 ORDER BY total_exec_time DESC
 LIMIT 30;
SELECT funcname, calls, round(total_time::numeric, 0) AS total_ms, round(self_time::numeric, 0) AS self_ms,
       round((self_time / nullif(calls, 0) * 1000)::numeric, 1) AS self_us_per_call
  FROM pg_stat_user_functions ORDER BY self_time DESC LIMIT 15;
SQL
