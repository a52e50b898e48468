#!/usr/bin/env bash
# Instructions PostgreSQL executes for one cycle of seat changes, counted by
# valgrind's callgrind in a single-user backend: no client, no network, no
# other session, and the same count whatever else the machine is doing
# (timings on these shared 2-core machines drift by 20 % between runs; the
# count moves by well under 1 %). Compare SQL variants with it, not clocks.
#
#   bench/experiments/cycle-instructions.sh [--marquee BIN] [--cycles N] [--keep DIR]
#
# It makes a throw-away cluster (as the postgres user), migrates it with BIN
# (default target/bench-build/release/marquee: the migrations and sql/ built
# into that binary), loads the demo data, then 3,000 users and 60 screenings
# per demo hall so that the planner sees tables of a real cinema's size (on a
# handful of rows it picks other plans), and counts three cycles:
#
#   hold+release   api.hold_seats then api.release_seats of one seat, each committed
#   hold+book+cancel  api.hold_seats, api.book_seats, api.cancel_booking, each committed
#   floor          the floor's change (bench/src/floor.rs) twice, each committed
#   batched hold+release  10 users' holds of one screening in one api.seat_batch
#                  call, committed, then their 10 releases in another: the
#                  server's seat writer under load (src/models/writer.rs);
#                  reported per hold+release pair
#
# Each is run for 20 and for 20 + N cycles (default N = 100) after 20 warm-up
# cycles in the same backend; the difference over N is one cycle's count.
# Needs valgrind and PostgreSQL's server binaries; takes about 3 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."

MARQUEE=target/bench-build/release/marquee
CYCLES=100
KEEP=""
while [ $# -gt 0 ]; do
  case "$1" in
    --marquee) MARQUEE="$2"; shift 2 ;;
    --cycles) CYCLES="$2"; shift 2 ;;
    --keep) KEEP="$2"; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "cycle-instructions.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v valgrind >/dev/null || { echo "cycle-instructions.sh: valgrind is not installed" >&2; exit 1; }
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$BIN/postgres" ] || { echo "cycle-instructions.sh: PostgreSQL's server binaries not found" >&2; exit 1; }
MARQUEE=$(realpath "$MARQUEE")

