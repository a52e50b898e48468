-- Holding and releasing seats: api.hold_seats, api.release_seats.
BEGIN;
\ir fixtures.psql
SELECT plan(61);

SELECT pg_temp.make_user('tap_alice') AS alice \gset
SELECT pg_temp.make_user('tap_bob') AS bob \gset
SELECT pg_temp.make_screening(3, 4) AS scr \gset
SELECT pg_temp.make_screening(2, 2) AS other \gset
SELECT pg_temp.make_screening(2, 2, '-1 hour') AS started \gset
SELECT pg_temp.seat(:scr, 'A1') AS a1, pg_temp.seat(:scr, 'A2') AS a2, pg_temp.seat(:scr, 'A3') AS a3,
       pg_temp.seat(:scr, 'A4') AS a4, pg_temp.seat(:scr, 'B1') AS b1, pg_temp.seat(:scr, 'B2') AS b2,
       pg_temp.seat(:scr, 'B3') AS b3, pg_temp.seat(:scr, 'C1') AS c1,
       pg_temp.seat(:other, 'A1') AS other_a1, pg_temp.seat(:started, 'A1') AS started_a1 \gset

-- Holding ----------------------------------------------------------------------------------------------------

SELECT is((SELECT h.expires_at FROM api.hold_seats(:alice, :scr, ARRAY[:a1, :a2, :a2]::bigint[]) AS h),
          now() + interval '600 seconds',
          'a hold lasts hold_ttl_seconds (600 by default) from now');
SELECT is(pg_temp.state(:scr, 'A1') || ' ' || pg_temp.state(:scr, 'A2'), format('held:%s held:%s', :alice, :alice),
          'held seats record the holder');
SELECT is((SELECT count(*)::int FROM seat_states WHERE screening_id = :scr AND user_id = :alice), 2,
          'a duplicated seat id counts once');
SELECT is(current_setting('synchronous_commit'), 'off',
          'holds commit with synchronous_commit off (they are ephemeral)');

SELECT pg_temp.version(:scr) AS v0 \gset
SELECT admin.set_hold_ttl(120);
SELECT is((SELECT row(h.expires_at, h.version)::text FROM api.hold_seats(:alice, :scr, ARRAY[:a1]::bigint[]) AS h),
          row(now() + interval '120 seconds', :v0::bigint)::text,
          'holding one''s own held seat renews it with the TTL read on this call, and the version stays');
SELECT is((SELECT hold_expires_at FROM seat_states WHERE screening_id = :scr AND seat_id = :a2),
          now() + interval '600 seconds',
          'renewing one seat leaves the user''s other holds alone');

-- Seat unavailable -------------------------------------------------------------------------------------------

PREPARE bob_takes_a2_a3 AS SELECT * FROM api.hold_seats(:bob, :scr, ARRAY[:a3, :a2]::bigint[]);
SELECT is(pg_temp.err('bob_takes_a2_a3'), 'MQ409 ' || pg_temp.ids(ARRAY[:a2]::bigint[]),
          'a seat held by someone else is SEAT_UNAVAILABLE, and DETAIL lists exactly the unavailable seats');
SELECT is(pg_temp.state(:scr, 'A3'), 'free', 'holding is all or nothing: the free seat of a refused request stays free');

UPDATE seat_states SET status = 'blocked', user_id = NULL, hold_expires_at = NULL
 WHERE screening_id = :scr AND seat_id = :b1;
PREPARE bob_takes_blocked AS SELECT * FROM api.hold_seats(:bob, :scr, ARRAY[:b1]::bigint[]);
SELECT is(pg_temp.err('bob_takes_blocked'), 'MQ409 ' || pg_temp.ids(ARRAY[:b1]::bigint[]),
          'a blocked seat is SEAT_UNAVAILABLE');

SELECT * FROM api.hold_seats(:bob, :scr, ARRAY[:b2]::bigint[]);
SELECT * FROM api.book_seats(:bob, :scr, ARRAY[:b2]::bigint[]);
PREPARE alice_takes_booked AS SELECT * FROM api.hold_seats(:alice, :scr, ARRAY[:b2]::bigint[]);
SELECT is(pg_temp.err('alice_takes_booked'), 'MQ409 ' || pg_temp.ids(ARRAY[:b2]::bigint[]),
          'a booked seat is SEAT_UNAVAILABLE');
PREPARE bob_rebooks AS SELECT * FROM api.hold_seats(:bob, :scr, ARRAY[:b2]::bigint[]);
SELECT is(pg_temp.err('bob_rebooks'), 'MQ409 ' || pg_temp.ids(ARRAY[:b2]::bigint[]),
          'a seat one booked oneself is SEAT_UNAVAILABLE too');

-- Lapsed holds count as free --------------------------------------------------------------------------------

