-- Booking and cancelling: api.book_seats, api.cancel_booking, api.get_bookings.
BEGIN;
\ir fixtures.psql
SELECT plan(39);

SELECT pg_temp.make_user('tap_alice') AS alice \gset
SELECT pg_temp.make_user('tap_bob') AS bob \gset
SELECT pg_temp.make_screening(3, 4, '1 day', 1250) AS scr \gset
SELECT pg_temp.make_screening(2, 2, '-1 hour') AS started \gset
SELECT pg_temp.seat(:scr, 'A1') AS a1, pg_temp.seat(:scr, 'A2') AS a2, pg_temp.seat(:scr, 'A3') AS a3,
       pg_temp.seat(:scr, 'A4') AS a4, pg_temp.seat(:scr, 'B1') AS b1, pg_temp.seat(:scr, 'B2') AS b2,
       pg_temp.seat(:scr, 'B3') AS b3, pg_temp.seat(:scr, 'B4') AS b4, pg_temp.seat(:scr, 'C1') AS c1,
       pg_temp.seat(:started, 'A1') AS started_a1 \gset

-- Booking ---------------------------------------------------------------------------------------------------

SELECT * FROM api.hold_seats(:alice, :scr, ARRAY[:a1, :a2, :a3]::bigint[]);
SELECT pg_temp.version(:scr) AS v0 \gset
CREATE TEMP TABLE booked AS SELECT * FROM api.book_seats(:alice, :scr, ARRAY[:a2, :a1, :a1]::bigint[]);
SELECT is((SELECT row(b.screening_id, b.seat_ids, b.total, b.currency, b.status, b.created_at, b.version)::text
             FROM booked AS b),
          row(:scr::bigint, ARRAY[:a1, :a2]::bigint[], 2500, 'EUR', 'confirmed', now(), :v0 + 1)::text,
          'book_seats answers the booking: sorted distinct seats, total = price x seats, confirmed, the new version');
SELECT booking_id AS booking1 FROM booked \gset
SELECT is(pg_temp.state(:scr, 'A1') || ' ' || pg_temp.state(:scr, 'A2') || ' ' || pg_temp.state(:scr, 'A3'),
          format('booked:%s booked:%s held:%s', :alice, :alice, :alice),
          'booked seats belong to the booker; seats held but not booked stay held');
SELECT is((SELECT count(*)::int FROM seat_states WHERE booking_id = :booking1 AND hold_expires_at IS NULL), 2,
          'booked seats point at their booking and have no hold expiry');
SELECT bag_eq(format('SELECT seat_id, active FROM booking_seats WHERE booking_id = %s', :booking1),
              format('VALUES (%s::bigint, true), (%s::bigint, true)', :a1, :a2),
              'booking_seats has one active row per booked seat');
SELECT is((SELECT row(user_id, screening_id, total, currency, status, cancelled_at)::text FROM bookings WHERE id = :booking1),
          row(:alice::bigint, :scr::bigint, 2500, 'EUR', 'confirmed', NULL::timestamptz)::text,
          'the bookings row records user, screening, total and currency');

-- Refusals ------------------------------------------------------------------------------------------------

PREPARE book_free AS SELECT * FROM api.book_seats(:alice, :scr, ARRAY[:a3, :a4]::bigint[]);
SELECT is(pg_temp.err('book_free'), 'MQ409 ' || pg_temp.ids(ARRAY[:a4]::bigint[]),
          'a free seat the user never held is SEAT_UNAVAILABLE (DETAIL lists only it)');
SELECT is(pg_temp.state(:scr, 'A3'), format('held:%s', :alice), 'booking is all or nothing');

SELECT * FROM api.hold_seats(:bob, :scr, ARRAY[:b1]::bigint[]);
PREPARE book_bobs AS SELECT * FROM api.book_seats(:alice, :scr, ARRAY[:b1]::bigint[]);
SELECT is(pg_temp.err('book_bobs'), 'MQ409 ' || pg_temp.ids(ARRAY[:b1]::bigint[]),
          'a seat someone else holds is SEAT_UNAVAILABLE');
PREPARE book_booked AS SELECT * FROM api.book_seats(:alice, :scr, ARRAY[:a1]::bigint[]);
SELECT is(pg_temp.err('book_booked'), 'MQ409 ' || pg_temp.ids(ARRAY[:a1]::bigint[]),
          'a booked seat (even one''s own) is SEAT_UNAVAILABLE');
SELECT admin.block_seats(:scr, ARRAY[:c1]::bigint[]);
PREPARE book_blocked AS SELECT * FROM api.book_seats(:alice, :scr, ARRAY[:c1]::bigint[]);
SELECT is(pg_temp.err('book_blocked'), 'MQ409 ' || pg_temp.ids(ARRAY[:c1]::bigint[]),
          'a blocked seat is SEAT_UNAVAILABLE');

