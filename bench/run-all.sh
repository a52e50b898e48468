#!/usr/bin/env bash
# The benchmark suite of docs/benchmarks.md against a running server, each
# Marquee scenario followed by the floor (`bench floor`: the design's seat
# change in plain PostgreSQL) with the same users and screenings, RUNS times;
# then the targets table (median of the runs, ratio to the floor of the same
# run), the Markdown tables and the chart.
#
#   DATABASE_URL=postgres://… bench/run-all.sh [OUT_DIR]
#
# The server must already run against DATABASE_URL (see bench/README.md),
# freshly started (the first idle run's RSS figure needs it).
# Environment: BENCH_WS_URL (ws://127.0.0.1:3001/), BENCH_HTTP_URL
# (http://127.0.0.1:3000), BENCH_LABEL (free text stored in every line),
# RUNS (3), QUICK=1 (one run, tiny sizes, to check the tooling), EXTRA=1
# (also the earlier exploration scenarios: 10,000 subscribers, 200 users on
# one and 50 screenings, races, pgbench comparisons; once, after the runs),
# BENCH (the bench binary; default: built here with cargo into
# target/bench-build).
# Writes OUT_DIR/results.jsonl, OUT_DIR/tables.md, OUT_DIR/latency.svg,
# OUT_DIR/machine.txt and OUT_DIR/log.txt (default OUT_DIR: bench/results).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench/results}
mkdir -p "$OUT"
: "${DATABASE_URL:?DATABASE_URL is required}"
export BENCH_WS_URL=${BENCH_WS_URL:-ws://127.0.0.1:3001/}
export BENCH_HTTP_URL=${BENCH_HTTP_URL:-http://127.0.0.1:3000}
if [ -z "${BENCH:-}" ]; then
  CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/bench-build} cargo build --release -q -p bench
  BENCH=${CARGO_TARGET_DIR:-target/bench-build}/release/bench
fi
if [ "${QUICK:-}" = 1 ]; then RUNS=1; fi
RUNS=${RUNS:-3}
RES="$OUT/results.jsonl"
LOG="$OUT/log.txt"
: >"$RES"
: >"$LOG"
LABEL=${BENCH_LABEL:-}

# The busiest processes that are not this benchmark (the server, the
# database's cluster, the bench), by CPU over two seconds: the machine's
# other load, which the ratios to the floor are meant to see through.
others() {
  local pm
  pm=$(psql -X -At -d "$DATABASE_URL" -c 'SELECT pg_backend_pid()' | xargs -r ps -o ppid= -p | tr -d ' ')
  top -b -n 2 -d 2 -w 200 | awk '
    /^top -/ { block++ } block == 2 && $1 ~ /^[0-9]+$/ { print }' |
    while read -r pid user _ _ _ _ _ _ cpu _ _ cmd; do
      ppid=$(ps -o ppid= -p "$pid" 2>/dev/null | tr -d ' ')
      case "$cmd" in marquee | bench | top) continue ;; esac
      [ "$pid" = "$pm" ] || [ "$ppid" = "$pm" ] && continue
      echo "$cpu% $cmd (pid $pid, $user)"
    done | head -n 6 | paste -sd ';' | sed 's/;/; /g'
}

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "runs: $RUNS$([ "${QUICK:-}" = 1 ] && echo ' (QUICK: tiny sizes)')"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "kernel: $(uname -r)"
  echo "memory: $(free -g | awk '/^Mem:/ {print $2 " GiB"}')"
  echo "postgresql: $(psql -X -At -d "$DATABASE_URL" -c 'SHOW server_version')"
  echo "settings: $(psql -X -At -d "$DATABASE_URL" -c "SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings WHERE name IN ('fsync','synchronous_commit','shared_buffers','max_connections','wal_level','jit','full_page_writes')")"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "top other CPU consumers before: $(others)"
} | tee "$OUT/machine.txt"

b() {
  echo "+ bench $*" | tee -a "$LOG"
  "$BENCH" --out "$RES" --label "$L" "$@" 2>>"$LOG" >/dev/null
  tail -n 1 "$RES" | cut -c1-200
}

# The box office's no-orphan check on every hold, off then on, in pgbench
# (Marquee's own hold and release calls, no server), when the database has
# the rule (admin.set_orphan_rule): its PostgreSQL CPU with the rule on over
# with it off. Leaves the rule on, its default.
orphan_rule() {
  local rule
  psql -X -At -d "$DATABASE_URL" -c "SELECT to_regprocedure('admin.set_orphan_rule(boolean)') IS NOT NULL" | grep -q t || return 0
  for rule in off on; do
    echo "+ pgbench.sh hold, orphan rule $rule $*" | tee -a "$LOG"
    psql -X -q -d "$DATABASE_URL" -c "SELECT admin.set_orphan_rule($([ "$rule" = on ] && echo true || echo false))" >/dev/null ||
      { echo "admin.set_orphan_rule failed: no orphan-rule figures" | tee -a "$LOG"; break; }
    if bash bench/pgbench.sh --db "$DATABASE_URL" --workload hold "$@" 2>>"$LOG" >"$OUT/pgbench.json"; then
      tail -n 1 "$OUT/pgbench.json" |
        sed "s/^{/{\"scenario\":\"orphan_rule\",\"orphan_rule\":\"$rule\",/" >>"$RES"
      tail -n 1 "$RES" | cut -c1-200
    else
      echo "pgbench.sh failed with the orphan rule $rule (see $LOG)" | tee -a "$LOG"
    fi
  done
  rm -f "$OUT/pgbench.json"
  psql -X -q -d "$DATABASE_URL" -c "SELECT admin.set_orphan_rule(true)" >/dev/null || true
}

