#!/usr/bin/env bash
# Experiment behind docs/benchmarks.md "where PostgreSQL spends a seat
# change": the same pgbench workloads (bench/pgbench.sh) against copies of
# Marquee's schema that differ in one thing each, with the PostgreSQL
# cluster's CPU time per change read from /proc (postmaster and children).
#
#   DATABASE_URL=postgres://…/marquee bench/experiments/sql-variants.sh [ROUNDS]
#
# Variants (databases created next to DATABASE_URL's, dropped first):
#   mq_v0   as shipped (`marquee migrate`)
#   mq_v1   v0, internal.seat_change_payload rewritten in PL/pgSQL (a SQL
#           function that cannot be inlined is parsed and planned on every
#           call; PL/pgSQL keeps its plans)
#   mq_v2   v1, plus plan_cache_mode = force_generic_plan on every PL/pgSQL
#           function in api and internal (no re-planning per call)
#   mq_v3   v0, api.session_user rewritten in PL/pgSQL (still SECURITY
#           DEFINER with its search_path)
#   mq_v4   v0 with every function SECURITY INVOKER and no SET (reference
#           only: it gives up the least-privilege design)
# Needs: psql, pgbench, jq, the cluster on this machine (for /proc), and the
# server binary (MARQUEE, default target/bench-build/release/marquee).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${DATABASE_URL:?}"
ROUNDS=${1:-2}
MARQUEE=${MARQUEE:-target/bench-build/release/marquee}
BASE=${DATABASE_URL%/*}
DATADIR=$(psql -X -At -d "$DATABASE_URL" -c 'SHOW data_directory')
PM=$(head -1 "$DATADIR/postmaster.pid")

for v in mq_v0 mq_v1 mq_v2 mq_v3 mq_v4; do
  psql -X -q -d "$BASE/postgres" -c "DROP DATABASE IF EXISTS $v" -c "CREATE DATABASE $v" 2>/dev/null
  DATABASE_URL="$BASE/$v" JWT_SECRET=variants-secret-variants-secret-0123456 RUST_LOG=warn "$MARQUEE" migrate >/dev/null
done

PAYLOAD_PLPGSQL=$(cat <<'SQL'
CREATE OR REPLACE FUNCTION internal.seat_change_payload(
    p_screening bigint, p_version bigint, p_seat_ids bigint[], p_statuses text[], p_user_ids bigint[]
) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_payload text;
BEGIN
    SELECT '{"s":' || p_screening || ',"v":' || p_version || ',"c":['
           || coalesce(string_agg('[' || c.seat_id || ',' || to_json(c.status)::text || ','
                                  || coalesce(c.user_id::text, 'null') || ']', ',' ORDER BY c.seat_id), '')
           || ']}'
      INTO v_payload
      FROM unnest(p_seat_ids, p_statuses, p_user_ids) AS c(seat_id, status, user_id);
    IF octet_length(v_payload) <= 7900 THEN
        RETURN v_payload;
    END IF;
    RETURN '{"s":' || p_screening || ',"v":' || p_version || ',"r":1}';
END;
$$;
SQL
)
psql -X -q -d "$BASE/mq_v1" -c "$PAYLOAD_PLPGSQL"
psql -X -q -d "$BASE/mq_v2" -c "$PAYLOAD_PLPGSQL"
psql -X -q -d "$BASE/mq_v2" <<'SQL'
DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT p.oid::regprocedure AS fn FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
            WHERE p.pronamespace IN ('api'::regnamespace, 'internal'::regnamespace) AND l.lanname = 'plpgsql' LOOP
    EXECUTE format('ALTER FUNCTION %s SET plan_cache_mode = force_generic_plan', r.fn);
  END LOOP;
END $$;
SQL
psql -X -q -d "$BASE/mq_v3" <<'SQL'
CREATE OR REPLACE FUNCTION api.session_user(p_session uuid)
RETURNS TABLE (user_id bigint, username text, expires_at timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    RETURN QUERY SELECT u.id, u.username, s.expires_at
      FROM sessions AS s JOIN users AS u ON u.id = s.user_id
     WHERE s.id = p_session AND s.revoked_at IS NULL AND s.expires_at > now();
END;
$$;
SQL
psql -X -q -d "$BASE/mq_v4" <<'SQL'
DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT p.oid::regprocedure AS fn FROM pg_proc p
            WHERE p.pronamespace IN ('api'::regnamespace, 'admin'::regnamespace, 'internal'::regnamespace)
              AND p.prokind = 'f' LOOP
    EXECUTE format('ALTER FUNCTION %s SECURITY INVOKER RESET ALL', r.fn);
  END LOOP;
END $$;
SQL

ticks() {
  local t=0 p
  for p in $(ps -o pid= --ppid "$PM") "$PM"; do
    [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}
hz=$(getconf CLK_TCK)

# One measurement: pgbench.sh in the background, PostgreSQL's CPU over the
# middle of its run; prints variant, workload, rate, CPU µs per unit.
measure() {
  local db=$1; shift
  local out
  out=$(mktemp)
  bash bench/pgbench.sh --db "$BASE/$db" "$@" >"$out" 2>/dev/null &
  local bg=$!
  # Fixtures first; measure once pgbench itself runs.
  local i=0
  until pgrep -f "pgbench -n -M prepared.*$BASE/$db\$" >/dev/null || [ $i -ge 600 ]; do sleep 0.2; i=$((i + 1)); done
  sleep 2
  local t0 s0 t1 s1
  t0=$(ticks); s0=$(date +%s.%N)
  sleep 8
  t1=$(ticks); s1=$(date +%s.%N)
  wait "$bg" || true
  local rate
  rate=$(tail -n 1 "$out" | jq .rate)
  awk -v db="$db" -v w="$*" -v r="$rate" -v t0="$t0" -v t1="$t1" -v s0="$s0" -v s1="$s1" -v hz="$hz" 'BEGIN {
    cpu = (t1 - t0) / hz; secs = s1 - s0;
    printf "%-6s %-52s rate %8.1f/s   postgres CPU %7.1f us per unit (%.2f cores)\n", db, w, r, 1e6 * cpu / (r * secs), cpu / secs }'
  rm -f "$out"
}

for round in $(seq "$ROUNDS"); do
  echo "round $round (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  for v in mq_v0 mq_v1 mq_v2; do measure "$v" --workload hold --clients 16 --screenings 50 --duration 14; done
  for v in mq_v0 mq_v2; do measure "$v" --workload book --clients 16 --duration 14 --seats-per-hall 650; done
  for v in mq_v0 mq_v3 mq_v4; do measure "$v" --workload session --clients 8 --duration 14; done
done