-- Lapsed holds: HOLD_EXPIRED for the user whose hold it was.
UPDATE seat_states SET hold_expires_at = now() - interval '1 second' WHERE screening_id = :scr AND seat_id = :a3;
PREPARE book_lapsed AS SELECT * FROM api.book_seats(:alice, :scr, ARRAY[:a3]::bigint[]);
SELECT is(pg_temp.err('book_lapsed'), 'MQ412 ' || pg_temp.ids(ARRAY[:a3]::bigint[]),
          'one''s own lapsed hold (not yet swept) is HOLD_EXPIRED');
UPDATE seat_states SET hold_expires_at = now() - interval '1 second' WHERE screening_id = :scr AND seat_id = :b1;
PREPARE bob_books_alices AS SELECT * FROM api.book_seats(:bob, :scr, ARRAY[:a3]::bigint[]);
SELECT is(pg_temp.err('bob_books_alices'), 'MQ409 ' || pg_temp.ids(ARRAY[:a3]::bigint[]),
          'someone else''s lapsed hold is SEAT_UNAVAILABLE (it is free, and not one''s own)');
SELECT api.sweep_expired_holds();
SELECT is(pg_temp.err('book_lapsed'), 'MQ412 ' || pg_temp.ids(ARRAY[:a3]::bigint[]),
          'after the sweep, a free seat whose hold by this user expired is still HOLD_EXPIRED');
PREPARE book_mixed AS SELECT * FROM api.book_seats(:alice, :scr, ARRAY[:a3, :b4]::bigint[]);
SELECT is(pg_temp.err('book_mixed'), 'MQ409 ' || pg_temp.ids(ARRAY[:b4]::bigint[]),
          'SEAT_UNAVAILABLE wins over HOLD_EXPIRED');
SELECT * FROM api.hold_seats(:bob, :scr, ARRAY[:a3]::bigint[]);
SELECT * FROM api.release_seats(:bob, :scr, ARRAY[:a3]::bigint[]);
SELECT is(pg_temp.err('book_lapsed'), 'MQ409 ' || pg_temp.ids(ARRAY[:a3]::bigint[]),
          'once somebody else took the seat since, it is SEAT_UNAVAILABLE, not HOLD_EXPIRED');

PREPARE book_closed AS SELECT * FROM api.book_seats(:alice, :started, ARRAY[:started_a1]::bigint[]);
SELECT is(pg_temp.err('book_closed'), 'MQ410', 'booking after the start is SCREENING_CLOSED');
PREPARE book_unknown AS SELECT * FROM api.book_seats(:alice, -1, ARRAY[:a1]::bigint[]);
SELECT is(pg_temp.err('book_unknown'), 'MQ404', 'booking on an unknown screening is NOT_FOUND');
PREPARE book_foreign AS SELECT * FROM api.book_seats(:alice, :scr, ARRAY[:started_a1]::bigint[]);
SELECT is(pg_temp.err('book_foreign'), 'MQ404 ' || pg_temp.ids(ARRAY[:started_a1]::bigint[]),
          'booking a seat of another hall is NOT_FOUND');
SELECT is(pg_temp.err(format('SELECT * FROM api.book_seats(NULL, %s, ARRAY[%s]::bigint[])', :scr, :a1)), 'MQ401',
          'booking needs a user');
SELECT is(pg_temp.err(format('SELECT * FROM api.book_seats(%s, %s, ''{}'')', :alice, :scr)), 'MQ400',
          'booking no seats is BAD_REQUEST');

SELECT throws_ok(format($$INSERT INTO booking_seats (booking_id, screening_id, seat_id, active)
                          VALUES (%s, %s, %s, true)$$, :booking1, :scr, :a1),
                 '23505', NULL,
                 'the partial unique index refuses a seat in two live bookings');

-- Listing ---------------------------------------------------------------------------------------------------

SELECT * FROM api.hold_seats(:alice, :scr, ARRAY[:b2]::bigint[]);
SELECT booking_id AS booking2 FROM api.book_seats(:alice, :scr, ARRAY[:b2]::bigint[]) \gset
UPDATE bookings SET created_at = now() - interval '1 hour' WHERE id = :booking1;
SELECT * FROM api.hold_seats(:alice, :scr, ARRAY[:b3]::bigint[]);
SELECT booking_id AS booking3 FROM api.book_seats(:alice, :scr, ARRAY[:b3]::bigint[]) \gset
SELECT results_eq(format('SELECT booking_id FROM api.get_bookings(%s)', :alice),
                  format('VALUES (%s::bigint), (%s::bigint), (%s::bigint)', :booking3, :booking2, :booking1),
                  'get_bookings lists the user''s bookings newest first, ties by id descending');