for r in $(seq 1 "$RUNS"); do
  L="${LABEL:+$LABEL, }run $r/$RUNS"
  echo "== $L" | tee -a "$LOG"
  if [ "${QUICK:-}" = 1 ]; then
    b idle --sockets 500 --users 10 --hold 1
    b fanout --halls 2 --subs 10 --rates 20,50 --duration 3 --warmup 1
    F=(--clients 10 --screenings 2 --duration 3 --warmup 1)
    b rush --users 10 --screenings 2 --duration 3 --warmup 1 --no-pgbench
    b floor "${F[@]}" --beside rush
    b rush --users 10 --screenings 2 --duration 3 --warmup 1 --no-pgbench --sync-share 0
    b floor "${F[@]}" --mode hold --beside rush-holds
    b book --users 10 --screenings 2 --duration 3 --warmup 1 --no-pgbench
    b floor "${F[@]}" --beside book
    orphan_rule --clients 10 --screenings 2 --duration 3
    b best --users 10 --screenings 2 --duration 3 --warmup 1
  else
    # idle first: its RSS figure needs a server that has not yet freed (and
    # so kept for reuse) the memory of earlier sockets; later runs show the
    # connect rate.
    b idle --sockets 10000 --users 100 --parallel 64 --hold 5
    # Latency against load: 10 halls × 100 subscribers (the 200 changes/s
    # target point is 20,000 pushes/s).
    b fanout --halls 10 --subs 100 --rates 50,100,200,500,1000,2000 --duration 15 --warmup 3
    # The pre-sale rush: 50 users, own seats, 10 screenings, 2 subscribers
    # per screening, 22 % synchronous commits (book, cancel); then the same
    # with holds and releases only, for PostgreSQL's CPU per hold/release.
    # Each socket at the contract's 50 requests/s (the token bucket refills
    # 50/s and the bench is never ahead of its schedule): 50 users can ask
    # at most 2,500 changes/s, 1,250 bookings/s, which the report shows.
    F=(--clients 50 --screenings 10 --duration 20 --warmup 3)
    R=(--users 50 --screenings 10 --duration 20 --warmup 3 --no-pgbench --conn-rate 50)
    b rush "${R[@]}" --sync-share 0.22
    b floor "${F[@]}" --beside rush
    b rush "${R[@]}" --sync-share 0
    b floor "${F[@]}" --mode hold --beside rush-holds
    # Durable bookings: 50 users over 10 screenings, hold then book.
    b book "${R[@]}"
    b floor "${F[@]}" --beside book
    # The orphan check's cost, same users and screenings.
    orphan_rule --clients 50 --screenings 10 --duration 20
    # Best available below saturation: 50 users over 10 screenings, count 2, 100 requests/s in all.
    b best --users 50 --screenings 10 --count 2 --pairs-per-s 2 --duration 15 --warmup 3
    # The machine alone, nothing of ours running: its own late wake-ups and steal (src/stalls.rs).
    b stalls --duration 15
  fi
done
if [ "${EXTRA:-}" = 1 ] && [ "${QUICK:-}" != 1 ]; then
  L="${LABEL:+$LABEL, }extra"
  echo "== $L" | tee -a "$LOG"
  # 10,000 subscribers.
  b fanout --halls 10 --subs 1000 --rates 10,20,50,100 --duration 15 --warmup 3
  # Seat changes end to end against pgbench (Marquee's own SQL), one
  # screening and many.
  b rush --users 200 --screenings 1 --duration 20 --warmup 3 --pgbench-clients 16,200 --sync-share 0
  b rush --users 200 --screenings 50 --duration 20 --warmup 3 --pgbench-clients 16,200 --sync-share 0
  # Racing for the same seats: errors by code and the consistency check.
  b rush --users 200 --screenings 1 --pattern race --duration 20 --warmup 3 --no-pgbench
  b rush --users 200 --screenings 20 --pattern race --duration 20 --warmup 3 --no-pgbench
  b book --users 64 --duration 20 --warmup 3 --pgbench-clients 16,64
fi
{
  echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "top other CPU consumers after: $(others)"
} | tee -a "$OUT/machine.txt"
"$BENCH" report "$RES" --machine "$OUT/machine.txt" --md "$OUT/tables.md" --svg "$OUT/latency.svg"
echo "wrote $RES, $OUT/tables.md, $OUT/latency.svg"
sed -n '/^### targets/,/^### fanout/p' "$OUT/tables.md" | sed '$d'