WORK=${KEEP:-$(mktemp -d "${TMPDIR:-/tmp}/cycle-instr-XXXX")}
mkdir -p "$WORK"
chmod 755 "$WORK"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$WORK"
cleanup() {
  as_pg "$BIN/pg_ctl" -D "$WORK/data" -m fast -w stop >/dev/null 2>&1 || true
  [ -n "$KEEP" ] || rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
as_pg "$BIN/initdb" -D "$WORK/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
start() {
  as_pg "$BIN/pg_ctl" -D "$WORK/data" -l "$WORK/pg.log" -w \
    -o "-p $PORT -k $WORK -c listen_addresses=127.0.0.1 -c fsync=off -c jit=off" start >/dev/null
}
start
URL="postgres://postgres@127.0.0.1:$PORT/cycles"
P=(psql -X -q -At -v ON_ERROR_STOP=1 -d "$URL")
psql -X -q -d "postgres://postgres@127.0.0.1:$PORT/postgres" -c "CREATE DATABASE cycles"
export JWT_SECRET=cycle-instructions-cycle-instructions-0123456789
DATABASE_URL="$URL" "$MARQUEE" migrate >/dev/null
DATABASE_URL="$URL" "$MARQUEE" seed-demo >/dev/null

read -r USER_ID SCREENING SEAT < <("${P[@]}" -F ' ' <<'SQL'
SELECT admin.set_registration_limit(0) AS unlimited \gset
SELECT count(*) FROM (SELECT api.auth_register('bulk' || g, '\x00'::bytea, g, 86400) FROM generate_series(1, 3000) AS g) AS r
\gset
SELECT min(id) AS film FROM films \gset
SELECT count(admin.create_screening(h.id, :film, now() + interval '20 days' + d * interval '3 hours' + h.id * interval '1 minute',
                                    1000, 'EUR'))
  FROM halls AS h, generate_series(1, 60) AS d
\gset
SELECT admin.create_cinema('cycles', 'Benchtown', 'Load Street 1', 'UTC') AS cinema \gset
SELECT admin.create_hall(:cinema, 'cycles', 1, 25) AS hall \gset
SELECT admin.create_screening(:hall, :film, now() + interval '2 days', 1200, 'EUR') AS screening \gset
SELECT r.user_id, :screening, (SELECT s.id FROM seats AS s WHERE s.hall_id = :hall AND s.x = 12)
  FROM api.auth_register('cycles', '\x00'::bytea, 1, 86400) AS r;
SQL
)
# The batch: 10 bulk users, every third seat of a row of 40 (no seat left alone between two holds).
read -r B_SCREENING B_USERS B_SEATS < <("${P[@]}" -F ' ' <<'SQL'
SELECT min(id) AS film FROM films \gset
SELECT id AS cinema FROM cinemas WHERE name = 'cycles' \gset
SELECT admin.create_hall(:cinema, 'cycles-batch', 1, 40) AS bhall \gset
SELECT admin.create_screening(:bhall, :film, now() + interval '2 days', 1200, 'EUR') AS bscreening \gset
SELECT :bscreening,
       (SELECT array_agg(u.id ORDER BY u.id) FROM (SELECT id FROM users WHERE username LIKE 'bulk%' ORDER BY id LIMIT 10) AS u),
       (SELECT array_agg(s.id ORDER BY s.x) FROM seats AS s WHERE s.hall_id = :bhall AND s.x % 3 = 0 AND s.x < 30);
SQL
)
"${P[@]}" -c "ANALYZE"

"${P[@]}" <<'SQL'
CREATE PROCEDURE public.cycle_hold_release(p_user bigint, p_screening bigint, p_seat bigint, p_n int)
LANGUAGE plpgsql
AS $$
BEGIN
    FOR i IN 1..p_n LOOP
        PERFORM api.hold_seats(p_user, p_screening, ARRAY[p_seat]);
        COMMIT;
        PERFORM api.release_seats(p_user, p_screening, ARRAY[p_seat]);
        COMMIT;
    END LOOP;
END;
$$;
CREATE PROCEDURE public.cycle_book(p_user bigint, p_screening bigint, p_seat bigint, p_n int)
LANGUAGE plpgsql
AS $$
DECLARE
    v_booking bigint;
BEGIN
    FOR i IN 1..p_n LOOP
        PERFORM api.hold_seats(p_user, p_screening, ARRAY[p_seat]);
        COMMIT;
        SELECT b.booking_id INTO v_booking FROM api.book_seats(p_user, p_screening, ARRAY[p_seat]) AS b;
        COMMIT;
        PERFORM api.cancel_booking(p_user, v_booking);
        COMMIT;
    END LOOP;
END;
$$;
CREATE PROCEDURE public.cycle_batch(p_users bigint[], p_screening bigint, p_seats bigint[], p_n int)
LANGUAGE plpgsql
AS $$
DECLARE
    v_k       int := cardinality(p_users);
    v_targets bigint[] := array_fill(p_screening, ARRAY[cardinality(p_users)]);
    v_counts  int[] := array_fill(1, ARRAY[cardinality(p_users)]);
BEGIN
    FOR i IN 1..p_n LOOP
        IF EXISTS (SELECT FROM api.seat_batch(array_fill('hold'::text, ARRAY[v_k]), p_users, v_targets, v_counts,
                                              p_seats) AS b WHERE b.code IS NOT NULL) THEN
            RAISE EXCEPTION 'a batched hold failed';
        END IF;
        COMMIT;
        IF EXISTS (SELECT FROM api.seat_batch(array_fill('release'::text, ARRAY[v_k]), p_users, v_targets, v_counts,
                                              p_seats) AS b WHERE b.code IS NOT NULL) THEN
            RAISE EXCEPTION 'a batched release failed';
        END IF;
        COMMIT;
    END LOOP;
END;
$$;
-- The floor's transaction as bench/src/floor.rs and the issue's floor.sh run it.
CREATE TABLE public.cycle_floor_screening (id bigint PRIMARY KEY, hall bigint NOT NULL, version bigint NOT NULL DEFAULT 0);
CREATE TABLE public.cycle_floor_seat (screening bigint NOT NULL REFERENCES public.cycle_floor_screening, seat bigint NOT NULL,
                                      status text NOT NULL DEFAULT 'free', user_id bigint, PRIMARY KEY (screening, seat));
INSERT INTO public.cycle_floor_screening SELECT s, s FROM generate_series(1, 10) AS s;
INSERT INTO public.cycle_floor_seat (screening, seat) SELECT s, n FROM generate_series(1, 10) AS s, generate_series(1, 400) AS n;
CREATE FUNCTION public.cycle_floor_change(p_screening bigint, p_seat bigint, p_user bigint)
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    v_status text;
    v_version bigint;
    v_hall bigint;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    UPDATE public.cycle_floor_seat SET status = CASE status WHEN 'free' THEN 'held' ELSE 'free' END,
                                       user_id = CASE status WHEN 'free' THEN p_user END
     WHERE screening = p_screening AND seat = p_seat RETURNING status INTO v_status;
    UPDATE public.cycle_floor_screening SET version = version + 1 WHERE id = p_screening
    RETURNING version, hall INTO v_version, v_hall;
    PERFORM pg_notify('hall_' || v_hall, '{"s":' || p_screening || ',"v":' || v_version || ',"c":[[' || p_seat
                      || ',"' || v_status || '",' || p_user || ']]}');
    RETURN v_version;
END;
$$;
CREATE PROCEDURE public.cycle_floor(p_n int)
LANGUAGE plpgsql
AS $$
BEGIN
    FOR i IN 1..p_n LOOP
        PERFORM public.cycle_floor_change(1, 7, 42);
        COMMIT;
        PERFORM public.cycle_floor_change(1, 7, 42);
        COMMIT;
    END LOOP;
END;
$$;
ANALYZE public.cycle_floor_screening;
ANALYZE public.cycle_floor_seat;
SQL
as_pg "$BIN/pg_ctl" -D "$WORK/data" -m fast -w stop >/dev/null

count() {  # $1: a CALL with %N% for the cycle count; prints instructions per cycle
  local n total first
  for n in 20 $((20 + CYCLES)); do
    printf '%s;\n\n%s;\n\n' "${1//%N%/20}" "${1//%N%/$n}" >"$WORK/in.sql"
    chmod 644 "$WORK/in.sql"
    as_pg valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.$n" \
      "$BIN/postgres" --single -D "$WORK/data" -c fsync=off -c jit=off -j cycles <"$WORK/in.sql" >"$WORK/single.$n" 2>"$WORK/valgrind.$n"
    if grep -q ERROR "$WORK/single.$n"; then
      echo "cycle-instructions.sh: $(grep -m1 ERROR "$WORK/single.$n")" >&2
      exit 1
    fi
    total=$(sed -n 's/^summary: //p; s/^totals: //p' "$WORK/callgrind.$n" | head -n 1)
    if [ "$n" = 20 ]; then first=$total; fi
  done
  echo $(((total - first) / CYCLES))
}

hr=$(count "CALL public.cycle_hold_release($USER_ID, $SCREENING, $SEAT, %N%)")
bk=$(count "CALL public.cycle_book($USER_ID, $SCREENING, $SEAT, %N%)")
fl=$(count "CALL public.cycle_floor(%N%)")
bt=$(count "CALL public.cycle_batch('$B_USERS', $B_SCREENING, '$B_SEATS', %N%)")
bt=$((bt / 10))
echo "hold+release: $hr instructions per cycle"
echo "hold+book+cancel: $bk instructions per cycle"
echo "floor (two changes): $fl instructions per cycle"
echo "batched hold+release (10 per transaction): $bt instructions per pair"
printf '{"experiment":"cycle-instructions","marquee":"%s","cycles":%s,"hold_release":%s,"hold_book_cancel":%s,"floor_two_changes":%s,"batched_hold_release":%s}\n' \
  "$MARQUEE" "$CYCLES" "$hr" "$bk" "$fl" "$bt"