SELECT is_empty(format('SELECT * FROM api.get_bookings(%s)', :bob), 'get_bookings shows only the user''s own bookings');
SELECT is((SELECT row(g.screening_id, g.seat_ids, g.total, g.currency, g.status)::text
             FROM api.get_bookings(:alice) AS g WHERE g.booking_id = :booking1),
          row(:scr::bigint, ARRAY[:a1, :a2]::bigint[], 2500, 'EUR', 'confirmed')::text,
          'get_bookings answers each booking with its seats, total, currency and status');

-- Hold limit counts booked seats ---------------------------------------------------------------------------

SELECT admin.set_seat_limit(5);
PREPARE alice_over_limit AS SELECT * FROM api.hold_seats(:alice, :scr, ARRAY[:a4, :b4]::bigint[]);
SELECT is(pg_temp.err('alice_over_limit'), 'MQ411', 'booked seats count towards the seat limit of a screening');
SELECT admin.set_seat_limit(10);

-- Cancelling ------------------------------------------------------------------------------------------------

SELECT pg_temp.version(:scr) AS v1 \gset
CREATE TEMP TABLE cancelled AS SELECT * FROM api.cancel_booking(:alice, :booking1);
SELECT is((SELECT row(c.booking_id, c.screening_id, c.seat_ids, c.total, c.currency, c.status, c.version)::text
             FROM cancelled AS c),
          row(:booking1::bigint, :scr::bigint, ARRAY[:a1, :a2]::bigint[], 2500, 'EUR', 'cancelled', :v1 + 1)::text,
          'cancel_booking answers the booking, now cancelled, with the new version');
SELECT is(pg_temp.state(:scr, 'A1') || ' ' || pg_temp.state(:scr, 'A2'), 'free free', 'a cancelled booking''s seats are free');
SELECT is((SELECT count(*)::int FROM booking_seats WHERE booking_id = :booking1 AND NOT active), 2,
          'its booking_seats rows stay, inactive');
SELECT is((SELECT cancelled_at FROM bookings WHERE id = :booking1), now(), 'cancelled_at records when');
SELECT is((SELECT row(c.status, c.seat_ids, c.version)::text FROM api.cancel_booking(:alice, :booking1) AS c),
          row('cancelled', ARRAY[:a1, :a2]::bigint[], :v1 + 1)::text,
          'cancelling a cancelled booking answers it again, unchanged, without a new version');
SELECT * FROM api.hold_seats(:bob, :scr, ARRAY[:a1]::bigint[]);
SELECT lives_ok(format('SELECT * FROM api.book_seats(%s, %s, ARRAY[%s]::bigint[])', :bob, :scr, :a1),
                'a seat of a cancelled booking can be booked again');
PREPARE cancel_other AS SELECT * FROM api.cancel_booking(:bob, :booking2);
SELECT is(pg_temp.err('cancel_other'), 'MQ404', 'another user''s booking is NOT_FOUND');
PREPARE cancel_missing AS SELECT * FROM api.cancel_booking(:alice, -1);
SELECT is(pg_temp.err('cancel_missing'), 'MQ404', 'an unknown booking is NOT_FOUND');
SELECT is(pg_temp.err(format('SELECT * FROM api.cancel_booking(%s, NULL)', :alice)), 'MQ400',
          'a missing booking id is BAD_REQUEST');
UPDATE screenings SET starts_at = now() - interval '1 minute' WHERE id = :scr;
PREPARE cancel_started AS SELECT * FROM api.cancel_booking(:alice, :booking2);
SELECT is(pg_temp.err('cancel_started'), 'MQ410', 'cancelling once the screening started is SCREENING_CLOSED');

-- The shape of a booking (one CHECK, public.booking_valid) holds against a DBA's plain UPDATE too.
SELECT is(left(pg_temp.err(format('UPDATE bookings SET status = %L WHERE id = %s', 'confirmed', :booking1)), 5),
          '23514', 'a confirmed booking has no cancelled_at (booking1 was cancelled above)');
SELECT is(left(pg_temp.err(format('UPDATE bookings SET currency = %L WHERE id = %s', 'eur', :booking1)), 5),
          '23514', 'a currency is three capital letters');
SELECT is(left(pg_temp.err(format('UPDATE bookings SET total = -1 WHERE id = %s', :booking1)), 5), '23514',
          'a total is never negative');
SELECT is(left(pg_temp.err(format('UPDATE bookings SET status = %L WHERE id = %s', 'refunded', :booking1)), 5),
          '23514', 'a status is confirmed or cancelled');

SELECT * FROM finish();
ROLLBACK;