UPDATE seat_states SET hold_expires_at = now() - interval '1 second' WHERE screening_id = :scr AND seat_id = :a2;
SELECT lives_ok('bob_takes_a2_a3', 'a lapsed hold counts as free even before the sweep ran');
SELECT * FROM api.hold_seats(:bob, :scr, ARRAY[:a2, :a3]::bigint[]);
SELECT is(pg_temp.state(:scr, 'A2'), format('held:%s', :bob), 'another user takes over a lapsed hold');

UPDATE seat_states SET status = 'free', user_id = NULL, hold_expires_at = NULL, expired_holder = :alice
 WHERE screening_id = :scr AND seat_id = :a4;
SELECT * FROM api.hold_seats(:bob, :scr, ARRAY[:a4]::bigint[]);
SELECT is((SELECT expired_holder FROM seat_states WHERE screening_id = :scr AND seat_id = :a4), NULL,
          'taking a seat forgets whose hold expired into it');

-- Hold limit --------------------------------------------------------------------------------------------------

SELECT admin.set_seat_limit(3);
-- alice holds A1 (live) and nothing else live; bob holds A2, A3, A4 and booked B2.
PREPARE bob_fifth AS SELECT * FROM api.hold_seats(:bob, :scr, ARRAY[:c1]::bigint[]);
SELECT is(pg_temp.err('bob_fifth'), 'MQ411',
          'HOLD_LIMIT when held-unexpired plus booked seats would exceed seat_limit (booked seats count)');
PREPARE bob_renews_three AS SELECT * FROM api.hold_seats(:bob, :scr, ARRAY[:a2, :a3]::bigint[]);
SELECT is(pg_temp.err('bob_renews_three'), 'MQ411',
          'the limit counts what the user would have afterwards, renewals included');
SELECT admin.set_seat_limit(4);
SELECT is(pg_temp.err('bob_renews_three'), 'no error', 'the seat limit is read on every call');
PREPARE alice_limit_and_taken AS SELECT * FROM api.hold_seats(:alice, :scr, ARRAY[:a1, :a2, :a3, :a4, :c1]::bigint[]);
SELECT is(pg_temp.err('alice_limit_and_taken'), 'MQ411', 'HOLD_LIMIT wins over SEAT_UNAVAILABLE');
UPDATE seat_states SET hold_expires_at = now() - interval '1 second'
 WHERE screening_id = :scr AND user_id = :bob AND status = 'held';
SELECT is(pg_temp.err('bob_fifth'), 'no error', 'lapsed holds do not count against the limit');
SELECT * FROM api.hold_seats(:bob, :scr, ARRAY[:c1]::bigint[]);
PREPARE bob_other AS SELECT * FROM api.hold_seats(:bob, :other, ARRAY[:other_a1]::bigint[]);
SELECT is(pg_temp.err('bob_other'), 'no error', 'the limit is per screening');
SELECT admin.set_seat_limit(10);

-- Not found, closed, bad requests ------------------------------------------------------------------------------

PREPARE no_screening AS SELECT * FROM api.hold_seats(:alice, -1, ARRAY[:a1]::bigint[]);
SELECT is(pg_temp.err('no_screening'), 'MQ404', 'an unknown screening is NOT_FOUND');
PREPARE foreign_seat AS SELECT * FROM api.hold_seats(:alice, :scr, ARRAY[:a1, :other_a1]::bigint[]);
SELECT is(pg_temp.err('foreign_seat'), 'MQ404 ' || pg_temp.ids(ARRAY[:other_a1]::bigint[]),
          'a seat of another hall is NOT_FOUND (DETAIL names it)');
PREPARE no_seat AS SELECT * FROM api.hold_seats(:alice, :scr, ARRAY[-5]::bigint[]);
SELECT is(pg_temp.err('no_seat'), 'MQ404 ["-5"]', 'an unknown seat id is NOT_FOUND');
PREPARE closed AS SELECT * FROM api.hold_seats(:alice, :started, ARRAY[:started_a1]::bigint[]);
SELECT is(pg_temp.err('closed'), 'MQ410', 'a screening that started is SCREENING_CLOSED');
PREPARE closed_and_foreign AS SELECT * FROM api.hold_seats(:alice, :started, ARRAY[:a1]::bigint[]);
SELECT is(pg_temp.err('closed_and_foreign'), 'MQ404 ' || pg_temp.ids(ARRAY[:a1]::bigint[]),
          'NOT_FOUND wins over SCREENING_CLOSED');
PREPARE closed_and_taken AS SELECT * FROM api.hold_seats(:alice, :started, ARRAY[:started_a1]::bigint[]);
UPDATE seat_states SET status = 'blocked' WHERE screening_id = :started AND seat_id = :started_a1;
SELECT is(pg_temp.err('closed_and_taken'), 'MQ410', 'SCREENING_CLOSED wins over SEAT_UNAVAILABLE');
SELECT is(pg_temp.err(format('SELECT * FROM api.hold_seats(%s, %s, ''{}'')', :alice, :scr)), 'MQ400',
          'an empty seat list is BAD_REQUEST');
