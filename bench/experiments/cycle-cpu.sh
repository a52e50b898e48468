#!/usr/bin/env bash
# PostgreSQL's CPU for one hold + release of one seat (api.hold_seats, then
# api.release_seats, each committed), measured inside the backend that runs
# them: no client, no network, no waits for other sessions. Rounds alternate
# the no-orphan rule off and on, so a busy machine affects both alike.
#
#   bench/experiments/cycle-cpu.sh --db URL [--rounds R] [--cycles N]
#
# The backend's own CPU time comes from /proc/self/schedstat (nanoseconds on
# the CPU), read with pg_read_file: connect as a superuser, on this machine.
# It creates a cinema, a 25-seat hall, a screening and a user (admin.*,
# api.auth_register) and a procedure pg_temp-style in public
# (bench_cycle_cpu), so use a throw-away benchmark database. Output: one line
# per round, "off <µs> on <µs>" per cycle, then the medians.
set -euo pipefail

DB="${DATABASE_URL:-}"
ROUNDS=5
CYCLES=2000
while [ $# -gt 0 ]; do
  case "$1" in
    --db) DB="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --cycles) CYCLES="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "cycle-cpu.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$DB" ] || { echo "cycle-cpu.sh: --db or DATABASE_URL is required" >&2; exit 2; }
P=(psql -X -q -At -v ON_ERROR_STOP=1 -d "$DB")

RUN="cc$(date +%s%N | cut -c8-16)"
read -r USER_ID SCREENING SEAT < <("${P[@]}" -F ' ' <<SQL
SELECT admin.set_registration_limit(0) AS unlimited \gset
SELECT admin.create_cinema('$RUN', 'Benchtown', 'Load Street 1', 'UTC') AS cinema \gset
SELECT admin.create_film('$RUN', 120, 'PG') AS film \gset
SELECT admin.create_hall(:cinema, '$RUN', 1, 25) AS hall \gset
SELECT admin.create_screening(:hall, :film, now() + interval '2 days', 1200, 'EUR') AS screening \gset
SELECT r.user_id, :screening, (SELECT s.id FROM seats AS s WHERE s.hall_id = :hall AND s.x = 12)
  FROM api.auth_register('$RUN', '\x00'::bytea, 1, 86400) AS r;
SQL
)

"${P[@]}" <<'SQL'
CREATE OR REPLACE PROCEDURE public.bench_cycle_cpu(p_user bigint, p_screening bigint, p_seat bigint, p_n int,
                                                  INOUT us numeric)
LANGUAGE plpgsql
AS $$
DECLARE
    t0 bigint;
BEGIN
    t0 := split_part(pg_read_file('/proc/self/schedstat'), ' ', 1)::bigint;
    FOR i IN 1..p_n LOOP
        PERFORM api.hold_seats(p_user, p_screening, ARRAY[p_seat]);
        COMMIT;
        PERFORM api.release_seats(p_user, p_screening, ARRAY[p_seat]);
        COMMIT;
    END LOOP;
    us := round((split_part(pg_read_file('/proc/self/schedstat'), ' ', 1)::bigint - t0) / 1000.0 / p_n, 1);
END;
$$;
SQL

measure() {  # $1: true|false (the orphan rule); a fresh session warms its plans first
  "${P[@]}" <<SQL | tail -n 1
SELECT admin.set_orphan_rule($1) AS rule \gset
CALL public.bench_cycle_cpu($USER_ID, $SCREENING, $SEAT, 50, NULL) \gset
CALL public.bench_cycle_cpu($USER_ID, $SCREENING, $SEAT, $CYCLES, NULL);
SQL
}

offs=(); ons=()
for r in $(seq 1 "$ROUNDS"); do
  off=$(measure false); on=$(measure true)
  offs+=("$off"); ons+=("$on")
  echo "round $r: off $off µs, on $on µs per hold + release"
done
"${P[@]}" -c "SELECT admin.set_orphan_rule(true)" >/dev/null
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
mo=$(median "${offs[@]}"); mn=$(median "${ons[@]}")
awk -v o="$mo" -v n="$mn" 'BEGIN { printf "median: off %.1f µs, on %.1f µs per hold + release; the rule adds %.1f µs per hold (%.1f %% of the cycle)\n", o, n, n - o, (n - o) * 100 / o }'
