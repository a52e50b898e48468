#!/usr/bin/env bash
# SQL checks that need committed transactions, so they cannot live in the
# rolled-back pgTAP files:
#   * notifications really reach a LISTENing session at commit, with the
#     documented channel and payload, and a rolled-back change sends none;
#   * concurrent sessions: exactly one of many racing holds on one seat wins,
#     hold/release/sweep churn never deadlocks, and a listener sees versions
#     arrive gap-free in commit order.
#
#   tests/sql/live.sh DBNAME_OR_CONNINFO      (run.sh calls it)
#
# Creates its own cinema, hall, film, screenings and users (names carry a
# per-run tag) and deletes them on exit. Prints TAP; exits non-zero on failure.
set -uo pipefail

DB=$1
TAG="live$$"
WORK=$(mktemp -d)
WORKERS=6
ROUNDS=15

q() { psql -X -q -t -A -v ON_ERROR_STOP=1 --dbname "$DB" "$@"; }

n=0
failed=0
check() {  # check HAVE WANT DESCRIPTION
    n=$((n + 1))
    if [ "$1" == "$2" ]; then
        echo "ok $n - $3"
    else
        echo "not ok $n - $3"
        printf '#   have: %s\n#   want: %s\n' "$1" "$2"
        failed=$((failed + 1))
    fi
}