SELECT is(pg_temp.err(format('SELECT * FROM api.hold_seats(%s, %s, NULL)', :alice, :scr)), 'MQ400',
          'a missing seat list is BAD_REQUEST');
SELECT is(pg_temp.err(format('SELECT * FROM api.hold_seats(%s, %s, ARRAY[%s, NULL]::bigint[])', :alice, :scr, :a1)),
          'MQ400', 'a null seat id is BAD_REQUEST');
SELECT is(pg_temp.err(format('SELECT * FROM api.hold_seats(%s, NULL, ARRAY[%s]::bigint[])', :alice, :a1)), 'MQ400',
          'a missing screening id is BAD_REQUEST');
SELECT is(pg_temp.err(format('SELECT * FROM api.hold_seats(NULL, %s, ARRAY[%s]::bigint[])', :scr, :a1)), 'MQ401',
          'no user is UNAUTHORIZED');
SELECT is(pg_temp.err(format('SELECT * FROM api.hold_seats(-7, %s, ARRAY[%s]::bigint[])', :scr, :a1)), 'MQ401',
          'a user that does not exist is UNAUTHORIZED');
SELECT is(pg_temp.err('SELECT * FROM api.hold_seats(NULL, -1, ''{}'')'), 'MQ400',
          'BAD_REQUEST wins over UNAUTHORIZED and NOT_FOUND');
SELECT is(pg_temp.err('SELECT * FROM api.hold_seats(NULL, -1, ARRAY[1]::bigint[])'), 'MQ401',
          'UNAUTHORIZED wins over NOT_FOUND');
SELECT throws_ok('no_screening', 'MQ404', 'Screening not found.',
                 'MESSAGE is plain English for people, without SQL internals');

-- Releasing ---------------------------------------------------------------------------------------------------

-- Now: alice holds A1 (live); bob holds A2, A3 (lapsed), A4 (lapsed), C1 (live); B1 blocked; B2 booked by bob.
SELECT pg_temp.version(:scr) AS v1 \gset
SELECT is((SELECT row(r.seat_ids, r.version)::text
             FROM api.release_seats(:bob, :scr, ARRAY[:c1, :a1, :b1, :b2, :a2, :b3]::bigint[]) AS r),
          row(ARRAY[LEAST(:a2, :c1), GREATEST(:a2, :c1)]::bigint[], :v1 + 1)::text,
          'release frees only the caller''s own holds (lapsed too), returns them sorted, and bumps the version once');
SELECT is(pg_temp.state(:scr, 'A1') || ' ' || pg_temp.state(:scr, 'B1') || ' ' || pg_temp.state(:scr, 'B2'),
          format('held:%s blocked booked:%s', :alice, :bob),
          'release ignores other users'' holds, blocked and booked seats');
SELECT is(pg_temp.state(:scr, 'C1') || ' ' || pg_temp.state(:scr, 'A2'), 'free free', 'released seats are free');
SELECT is((SELECT expired_holder FROM seat_states WHERE screening_id = :scr AND seat_id = :a2), NULL,
          'a released seat does not remember its holder (only expiry does)');
SELECT is((SELECT row(r.seat_ids, r.version)::text FROM api.release_seats(:bob, :scr, ARRAY[:c1]::bigint[]) AS r),
          row('{}'::bigint[], :v1 + 1)::text,
          'releasing nothing returns an empty list and the current version');
PREPARE release_closed AS SELECT * FROM api.release_seats(:alice, :started, ARRAY[:started_a1]::bigint[]);
SELECT is(pg_temp.err('release_closed'), 'MQ410', 'release after the start is SCREENING_CLOSED');
PREPARE release_foreign AS SELECT * FROM api.release_seats(:alice, :scr, ARRAY[:other_a1]::bigint[]);
SELECT is(pg_temp.err('release_foreign'), 'MQ404 ' || pg_temp.ids(ARRAY[:other_a1]::bigint[]),
          'release of a seat of another hall is NOT_FOUND');
PREPARE release_nothing AS SELECT * FROM api.release_seats(:alice, -1, ARRAY[:a1]::bigint[]);
SELECT is(pg_temp.err('release_nothing'), 'MQ404', 'release on an unknown screening is NOT_FOUND');
SELECT is(pg_temp.err(format('SELECT * FROM api.release_seats(NULL, %s, ARRAY[%s]::bigint[])', :scr, :a1)), 'MQ401',
          'release needs a user');
SELECT is(pg_temp.err('SELECT * FROM api.release_seats(1, 1, ''{}'')'), 'MQ400',
          'release of an empty list is BAD_REQUEST');

