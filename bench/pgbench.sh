#!/usr/bin/env bash
# PostgreSQL's own limit for the SQL that Marquee runs per request: pgbench
# calling the same api.* functions (docs/sql.md) at a given concurrency,
# against the same database, so a Marquee figure can be printed beside it.
#
#   bench/pgbench.sh --db URL --workload hold|book|session [--clients C]
#                    [--screenings N] [--duration S] [--threads J]
#                    [--seats-per-hall K]
#
# Workloads (each pgbench client is one user with seats of its own, so no
# call fails; prepared statements, autocommit, one call per transaction):
#   hold     api.hold_seats then api.release_seats of the client's seat:
#            2 seat changes per pgbench transaction (both commit with
#            synchronous_commit off, set by the functions themselves).
#            Clients are spread over N screenings (one hall each), like
#            `bench rush --screenings N`.
#   book     api.hold_seats then api.book_seats of a new seat: 1 durable
#            booking per transaction (the booking commits synchronously);
#            10 seats per screening per client (the default seat limit),
#            then the next screening.
#   session  api.session_user(uuid): the token/revocation lookup a
#            logged-in connect makes.
# Seats given to clients are every third seat of a row (0, 3, …, 24), as in
# `bench` (src/fixtures.rs, seat_apart): two free seats between any two
# clients' seats, so the no-orphan rule never refuses a hold.
#
# It creates its own cinema, halls, screenings (admin.*) and users
# (api.auth_register with a dummy secret: they never log in) in the target
# database and leaves them there (a throw-away benchmark database is
# assumed). The last line of output is one JSON object; the pgbench report
# goes to stderr. When the database's cluster runs on this machine (its
# postmaster.pid readable), the JSON line also gives PostgreSQL's CPU per
# pgbench transaction and per seat change or booking (the postmaster, its
# children and its reaped children, from /proc, over the pgbench run); for
# the hold workload also over a steady window that leaves out the first and
# last fifth of the run (connection start-up, plan caching, the last calls),
# counting the changes exactly from the screenings' versions
# (`changes_per_s_steady`, `pg_cpu_us_per_change_steady`).
set -euo pipefail

DB="${DATABASE_URL:-}"
WORKLOAD=hold
CLIENTS=16
SCREENINGS=1
DURATION=20
THREADS=2
# Seats per hall: at least what the clients need; pass the hall size of the
# Marquee run being compared (per-call cost grows with the hall's rows).
MIN_SPH=0
# Upper bound of bookings/s used to size the book workload's screenings.
MAX_BOOK_TPS=${MAX_BOOK_TPS:-3000}

while [ $# -gt 0 ]; do
  case "$1" in
    --db) DB="$2"; shift 2 ;;
    --workload) WORKLOAD="$2"; shift 2 ;;
    --clients) CLIENTS="$2"; shift 2 ;;
    --screenings) SCREENINGS="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --seats-per-hall) MIN_SPH="$2"; shift 2 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "pgbench.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$DB" ] || { echo "pgbench.sh: --db or DATABASE_URL is required" >&2; exit 2; }
case "$WORKLOAD" in hold|book|session) ;; *) echo "pgbench.sh: workload must be hold, book or session" >&2; exit 2 ;; esac
[ "$THREADS" -le "$CLIENTS" ] || THREADS=$CLIENTS

RUN="p$(date +%s%N | cut -c6-15)$$"
RUN=${RUN:0:20}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# Fixture shape.
case "$WORKLOAD" in
  hold)
    NHALLS=$SCREENINGS; PER_HALL=1
    SPH=$(( ( (CLIENTS + SCREENINGS - 1) / SCREENINGS + 8) / 9 * 25 )) ;;
  book)
    NHALLS=1
    SPH=$(( (CLIENTS * 10 + 8) / 9 * 25 ))
    PER_HALL=$(( MAX_BOOK_TPS * (DURATION + 5) / (CLIENTS * 10) + 2 )) ;;
  session)
    NHALLS=1; PER_HALL=1; SPH=1 ;;
esac
[ "$SPH" -ge "$MIN_SPH" ] || SPH=$MIN_SPH
ROWS=$(( (SPH + 24) / 25 ))
SPH=$(( ROWS * 25 ))

psql -X -q -At -v ON_ERROR_STOP=1 -d "$DB" \
  -v run="$RUN" -v nhalls="$NHALLS" -v per_hall="$PER_HALL" -v rows="$ROWS" \
  -v sph="$SPH" -v clients="$CLIENTS" >"$WORK/fixture" <<'SQL'
