-- Several seat changes in one transaction: api.seat_batch (sql/47_seat_batch.sql).
BEGIN;
\ir fixtures.psql
SELECT plan(28);

SELECT pg_temp.make_user('tap_alice') AS alice \gset
SELECT pg_temp.make_user('tap_bob') AS bob \gset
SELECT pg_temp.make_screening(2, 4) AS s1 \gset
SELECT pg_temp.make_screening(2, 4) AS s2 \gset
SELECT pg_temp.make_screening(2, 4) AS s3 \gset
SELECT pg_temp.seat(:s1, 'A1') AS s1a1, pg_temp.seat(:s1, 'A2') AS s1a2,
       pg_temp.seat(:s2, 'A1') AS s2a1, pg_temp.seat(:s2, 'A2') AS s2a2,
       pg_temp.seat(:s3, 'A1') AS s3a1, pg_temp.seat(:s3, 'B4') AS s3b4 \gset

-- Every notification of this transaction in order (the fixture keeps only the last). A failed change's
-- subtransaction takes its entry back with it, as it takes back its pg_notify.
CREATE OR REPLACE FUNCTION internal.send_notification(p_channel text, p_payload text)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify(p_channel, p_payload);
    PERFORM set_config('marquee.sent', coalesce(current_setting('marquee.sent', true), '') || p_payload || E'\n',
                       true);
END;
$$;

