#!/usr/bin/env bash
# The orphan rule's price: PostgreSQL CPU per hold with setting orphan_rule on
# and off, same database, same run, alternating (issue: "the orphan check costs
# at most 15 % more PostgreSQL CPU per hold than with the rule off").
#
#   bench/orphan-cost.sh [--clients 10] [--screenings 10] [--duration 10] [--rounds 3]
#
# Needs the benchmark cluster of bench/pg-cluster.sh (started, `marquee
# migrate` applied to its database): the cluster's CPU is read from /proc, so
# the cluster must run on this machine. Environment as pg-cluster.sh
# (BENCH_PG_DIR, BENCH_PG_PORT).
#
# Workload: pgbench, one client = one user with a seat of its own, clients
# spread over N screenings, each transaction api.hold_seats then
# api.release_seats of that seat (as bench/pgbench.sh --workload hold). The
# clients' seats are three apart in their rows, so no hold ever leaves a seat
# alone and every hold succeeds with the rule on as with it off: the rule is
# checked on every hold, and only its cost differs.
#
# The check runs in the hold only, so its price per hold is
#   (CPU per pair, rule on) - (CPU per pair, rule off),
# compared with the hold's own CPU with the rule off: the pair's CPU times the
# hold's share of the pair's execution time (pg_stat_statements when
# installed, else half). That share is wall time, so by default every client
# has a screening of its own (no client waits for another's locks and the
# wall time is CPU time). Prints one line per run and a JSON line last.
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=10; SCREENINGS=10; DURATION=10; ROUNDS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --clients) CLIENTS=$2; shift 2 ;;
    --screenings) SCREENINGS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "orphan-cost.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
DIR=${BENCH_PG_DIR:-/tmp/marquee-bench}
DB=$(bench/pg-cluster.sh url)
PIDFILE="$DIR/pg/postmaster.pid"
[ -r "$PIDFILE" ] || { echo "orphan-cost.sh: no cluster at $DIR (run bench/pg-cluster.sh start)" >&2; exit 1; }
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$DB" "$@"; }