-- Its users all register from no address: the per-address registration limit would stop them at 20 (a
-- throw-away benchmark database is assumed, as for everything this script creates).
SELECT admin.set_registration_limit(0) AS registrations_unlimited \gset
SELECT admin.create_cinema('pgbench ' || :'run', 'Benchtown', 'Load Street 1', 'UTC') AS cinema \gset
SELECT admin.create_film('pgbench ' || :'run', 120, 'PG') AS film \gset
CREATE TEMP TABLE h AS
  SELECT g, admin.create_hall(:cinema, 'P' || g, :rows, 25) AS id FROM generate_series(0, :nhalls - 1) AS g;
CREATE TEMP TABLE s AS
  SELECT h.g AS hg, k, admin.create_screening(h.id, :film,
           date_trunc('hour', now()) + interval '2 days' + interval '3 hours' * k, 1200, 'EUR') AS id
    FROM h, generate_series(0, :per_hall - 1) AS k;
CREATE TEMP TABLE u AS
  SELECT g, r.user_id AS id, r.session_id, r.outcome
    FROM generate_series(0, :clients - 1) AS g,
         LATERAL api.auth_register(:'run' || 'u' || g, '\x00'::bytea, 1, 86400) AS r;
SELECT min(id) AS sbase FROM s \gset
SELECT min(se.id) AS seatbase FROM seats AS se JOIN h ON se.hall_id = h.id \gset
SELECT min(id) AS ubase FROM u \gset
-- pgbench computes ids from the client number: they must be contiguous.
SELECT (SELECT bool_and(id - :sbase = hg * :per_hall + k) FROM s)
   AND (SELECT count(*) = :nhalls * :sph AND bool_and(se.id - :seatbase BETWEEN h.g * :sph AND h.g * :sph + :sph - 1)
          FROM seats AS se JOIN h ON se.hall_id = h.id)
   AND (SELECT bool_and(id - :ubase = g AND outcome = 'ok') FROM u) AS contiguous \gset
SELECT :'sbase', :'seatbase', :'ubase', :'contiguous', (SELECT session_id FROM u WHERE g = 0),
       current_setting('server_version');
SQL
IFS='|' read -r SBASE SEATBASE UBASE CONTIGUOUS SESSION PGVERSION <"$WORK/fixture"
if [ "$CONTIGUOUS" != "t" ]; then
  echo "pgbench.sh: the fixture's ids are not contiguous (concurrent inserts?); run again" >&2
  exit 1
fi

case "$WORKLOAD" in
  hold) cat >"$WORK/script.sql" <<'EOF'
\set uid :ubase + :client_id
\set h :client_id % :nscr
\set sid :sbase + :h
\set k :client_id / :nscr
\set seat :seatbase + :h * :sph + (:k / 9) * 25 + (:k % 9) * 3
SELECT * FROM api.hold_seats(:uid, :sid, ARRAY[:seat]::bigint[]);
SELECT * FROM api.release_seats(:uid, :sid, ARRAY[:seat]::bigint[]);
EOF
  ;;
  book) cat >"$WORK/script.sql" <<'EOF'
\set uid :ubase + :client_id
\set n :n + 1
\set sid :sbase + ((:n - 1) / 10) % :nscr
\set k :client_id * 10 + (:n - 1) % 10
\set seat :seatbase + (:k / 9) * 25 + (:k % 9) * 3
SELECT * FROM api.hold_seats(:uid, :sid, ARRAY[:seat]::bigint[]);
SELECT * FROM api.book_seats(:uid, :sid, ARRAY[:seat]::bigint[]);
EOF
  ;;
  session) cat >"$WORK/script.sql" <<'EOF'
SELECT * FROM api.session_user(:sess::uuid);
EOF
  ;;
esac

