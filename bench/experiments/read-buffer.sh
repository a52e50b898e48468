#!/usr/bin/env bash
# Experiment behind docs/benchmarks.md "memory per idle socket": the same
# server built with warp patched (warp-0.4.3-env-knobs.patch) so that the
# tungstenite read buffer of each WebSocket can be set from the environment
# (MQ_EXP_READ_BUF; warp 0.4 offers no setting for it), then `bench idle`
# against a fresh server per buffer size.
#
#   DATABASE_URL=… bench/experiments/read-buffer.sh [SOCKETS] [SIZES…]
#
# Builds a copy of the work tree in EXP_DIR (default /tmp/mq-exp; reused
# when its binary exists) and runs it on ports 3200/3201.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${DATABASE_URL:?}"
SOCKETS=${1:-5000}
shift || true
SIZES=${*:-default 4096 1024 256}
EXP=${EXP_DIR:-/tmp/mq-exp}
BENCH=${BENCH:-target/bench-build/release/bench}
if [ ! -x "$EXP/target/release/marquee" ]; then
  mkdir -p "$EXP/vendor"
  git ls-files -co --exclude-standard | grep -v '^target/' | grep -v '^bench/' | tar cf - -T - | (cd "$EXP" && tar xf -)
  cp -r "$(dirname "$(cargo metadata --format-version 1 | jq -r '.packages[] | select(.name == "warp") | .manifest_path')")" "$EXP/vendor/warp"
  (cd "$EXP/vendor/warp" && patch -p1 <"$OLDPWD/bench/experiments/warp-0.4.3-env-knobs.patch")
  sed -i 's/members = \[".", "bench"\]/members = ["."]/' "$EXP/Cargo.toml"
  printf '\n[patch.crates-io]\nwarp = { path = "vendor/warp" }\n' >>"$EXP/Cargo.toml"
  (cd "$EXP" && cargo build --release --bin marquee)
fi
for size in $SIZES; do
  if [ "$size" = default ]; then unset MQ_EXP_READ_BUF; else export MQ_EXP_READ_BUF=$size; fi
  DATABASE_URL=$DATABASE_URL JWT_SECRET=exp-secret-exp-secret-exp-secret-0123456789 \
    PORT=3200 WS_PORT=3201 RUST_LOG=warn "$EXP/target/release/marquee" serve >/tmp/read-buffer-exp.log 2>&1 &
  pid=$!
  sleep 3
  echo "read buffer: $size" >&2
  "$BENCH" --ws-url ws://127.0.0.1:3201/ --http-url http://127.0.0.1:3200 --server-pid "$pid" \
    --label "read buffer $size" ${OUT:+--out "$OUT"} idle --sockets "$SOCKETS" --users 50 --hold 3
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  sleep 1
done