# The cluster's CPU ticks: postmaster (with its reaped children) and the live backends.
ticks() {
  local root t p
  root=$(head -n 1 "$PIDFILE")
  t=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$root/stat")
  for p in $(pgrep -P "$root"); do
    [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
HZ=$(getconf CLK_TCK)

PER=$(( (CLIENTS + SCREENINGS - 1) / SCREENINGS ))
ROWS=$(( (3 * PER + 24) / 25 ))
RUN="oc$(date +%s)$$"
read -r SBASE SEATBASE UBASE SPH <<<"$(q -F ' ' -v run="$RUN" -v n="$SCREENINGS" -v rows="$ROWS" -v clients="$CLIENTS" <<'SQL'
SELECT admin.create_cinema('orphan cost ' || :'run', 'Benchtown', 'Load Street 1', 'UTC') AS cinema \gset
SELECT admin.create_film('orphan cost ' || :'run', 120, 'PG') AS film \gset
CREATE TEMP TABLE h AS
  SELECT g, admin.create_hall(:cinema, 'O' || g, :rows, 25) AS id FROM generate_series(0, :n - 1) AS g ORDER BY g;
CREATE TEMP TABLE s AS
  SELECT h.g, admin.create_screening(h.id, :film, now() + interval '2 days', 1200, 'EUR') AS id FROM h ORDER BY h.g;
INSERT INTO users (username, totp_secret, last_step)
SELECT :'run' || 'u' || g, '\x00', 0 FROM generate_series(0, :clients - 1) AS g ORDER BY g;
SELECT (SELECT min(id) FROM s),
       (SELECT min(se.id) FROM seats AS se JOIN h ON se.hall_id = h.id),
       (SELECT min(id) FROM users WHERE username LIKE :'run' || 'u%'),
       :rows * 25;
SQL
)"
# pgbench computes ids from the client number: halls' seats, screenings and users are each contiguous here
# (created in one session, in order, on a benchmark database nobody else writes to).
cat >"/tmp/$RUN.sql" <<'EOF'
\set uid :ubase + :client_id
\set h :client_id % :nscr
\set sid :sbase + :h
\set seat :seatbase + :h * :sph + 3 * (:client_id / :nscr)
SELECT * FROM api.hold_seats(:uid, :sid, ARRAY[:seat]::bigint[]);
SELECT * FROM api.release_seats(:uid, :sid, ARRAY[:seat]::bigint[]);
EOF
trap 'rm -f "/tmp/$RUN.sql"' EXIT
has_pgss=$(q -c "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'")

measure() {  # measure on|off -> "cpu_us_per_pair hold_share pairs"
  q -c "SELECT admin.set_orphan_rule($([ "$1" = on ] && echo true || echo false))" >/dev/null
  [ "$has_pgss" = 1 ] && q -c "SELECT pg_stat_statements_reset()" >/dev/null
  local t0 t1 out pairs share
  t0=$(ticks)
  out=$(pgbench -n -M prepared -c "$CLIENTS" -j 2 -T "$DURATION" -f "/tmp/$RUN.sql" \
    -D ubase="$UBASE" -D sbase="$SBASE" -D seatbase="$SEATBASE" -D sph="$SPH" -D nscr="$SCREENINGS" "$DB" 2>&1)
  t1=$(ticks)
  pairs=$(awk '/number of transactions actually processed/{split($0,a,": "); split(a[2],b,"/"); print b[1]}' <<<"$out")
  if grep -q 'number of failed transactions: [1-9]\|aborted' <<<"$out"; then
    echo "orphan-cost.sh: some calls failed:" >&2; grep -E 'failed|aborted|ERROR' <<<"$out" >&2; exit 1
  fi
  share=0.5
  if [ "$has_pgss" = 1 ]; then
    share=$(q -c "SELECT round((sum(total_exec_time) FILTER (WHERE query LIKE '%api.hold_seats%')
                        / nullif(sum(total_exec_time), 0))::numeric, 3)
                    FROM pg_stat_statements WHERE query LIKE '%api.hold_seats%' OR query LIKE '%api.release_seats%'")
  fi
  awk -v d=$((t1 - t0)) -v hz="$HZ" -v n="$pairs" -v s="$share" 'BEGIN {printf "%.1f %s %d\n", d / hz * 1e6 / n, s, n}'
}

ON=(); OFF=(); SHARE=()
for r in $(seq 1 "$ROUNDS"); do
  read -r c_off s_off n_off <<<"$(measure off)"
  read -r c_on _ n_on <<<"$(measure on)"
  OFF+=("$c_off"); ON+=("$c_on"); SHARE+=("$s_off")
  echo "round $r: rule off ${c_off} us per hold+release (${n_off} pairs), rule on ${c_on} us (${n_on} pairs), hold share ${s_off}"
done
q -c "SELECT admin.set_orphan_rule(true)" >/dev/null
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
m_off=$(median "${OFF[@]}"); m_on=$(median "${ON[@]}"); m_share=$(median "${SHARE[@]}")
awk -v off="$m_off" -v on="$m_on" -v sh="$m_share" -v c="$CLIENTS" -v s="$SCREENINGS" -v r="$ROUNDS" 'BEGIN {
  hold = off * sh; extra = on - off;
  printf "median: hold %.1f us with the rule off, +%.1f us with it on (%+.1f %%)\n", hold, extra, 100 * extra / hold;
  printf "{\"tool\":\"orphan-cost\",\"clients\":%d,\"screenings\":%d,\"rounds\":%d,\"pair_cpu_us_off\":%.1f,\"pair_cpu_us_on\":%.1f,\"hold_share\":%s,\"hold_cpu_us_off\":%.1f,\"orphan_check_cpu_us\":%.1f,\"orphan_check_pct\":%.1f}\n",
         c, s, r, off, on, sh, hold, extra, 100 * extra / hold }'
