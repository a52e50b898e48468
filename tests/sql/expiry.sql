-- Hold expiry: lapsed holds read as free everywhere; api.sweep_expired_holds frees them.
BEGIN;
\ir fixtures.psql
SELECT plan(17);

SELECT pg_temp.make_user('tap_alice') AS alice \gset
SELECT pg_temp.make_user('tap_bob') AS bob \gset
SELECT pg_temp.make_screening(2, 4) AS scr \gset
SELECT pg_temp.same_hall_screening(:scr, '2 days') AS scr2 \gset
SELECT pg_temp.seat(:scr, 'A1') AS a1, pg_temp.seat(:scr, 'A2') AS a2, pg_temp.seat(:scr, 'A3') AS a3,
       pg_temp.seat(:scr, 'B1') AS b1, pg_temp.seat(:scr, 'B2') AS b2 \gset

-- Only this test's seats may lapse, so sweep counts are exact even in a database with other data.
UPDATE seat_states SET status = 'free', user_id = NULL, hold_expires_at = NULL, expired_holder = NULL
 WHERE status = 'held' AND hold_expires_at <= now() + interval '1 day';

SELECT * FROM api.hold_seats(:alice, :scr, ARRAY[:a1, :a2]::bigint[]);
SELECT * FROM api.hold_seats(:bob, :scr, ARRAY[:b1]::bigint[]);
SELECT * FROM api.hold_seats(:bob, :scr2, ARRAY[:a1, :b2]::bigint[]);
UPDATE seat_states SET hold_expires_at = now() - interval '1 second'
 WHERE (screening_id = :scr AND seat_id IN (:a1, :a2)) OR (screening_id = :scr2 AND seat_id = :a1);

-- Before the sweep ---------------------------------------------------------------------------------------------

SELECT is((SELECT string_agg(h.status || coalesce(':' || h.user_id, ''), ' ' ORDER BY h.seat_id)
             FROM api.hall_snapshot(:scr) AS h WHERE h.seat_id IN (:a1, :a2, :b1)),
          format('free free held:%s', :bob),
          'hall_snapshot shows lapsed holds as free with no user, before any sweep');
SELECT is((SELECT g.seats_free FROM api.get_screenings(NULL, now(), now() + interval '36 hours') AS g WHERE g.id = :scr),
          7, 'get_screenings counts lapsed holds as free');
SELECT is(pg_temp.state(:scr, 'A1'), format('held:%s', :alice), 'the row itself is unchanged until the sweep');

-- The sweep ------------------------------------------------------------------------------------------------------

SELECT pg_temp.version(:scr) AS v1, pg_temp.version(:scr2) AS v2 \gset
SELECT is(api.sweep_expired_holds(), 3, 'the sweep frees every lapsed hold and says how many');
SELECT is(current_setting('synchronous_commit'), 'off', 'the sweep commits asynchronously (holds are ephemeral)');
SELECT is(pg_temp.state(:scr, 'A1') || ' ' || pg_temp.state(:scr, 'A2') || ' ' || pg_temp.state(:scr2, 'A1'),
          'free free free', 'swept seats are free');
SELECT is((SELECT array_agg(expired_holder ORDER BY screening_id, seat_id) FROM seat_states
            WHERE (screening_id = :scr AND seat_id IN (:a1, :a2)) OR (screening_id = :scr2 AND seat_id = :a1)),
          ARRAY[:alice, :alice, :bob]::bigint[],
          'a swept seat remembers whose hold expired (expired_holder)');
SELECT is((SELECT count(*)::int FROM seat_states WHERE screening_id = :scr AND seat_id IN (:a1, :a2)
              AND hold_expires_at IS NULL AND user_id IS NULL), 2,
          'a swept seat has no holder and no expiry');
SELECT is(pg_temp.state(:scr, 'B1') || ' ' || pg_temp.state(:scr2, 'B2'), format('held:%s held:%s', :bob, :bob),
          'live holds are untouched');
SELECT is(array[pg_temp.version(:scr), pg_temp.version(:scr2)], ARRAY[:v1 + 1, :v2 + 1]::bigint[],
          'one sweep is one change set per screening: each version grows by exactly 1');
SELECT is(pg_temp.last_notify(),
          format('hall_%s {"s":%s,"v":%s,"c":[[%s,"free",null]]}',
                 (SELECT hall_id FROM screenings WHERE id = :scr2), :scr2, :v2 + 1, :a1),
          'the sweep notifies the freed seats like any other change');
SELECT is(api.sweep_expired_holds(), 0, 'sweeping again changes nothing (idempotent)');
SELECT is(array[pg_temp.version(:scr), pg_temp.version(:scr2)], ARRAY[:v1 + 1, :v2 + 1]::bigint[],
          'a sweep that frees nothing bumps no version');

-- After the sweep ------------------------------------------------------------------------------------------------

SELECT * FROM api.hold_seats(:bob, :scr, ARRAY[:a1]::bigint[]);
SELECT is((SELECT expired_holder FROM seat_states WHERE screening_id = :scr AND seat_id = :a1), NULL,
          'taking a swept seat clears expired_holder');

-- Re-holding one's own lapsed hold before the sweep is a change (subscribers saw it free) -------------------

UPDATE seat_states SET hold_expires_at = now() - interval '1 second' WHERE screening_id = :scr AND seat_id = :b1;
SELECT pg_temp.version(:scr) AS v3 \gset
SELECT pg_temp.forget_notify();
SELECT is((SELECT h.version FROM api.hold_seats(:bob, :scr, ARRAY[:b1]::bigint[]) AS h), :v3 + 1::bigint,
          're-holding one''s own lapsed hold bumps the version, since snapshots showed the seat free');
SELECT is(pg_temp.last_notify(),
          format('hall_%s {"s":%s,"v":%s,"c":[[%s,"held",%s]]}',
                 (SELECT hall_id FROM screenings WHERE id = :scr), :scr, :v3 + 1, :b1, :bob),
          'and notifies the seat as held again');
SELECT is((SELECT count(*)::int FROM seat_states WHERE status = 'held' AND hold_expires_at <= now()
              AND screening_id IN (:scr, :scr2)), 0,
          'no lapsed holds are left behind');

SELECT * FROM finish();
ROLLBACK;