if [ "$WORKLOAD" = book ]; then NSCR=$PER_HALL; else NSCR=$SCREENINGS; fi
# CPU ticks of the whole cluster: postmaster (with reaped children), live
# children. Empty when the postmaster is not visible from here.
PM=$(head -n 1 "$(psql -X -At -d "$DB" -c 'SHOW data_directory')/postmaster.pid" 2>/dev/null || true)
cluster_ticks() {
  [ -n "$PM" ] && [ -r "/proc/$PM/stat" ] || return 0
  local t p
  t=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$PM/stat")
  for p in $(pgrep -P "$PM"); do
    [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
versions() {
  psql -X -At -d "$DB" -c "SELECT sum(version) FROM screening_versions WHERE screening_id BETWEEN $SBASE AND $SBASE + $NSCR - 1"
}
T0=$(cluster_ticks)
set +e
pgbench -n -M prepared -c "$CLIENTS" -j "$THREADS" -T "$DURATION" -f "$WORK/script.sql" \
  -D ubase="$UBASE" -D sbase="$SBASE" -D seatbase="$SEATBASE" -D sph="$SPH" \
  -D nscr="$NSCR" -D n=0 -D sess="$SESSION" \
  "$DB" >"$WORK/out" 2>&1 &
PGB=$!
STEADY_RATE=null
STEADY_CPU=null
if [ "$WORKLOAD" = hold ] && [ -n "$T0" ]; then
  W=$(awk -v d="$DURATION" 'BEGIN {printf "%.2f", d / 5}')
  sleep "$W"
  S0=$(cluster_ticks); V0=$(versions); W0=$(date +%s.%N)
  sleep "$(awk -v d="$DURATION" -v w="$W" 'BEGIN {printf "%.2f", d - 2 * w}')"
  S1=$(cluster_ticks); V1=$(versions); W1=$(date +%s.%N)
  if [ -n "$V0" ] && [ -n "$V1" ] && [ "$V1" -gt "$V0" ]; then
    STEADY_RATE=$(awk -v n=$((V1 - V0)) -v a="$W0" -v b="$W1" 'BEGIN {printf "%.1f", n / (b - a)}')
    STEADY_CPU=$(awk -v d=$((S1 - S0)) -v hz="$(getconf CLK_TCK)" -v n=$((V1 - V0)) 'BEGIN {printf "%.1f", d / hz * 1e6 / n}')
  fi
fi
wait "$PGB"
STATUS=$?
set -e
T1=$(cluster_ticks)
cat "$WORK/out" >&2

TPS=$(awk '/^tps = / {print $3; exit}' "$WORK/out")
LAT=$(awk '/^latency average = / {print $4; exit}' "$WORK/out")
FAILED=$(awk '/^number of failed transactions:/ {print $5; exit}' "$WORK/out")
ABORTED=$(grep -c 'aborted in command' "$WORK/out" || true)
[ -n "$TPS" ] || TPS=0
case "$WORKLOAD" in
  hold) UNIT=change; RATE_NAME=changes_per_s; RATE=$(awk -v t="$TPS" 'BEGIN {printf "%.1f", 2 * t}') ;;
  book) UNIT=booking; RATE_NAME=bookings_per_s; RATE=$(awk -v t="$TPS" 'BEGIN {printf "%.1f", t}') ;;
  session) UNIT=lookup; RATE_NAME=lookups_per_s; RATE=$(awk -v t="$TPS" 'BEGIN {printf "%.1f", t}') ;;
esac
TXS=$(awk '/number of transactions actually processed/ {split($0, a, ": "); split(a[2], b, "/"); print b[1]; exit}' "$WORK/out")
CPU_TX=null
CPU_UNIT=null
if [ -n "$T0" ] && [ -n "$T1" ] && [ -n "$TXS" ] && [ "$TXS" -gt 0 ]; then
  CPU_TX=$(awk -v d=$((T1 - T0)) -v hz="$(getconf CLK_TCK)" -v n="$TXS" 'BEGIN {printf "%.1f", d / hz * 1e6 / n}')
  # hold: two seat changes per transaction.
  if [ "$WORKLOAD" = hold ]; then CPU_UNIT=$(awk -v c="$CPU_TX" 'BEGIN {printf "%.1f", c / 2}'); else CPU_UNIT=$CPU_TX; fi
fi
printf '{"tool":"pgbench","workload":"%s","clients":%s,"threads":%s,"screenings":%s,"seats_per_hall":%s,"duration_s":%s,"tps":%s,"%s":%s,"rate":%s,"latency_ms_avg":%s,"failed":%s,"aborted_clients":%s,"exit_status":%s,"pg_cpu_us_per_tx":%s,"pg_cpu_us_per_%s":%s,"changes_per_s_steady":%s,"pg_cpu_us_per_change_steady":%s,"server_version":"%s"}\n' \
  "$WORKLOAD" "$CLIENTS" "$THREADS" "$SCREENINGS" "$SPH" "$DURATION" "$TPS" "$RATE_NAME" "$RATE" "$RATE" \
  "${LAT:-null}" "${FAILED:-null}" "$ABORTED" "$STATUS" "$CPU_TX" "$UNIT" "$CPU_UNIT" "$STEADY_RATE" "$STEADY_CPU" "$PGVERSION"
[ "$STATUS" -eq 0 ] && [ "$ABORTED" -eq 0 ]