cleanup() {
    # Reverse order of the foreign keys: booking seats, seat states, bookings, screenings, layout, users.
    if ! q -1 >/dev/null 2>"$WORK/cleanup.err" <<SQL
CREATE TEMP TABLE live_screenings AS
SELECT sc.id FROM screenings sc JOIN halls h ON h.id = sc.hall_id JOIN cinemas c ON c.id = h.cinema_id
 WHERE c.name = 'Live test ${TAG}';
DELETE FROM booking_seats WHERE screening_id IN (SELECT id FROM live_screenings);
DELETE FROM seat_states WHERE screening_id IN (SELECT id FROM live_screenings);
DELETE FROM bookings WHERE screening_id IN (SELECT id FROM live_screenings);
DELETE FROM screenings WHERE id IN (SELECT id FROM live_screenings);
DELETE FROM seats WHERE hall_id IN (SELECT h.id FROM halls h JOIN cinemas c ON c.id = h.cinema_id
                                    WHERE c.name = 'Live test ${TAG}');
DELETE FROM halls WHERE cinema_id IN (SELECT id FROM cinemas WHERE name = 'Live test ${TAG}');
DELETE FROM cinemas WHERE name = 'Live test ${TAG}';
DELETE FROM films WHERE title = 'Live test ${TAG}';
DELETE FROM users WHERE username LIKE '${TAG}\_%';
DELETE FROM auth_failures WHERE username LIKE '${TAG}\_%';
SQL
    then
        echo "# live.sh: could not remove its test data (tag ${TAG}):"
        sed 's/^/#   /' "$WORK/cleanup.err"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# Notifications as psql prints them: "<channel> <payload>", one per line.
notifications() {
    sed -n 's/^Asynchronous notification "\([^"]*\)" with payload "\(.*\)" received from server process.*$/\1 \2/p' "$1"
}

echo "1..9"

# --- Fixtures (committed) ---------------------------------------------------------------------------------------
read -r CINEMA HALL SCR SCR2 < <(q <<SQL
SELECT admin.create_cinema('Live test ${TAG}', 'Testville', '1 Test Street', 'UTC') AS cinema \gset
SELECT admin.create_hall(:cinema, 'Hall', 3, 4) AS hall \gset
SELECT admin.create_film('Live test ${TAG}', 90, '0') AS film \gset
SELECT admin.create_screening(:hall, :film, now() + interval '1 day', 500, 'EUR') AS scr \gset
SELECT admin.create_screening(:hall, :film, now() + interval '2 days', 500, 'EUR') AS scr2 \gset
\echo :cinema :hall :scr :scr2
SQL
)
if [ -z "${SCR2:-}" ]; then
    echo "Bail out! could not create the live test fixtures"
    exit 1
fi
mapfile -t USERS < <(q -c "INSERT INTO users (username, totp_secret, last_step)
                           SELECT '${TAG}_' || i, '\x00'::bytea, 0 FROM generate_series(1, 8) AS i RETURNING id")
mapfile -t SEATS < <(q -c "SELECT id FROM seats WHERE hall_id = $HALL ORDER BY y, x")
U1=${USERS[0]}
U2=${USERS[1]}
S1=${SEATS[0]}
S2=${SEATS[1]}
S3=${SEATS[2]}
S4=${SEATS[3]}

# --- 1. Real notifications, one session ------------------------------------------------------------------------
q >"$WORK/notify.out" 2>&1 <<SQL
LISTEN hall_${HALL};
LISTEN marquee_sessions;
SELECT 1 FROM api.hold_seats($U1, $SCR, ARRAY[$S2, $S1]::bigint[]);
SELECT 1 FROM api.hold_seats($U1, $SCR, ARRAY[$S1]::bigint[]);
UPDATE seat_states SET status = 'blocked', user_id = NULL, hold_expires_at = NULL
 WHERE screening_id = $SCR AND seat_id = $S3;
BEGIN;
SELECT 1 FROM api.hold_seats($U2, $SCR, ARRAY[$S4]::bigint[]);
ROLLBACK;
SELECT 1 FROM api.book_seats($U1, $SCR, ARRAY[$S1]::bigint[]);
SELECT 1 FROM api.release_seats($U1, $SCR, ARRAY[$S2]::bigint[]);
INSERT INTO sessions (user_id, expires_at) VALUES ($U1, now() + interval '1 hour') RETURNING id AS sid \gset
SELECT api.revoke_session(:'sid');
\echo session :sid
SELECT 1;
SQL
SID=$(sed -n 's/^session //p' "$WORK/notify.out")
check "$(notifications "$WORK/notify.out" | tr '\n' '|')" \
"hall_${HALL} {\"s\":${SCR},\"v\":1,\"c\":[[${S1},\"held\",${U1}],[${S2},\"held\",${U1}]]}|\
hall_${HALL} {\"s\":${SCR},\"v\":2,\"c\":[[${S3},\"blocked\",null]]}|\
hall_${HALL} {\"s\":${SCR},\"v\":3,\"c\":[[${S1},\"booked\",${U1}]]}|\
hall_${HALL} {\"s\":${SCR},\"v\":4,\"c\":[[${S2},\"free\",null]]}|\
marquee_sessions ${SID}|" \
    "a LISTENing session gets one notification per change set at commit (hold, DBA block, book, release, logout); a renewal and a rolled-back hold send none"
check "$(q -c "SELECT version FROM screening_versions WHERE screening_id = $SCR")" "4" \
    "a rolled-back change does not use up a version"

# --- 2. Racing holds on one seat -------------------------------------------------------------------------------
START=$(q -c "SELECT now() + interval '1.5 seconds'")
# The listener stays until the race and the churn are over, however long a busy machine takes (a fixed window
# once ended before the last commits): a guard session named live-churn lives until the churn is done, and the
# listener polls for it between short sleeps (psql prints notifications between commands), then stays for one
# more round trip so the last commits' notifications are read.
PGAPPNAME=live-churn psql -X -q -t -A --dbname "$DB" -c "SELECT pg_sleep(600)" >/dev/null 2>&1 &
GUARD=$!
{
    echo "LISTEN hall_${HALL};"
    echo "SELECT pg_sleep_until('$START'::timestamptz + interval '1 second');"
    for _ in $(seq 1 600); do
        echo "SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE application_name = 'live-churn') AS churn_done \\gset"
        echo "\\if :churn_done"
        echo "SELECT pg_sleep(0.2);"
        echo "SELECT 1;"
        echo "\\q"
        echo "\\endif"
        echo "SELECT pg_sleep(0.1);"
    done
} >"$WORK/listen.sql"
q -f "$WORK/listen.sql" >"$WORK/listen.out" 2>&1 &
LISTENER=$!
PIDS=()
for i in $(seq 0 7); do
    (psql -X -q -t -A --dbname "$DB" >"$WORK/race.$i.out" 2>&1 <<SQL
\set VERBOSITY sqlstate
SELECT pg_sleep_until('$START');
SELECT 'won' FROM api.hold_seats(${USERS[$i]}, $SCR2, ARRAY[${SEATS[11]}]::bigint[]);
SQL
    ) &
    PIDS+=($!)
done
wait "${PIDS[@]}"
check "$(cat "$WORK"/race.*.out | grep -c '^won$') $(cat "$WORK"/race.*.out | grep -c 'ERROR:  MQ409')" "1 7" \
    "of 8 sessions racing to hold one seat exactly one wins; the others get SEAT_UNAVAILABLE"

# --- 3. Churn: overlapping holds, releases, lapses and sweeps at once ------------------------------------------
PIDS=()
for w in $(seq 1 $WORKERS); do
    {
        echo '\set VERBOSITY sqlstate'
        echo "SELECT pg_sleep_until('$START'::timestamptz + interval '0.5 seconds');"
        for r in $(seq 1 $ROUNDS); do
            a=${SEATS[$((RANDOM % 11))]}
            b=${SEATS[$((RANDOM % 11))]}
            c=${SEATS[$((RANDOM % 11))]}
            echo "SELECT 'held' FROM api.hold_seats(${USERS[$w]}, $SCR2, ARRAY[$c, $a, $b]::bigint[]);"
            echo "SELECT 'released' FROM api.release_seats(${USERS[$w]}, $SCR2, ARRAY[$b, $c, $a]::bigint[]);"
        done
    } >"$WORK/churn.$w.sql"
    psql -X -q -t -A --dbname "$DB" -f "$WORK/churn.$w.sql" >"$WORK/churn.$w.out" 2>&1 &
    PIDS+=($!)
done
{
    echo '\set VERBOSITY sqlstate'
    echo "SELECT pg_sleep_until('$START'::timestamptz + interval '0.5 seconds');"
    for r in $(seq 1 $ROUNDS); do
        # Let some holds lapse (rows locked in seat order, like the api does), then sweep.
        echo "UPDATE seat_states SET hold_expires_at = now() - interval '1 second'
               WHERE (screening_id, seat_id) IN (SELECT screening_id, seat_id FROM seat_states
                                                  WHERE screening_id = $SCR2 AND status = 'held' AND seat_id <> ${SEATS[11]}
                                                  ORDER BY seat_id LIMIT 2 FOR UPDATE);"
        echo "SELECT 'swept' FROM api.sweep_expired_holds();"
    done
} >"$WORK/sweep.sql"
psql -X -q -t -A --dbname "$DB" -f "$WORK/sweep.sql" >"$WORK/sweep.out" 2>&1 &
PIDS+=($!)
wait "${PIDS[@]}"
q -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'live-churn'" >/dev/null
wait "$GUARD" 2>/dev/null || true
wait "$LISTENER"

check "$(cat "$WORK"/churn.*.out "$WORK/sweep.out" | grep 'ERROR' | grep -v -c -E 'ERROR:  MQ(409|411|422)$')" "0" \
    "concurrent holds, releases, lapses and sweeps raise no error but SEAT_UNAVAILABLE, HOLD_LIMIT or SEAT_RULE (no deadlock)"
check "$(cat "$WORK"/churn.*.out | grep -c -E '^(held|released)$|ERROR')" "$((WORKERS * ROUNDS * 2))" \
    "every one of the $((WORKERS * ROUNDS * 2)) churn calls answered, with a result or a business error"

notifications "$WORK/listen.out" | grep "\"s\":${SCR2}," >"$WORK/versions.txt"
VERSIONS=$(sed 's/.*"v":\([0-9]*\).*/\1/' "$WORK/versions.txt" | tr '\n' ' ')
LAST=$(q -c "SELECT version FROM screening_versions WHERE screening_id = $SCR2")
check "$VERSIONS" "$(seq -s ' ' 1 "$LAST") " \
    "the listener saw versions 1..$LAST of the raced screening, each once, in order (commit order, gap-free)"
check "$(grep -c '"r":1' "$WORK/versions.txt")" "0" "small change sets are sent whole, not as resync notices"

# Replaying the notifications over the initial all-free state gives the final state.
REPLAYED=$(sed 's/.*"c":\[\(.*\)\]}$/\1/' "$WORK/versions.txt" | sed 's/\],\[/]\n[/g' | tr -d '[]' \
           | awk -F, '{state[$1] = $2 ($3 == "null" ? "" : ":" $3)} END {for (s in state) print s, state[s]}' \
           | tr -d '"' | grep -v ' free$' | sort -n | tr '\n' ' ')
ACTUAL=$(q -c "SELECT seat_id || ' ' || status || coalesce(':' || user_id, '') FROM api.hall_snapshot($SCR2)
               WHERE status <> 'free' ORDER BY seat_id" | tr '\n' ' ')
check "$REPLAYED" "$ACTUAL" "applying every notification in version order reproduces the hall snapshot"
WINNER=$(grep -l '^won$' "$WORK"/race.*.out | sed 's/.*race\.\([0-9]*\)\.out/\1/')
check "$(q -c "SELECT status || ':' || user_id FROM seat_states WHERE screening_id = $SCR2 AND seat_id = ${SEATS[11]}")" \
    "held:${USERS[${WINNER:-0}]}" "the race winner still holds its seat after all the churn"

if [ $failed -ne 0 ]; then
    echo "# live.sh: $failed of $n checks failed"
    exit 1
fi