-- Bob holds s2 A2 (so Alice's hold of it fails) and Alice holds s3 A1 (so she can book it).
SELECT * FROM api.hold_seats(:bob, :s2, ARRAY[:s2a2]::bigint[]);
SELECT * FROM api.hold_seats(:alice, :s3, ARRAY[:s3a1]::bigint[]);
SELECT pg_temp.version(:s1) AS v1, pg_temp.version(:s2) AS v2, pg_temp.version(:s3) AS v3 \gset
SELECT set_config('marquee.sent', '', true);
SELECT set_config('synchronous_commit', 'on', true);

CREATE TEMP TABLE answers AS
SELECT *
  FROM api.seat_batch(ARRAY['hold', 'hold', 'book'],
                      ARRAY[:alice, :alice, :alice]::bigint[],
                      ARRAY[:s1, :s2, :s3]::bigint[],
                      ARRAY[2, 2, 1],
                      ARRAY[:s1a1, :s1a2, :s2a1, :s2a2, :s3a1]::bigint[]);

SELECT is((SELECT array_agg(ord ORDER BY ord) FROM answers), ARRAY[1, 2, 3], 'one row per change, in order');
SELECT is((SELECT row(code, version, expires_at)::text FROM answers WHERE ord = 1),
          row(NULL::text, :v1 + 1, now() + interval '600 seconds')::text,
          'a hold answers as api.hold_seats does: its expiry and the version after it');
SELECT is(pg_temp.state(:s1, 'A1') || ' ' || pg_temp.state(:s1, 'A2'), format('held:%s held:%s', :alice, :alice),
          'the hold took both its seats');
SELECT is((SELECT code || ' ' || detail FROM answers WHERE ord = 2), 'MQ409 ' || pg_temp.ids(ARRAY[:s2a2]::bigint[]),
          'a refused change answers its SQLSTATE and DETAIL as a row');
SELECT is((SELECT message FROM answers WHERE ord = 2), 'Some of these seats are no longer available.',
          'and its message');
SELECT is(pg_temp.state(:s2, 'A1'), 'free', 'a refused change leaves nothing behind: all or nothing still holds');
SELECT is(pg_temp.version(:s2), :v2::bigint, 'a refused change bumps no version');
SELECT is((SELECT row(code, version, status, seat_ids, total)::text FROM answers WHERE ord = 3),
          row(NULL::text, :v3 + 1, 'confirmed', ARRAY[:s3a1]::bigint[], 1000)::text,
          'a booking after a refused change still commits, and answers as api.book_seats does');
SELECT is(pg_temp.state(:s3, 'A1'), format('booked:%s', :alice), 'the booked seat is booked');
SELECT is(current_setting('synchronous_commit'), 'on',
          'a batch that booked commits with the setting it started with, though a hold in it set it off');
SELECT is(current_setting('marquee.sent'),
          format(E'{"s":%s,"v":%s,"c":[[%s,"held",%s],[%s,"held",%s]]}\n'
                 || E'{"s":%s,"v":%s,"c":[[%s,"booked",%s]]}\n',
                 :s1, :v1 + 1, :s1a1, :alice, :s1a2, :alice, :s3, :v3 + 1, :s3a1, :alice),
          'each successful change sends its own notification, in the order of the batch; the refused one none');

-- Releases and cancellations, and a batch of asynchronous changes only.
SELECT booking_id AS booking FROM answers WHERE ord = 3 \gset
SELECT set_config('synchronous_commit', 'on', true);
CREATE TEMP TABLE answers2 AS
SELECT *
  FROM api.seat_batch(ARRAY['release', 'cancel'],
                      ARRAY[:alice, :alice]::bigint[],
                      ARRAY[:s1, :booking]::bigint[],
                      ARRAY[1, 0],
                      ARRAY[:s1a2]::bigint[]);
SELECT is((SELECT row(code, seat_ids, version)::text FROM answers2 WHERE ord = 1),
          row(NULL::text, ARRAY[:s1a2]::bigint[], :v1 + 2)::text,
          'a release answers the seats it released and the version');
SELECT is((SELECT row(code, booking_id, status, seat_ids, version)::text FROM answers2 WHERE ord = 2),
          row(NULL::text, :booking, 'cancelled', ARRAY[:s3a1]::bigint[], :v3 + 2)::text,
          'a cancellation takes the booking id in p_targets and answers the cancelled booking');
SELECT is(pg_temp.state(:s3, 'A1'), 'free', 'the cancelled booking''s seat is free again');

SELECT set_config('synchronous_commit', 'on', true);
SELECT ok(NOT EXISTS (SELECT FROM api.seat_batch(ARRAY['hold', 'release'], ARRAY[:bob, :alice]::bigint[],
                                                 ARRAY[:s3, :s1]::bigint[], ARRAY[1, 1],
                                                 ARRAY[:s3b4, :s1a1]::bigint[]) AS b
                       WHERE b.code IS NOT NULL),
          'a batch of holds and releases succeeds');
SELECT is(current_setting('synchronous_commit'), 'off',
          'and commits asynchronously, as each of its changes alone would');

-- Bad batches.
SELECT is((SELECT row(code, message)::text
             FROM api.seat_batch(ARRAY['hold', 'bogus'], ARRAY[:bob, :bob]::bigint[], ARRAY[:s1, :s1]::bigint[],
                                 ARRAY[1, 0], ARRAY[:s1a2]::bigint[]) AS b
            WHERE b.ord = 2),
          row('MQ400', 'Unknown change ''bogus''.')::text,
          'an unknown change answers BAD_REQUEST in its row');
SELECT is(pg_temp.state(:s1, 'A2'), format('held:%s', :bob), 'while the change before it commits');
SELECT is(pg_temp.err(format('SELECT * FROM api.seat_batch(ARRAY[''hold''], ARRAY[%s, %s]::bigint[], '
                             'ARRAY[%s]::bigint[], ARRAY[1], ARRAY[%s]::bigint[])', :bob, :bob, :s1, :s1a1)),
          'MQ400', 'arrays of different lengths are BAD_REQUEST for the whole batch');
SELECT is(pg_temp.err(format('SELECT * FROM api.seat_batch(array_fill(''hold''::text, ARRAY[65]), '
                             'array_fill(%s::bigint, ARRAY[65]), array_fill(%s::bigint, ARRAY[65]), '
                             'array_fill(1, ARRAY[65]), array_fill(%s::bigint, ARRAY[65]))', :bob, :s1, :s1a1)),
          'MQ400', 'more than 64 changes are BAD_REQUEST (each success takes a subtransaction id)');
SELECT is((SELECT count(*)::int FROM api.seat_batch('{}', '{}', '{}', '{}', '{}')), 0,
          'an empty batch answers no row');
SELECT is((SELECT code FROM api.seat_batch(ARRAY['hold'], ARRAY[:bob]::bigint[], ARRAY[:s1]::bigint[], ARRAY[0],
                                          '{}'::bigint[])),
          'MQ400', 'a hold of no seat is BAD_REQUEST, as api.hold_seats says');

-- Screening order, and several changes of one screening.
SELECT pg_temp.make_screening(1, 4) AS s4 \gset
SELECT pg_temp.make_screening(1, 4) AS s5 \gset
SELECT pg_temp.seat(:s4, 'A1') AS s4a1, pg_temp.seat(:s4, 'A4') AS s4a4, pg_temp.seat(:s5, 'A1') AS s5a1 \gset
SELECT pg_temp.version(:s4) AS v4, pg_temp.version(:s5) AS v5 \gset
SELECT set_config('marquee.sent', '', true);
CREATE TEMP TABLE answers3 AS
SELECT row_number() OVER () AS ran, b.*
  FROM api.seat_batch(ARRAY['hold', 'hold', 'hold'], ARRAY[:alice, :bob, :alice]::bigint[],
                      ARRAY[:s5, :s4, :s4]::bigint[], ARRAY[1, 1, 1],
                      ARRAY[:s5a1, :s4a1, :s4a4]::bigint[]) AS b;
SELECT is((SELECT array_agg(ord ORDER BY ran) FROM answers3), ARRAY[2, 3, 1],
          'changes run in screening order, in arrival order within a screening; ord names each one''s place');
SELECT is((SELECT array_agg(version ORDER BY ord) FROM answers3), ARRAY[:v5 + 1, :v4 + 1, :v4 + 2]::bigint[],
          'two changes of one screening in a batch are two change sets: two versions');
SELECT is((SELECT count(*)::int FROM regexp_matches(current_setting('marquee.sent'), E'\n', 'g')), 3,
          'and two notifications');

-- Every change of a screening takes the screening's advisory lock before any row lock (sql/40_seats.sql). A DBA's
-- plain UPDATE (no advisory lock) gives Alice holds here, so only the call under test can have taken it.
SELECT pg_temp.make_screening(1, 4) AS s6 \gset
SELECT pg_temp.make_screening(1, 4) AS s7 \gset
UPDATE seat_states SET status = 'held', user_id = :alice, hold_expires_at = now() + interval '5 minutes'
 WHERE screening_id IN (:s6, :s7) AND seat_id IN (pg_temp.seat(:s6, 'A1'), pg_temp.seat(:s7, 'A1'));
CREATE FUNCTION pg_temp.screening_locked(p_screening bigint)
RETURNS boolean
LANGUAGE sql
AS $$
    SELECT EXISTS (SELECT FROM pg_locks AS l
                    WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid() AND l.objsubid = 1
                      AND ((l.classid::bigint << 32) | l.objid::bigint) = p_screening)
$$;
SELECT ok(NOT pg_temp.screening_locked(:s6) AND NOT pg_temp.screening_locked(:s7), 'no lock before the calls');
SELECT * FROM api.release_seats(:alice, :s6, ARRAY[pg_temp.seat(:s6, 'A1')]);
SELECT * FROM api.book_seats(:alice, :s7, ARRAY[pg_temp.seat(:s7, 'A1')]);
SELECT ok(pg_temp.screening_locked(:s6) AND pg_temp.screening_locked(:s7),
          'api.release_seats and api.book_seats take the screening''s advisory lock');

SELECT is(current_setting('lock_timeout'), '0',
          'the batch''s lock_timeout ends with the call: the commit may wait for the notify lock as long as it must');

SELECT * FROM finish();
ROLLBACK;