-- Abuse limits: holds over all screenings, hold lifetime -------------------------------------------------------

SELECT pg_temp.make_user('tap_carol') AS carol \gset
SELECT pg_temp.make_screening(2, 3) AS s1 \gset
SELECT pg_temp.make_screening(2, 3) AS s2 \gset
SELECT pg_temp.seat(:s1, 'A1') AS s1a1, pg_temp.seat(:s1, 'A2') AS s1a2, pg_temp.seat(:s1, 'A3') AS s1a3,
       pg_temp.seat(:s2, 'A1') AS s2a1, pg_temp.seat(:s2, 'A2') AS s2a2 \gset
SELECT admin.set_user_hold_limit(3);
SELECT lives_ok(format('SELECT * FROM api.hold_seats(%s, %s, ARRAY[%s, %s])', :carol, :s1, :s1a1, :s1a2),
                'two holds on one screening are within a user_hold_limit of 3');
SELECT lives_ok(format('SELECT * FROM api.hold_seats(%s, %s, ARRAY[%s])', :carol, :s2, :s2a1),
                'a third on another screening reaches it');
SELECT throws_ok(format('SELECT * FROM api.hold_seats(%s, %s, ARRAY[%s])', :carol, :s2, :s2a2),
                'MQ411', 'You can hold at most 3 seats at a time over all screenings.',
                'a fourth hold over all screenings is HOLD_LIMIT, with the limit in the message');
SELECT lives_ok(format('SELECT * FROM api.hold_seats(%s, %s, ARRAY[%s, %s])', :carol, :s1, :s1a1, :s1a2),
                'renewing held seats adds nothing to the count');
SELECT lives_ok(format('SELECT * FROM api.book_seats(%s, %s, ARRAY[%s])', :carol, :s2, :s2a1),
                'booking a held seat');
SELECT lives_ok(format('SELECT * FROM api.hold_seats(%s, %s, ARRAY[%s])', :carol, :s2, :s2a2),
                'frees room under the limit: bookings do not count');
SELECT throws_ok(format('SELECT * FROM api.hold_seats(%s, %s, ARRAY[%s])', :carol, :s1, :s1a3),
                'MQ411', 'You can hold at most 3 seats at a time over all screenings.',
                'the limit holds again once reached');
SELECT admin.set_user_hold_limit(20);

SELECT admin.set_hold_ttl(600);
SELECT admin.set_max_hold_seconds(900);
UPDATE seat_states SET held_at = now() - interval '800 seconds' WHERE screening_id = :s1 AND seat_id = :s1a1;
SELECT is((SELECT h.expires_at FROM api.hold_seats(:carol, :s1, ARRAY[:s1a1]::bigint[]) AS h),
          now() + interval '100 seconds',
          'renewing never moves the expiry past the moment the seat was taken + max_hold_seconds');
SELECT is((SELECT held_at FROM seat_states WHERE screening_id = :s1 AND seat_id = :s1a1),
          now() - interval '800 seconds', 'a renewal keeps the moment the seat was taken');
SELECT is((SELECT h.expires_at FROM api.hold_seats(:carol, :s1, ARRAY[:s1a1, :s1a3]::bigint[]) AS h),
          now() + interval '100 seconds', 'the answer shows the earliest expiry of its seats');
SELECT is((SELECT hold_expires_at FROM seat_states WHERE screening_id = :s1 AND seat_id = :s1a3),
          now() + interval '600 seconds', 'while a new seat of the same request gets the full TTL');
UPDATE seat_states SET hold_expires_at = now() - interval '1 second' WHERE screening_id = :s1 AND seat_id = :s1a1;
SELECT is((SELECT h.expires_at FROM api.hold_seats(:carol, :s1, ARRAY[:s1a1]::bigint[]) AS h),
          now() + interval '600 seconds', 'a hold that lapsed and is taken again is a new hold');
SELECT is((SELECT held_at FROM seat_states WHERE screening_id = :s1 AND seat_id = :s1a1), now(),
          'taken now');
SELECT admin.set_max_hold_seconds(60);
SELECT is((SELECT h.expires_at FROM api.hold_seats(:carol, :s2, ARRAY[:s2a2]::bigint[]) AS h),
          now() + interval '60 seconds', 'a TTL longer than max_hold_seconds is capped even for a new hold');
SELECT throws_ok('SELECT admin.set_user_hold_limit(0)',
                'MQ400', 'The hold limit per user must be between 1 and 100000.',
                'admin.set_user_hold_limit refuses 0');
SELECT throws_ok('SELECT admin.set_max_hold_seconds(0)',
                'MQ400', 'The hold lifetime must be between 1 and 604800 seconds.',
                'admin.set_max_hold_seconds refuses 0');

SELECT * FROM finish();
ROLLBACK;
