#!/usr/bin/env bash
# The whole benchmark suite of docs/benchmarks.md against a running server,
# then the Markdown tables and the chart.
#
#   DATABASE_URL=postgres://… bench/run-all.sh [OUT_DIR]
#
# The server must already run against DATABASE_URL (see bench/README.md).
# Environment: BENCH_WS_URL (ws://127.0.0.1:3001/), BENCH_HTTP_URL
# (http://127.0.0.1:3000), BENCH_LABEL (free text stored in every line),
# QUICK=1 (tiny sizes, to check the tooling), BENCH (the bench binary;
# default: built here with cargo into target/bench-build).
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
RES="$OUT/results.jsonl"
LOG="$OUT/log.txt"
: >"$RES"
: >"$LOG"
LABEL=${BENCH_LABEL:-}

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "kernel: $(uname -r)"
  echo "memory: $(free -g | awk '/^Mem:/ {print $2 " GiB"}')"
  echo "postgresql: $(psql -X -At -d "$DATABASE_URL" -c 'SHOW server_version')"
  echo "settings: $(psql -X -At -d "$DATABASE_URL" -c "SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings WHERE name IN ('fsync','synchronous_commit','shared_buffers','max_connections','wal_level','jit','full_page_writes')")"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/machine.txt"

b() {
  echo "+ bench $*" | tee -a "$LOG"
  "$BENCH" --out "$RES" --label "$LABEL" "$@" 2>>"$LOG" >/dev/null
  tail -n 1 "$RES" | cut -c1-200
}

# idle first: its RSS figure needs a server that has not yet freed (and so
# kept for reuse) the memory of earlier sockets. Start the server afresh.
if [ "${QUICK:-}" = 1 ]; then
  b idle --sockets 500 --users 10 --hold 1
  b fanout --halls 2 --subs 10 --rates 20,50 --duration 3 --warmup 1
  b rush --users 20 --screenings 1 --duration 3 --warmup 1 --pgbench-clients 4
  b rush --users 20 --screenings 4 --pattern race --duration 3 --warmup 1 --no-pgbench
  b book --users 8 --duration 3 --warmup 1 --pgbench-clients 4
else
  b idle --sockets 10000 --users 100 --parallel 64 --hold 5
  # Latency against load: 10 halls × 100 subscribers (the 200 changes/s
  # target point is 20,000 pushes/s).
  b fanout --halls 10 --subs 100 --rates 50,100,200,500,1000,2000 --duration 15 --warmup 3
  # 10,000 subscribers.
  b fanout --halls 10 --subs 1000 --rates 10,20,50,100 --duration 15 --warmup 3
  # Seat changes end to end against pgbench, one screening and many.
  b rush --users 200 --screenings 1 --duration 20 --warmup 3 --pgbench-clients 16,200
  b rush --users 200 --screenings 50 --duration 20 --warmup 3 --pgbench-clients 16,200
  # Racing for the same seats: errors by code and the consistency check.
  b rush --users 200 --screenings 1 --pattern race --duration 20 --warmup 3 --no-pgbench
  b rush --users 200 --screenings 20 --pattern race --duration 20 --warmup 3 --no-pgbench
  # Durable bookings.
  b book --users 64 --duration 20 --warmup 3 --pgbench-clients 16,64
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt"
"$BENCH" report "$RES" --md "$OUT/tables.md" --svg "$OUT/latency.svg"
echo "wrote $RES, $OUT/tables.md, $OUT/latency.svg"
