-- Versions and notifications (sql/20_notify.sql).
--
-- pg_notify only delivers at commit, which a rolled-back test never reaches. So this file checks the version
-- arithmetic and the payload as sent to internal.send_notification (fixtures.psql makes it keep a copy in a
-- transaction-local setting for the length of the test). tests/sql/run.sh also LISTENs for real, end to end.
BEGIN;
\ir fixtures.psql
SELECT plan(32);

SELECT pg_temp.make_user('tap_alice') AS alice \gset
SELECT pg_temp.make_user('tap_bob') AS bob \gset
SELECT pg_temp.make_screening(3, 4) AS scr \gset
SELECT pg_temp.same_hall_screening(:scr, '2 days') AS scr2 \gset
SELECT hall_id AS hall FROM screenings WHERE id = :scr \gset
SELECT pg_temp.seat(:scr, 'A1') AS a1, pg_temp.seat(:scr, 'A2') AS a2, pg_temp.seat(:scr, 'A3') AS a3,
       pg_temp.seat(:scr, 'B1') AS b1, pg_temp.seat(:scr, 'B2') AS b2 \gset

-- Versions and notifications from the api ---------------------------------------------------------------------------

SELECT is(pg_temp.version(:scr), 0::bigint, 'creating a screening (free rows inserted) is no change: version 0');
SELECT is(pg_temp.last_notify(), '', 'and sends no notification');

SELECT is((SELECT h.version FROM api.hold_seats(:alice, :scr, ARRAY[:a2, :a1, :a3]::bigint[]) AS h), 1::bigint,
          'holding three seats is one change set: the version grows by exactly 1');
SELECT is(pg_temp.last_notify(),
          format('hall_%s {"s":%s,"v":1,"c":[[%s,"held",%s],[%s,"held",%s],[%s,"held",%s]]}',
                 :hall, :scr, :a1, :alice, :a2, :alice, :a3, :alice),
          'one notification on channel hall_<hall_id> lists every changed seat with its new status and holder');

SELECT pg_temp.forget_notify();
SELECT is((SELECT h.version FROM api.hold_seats(:alice, :scr, ARRAY[:a1]::bigint[]) AS h), 1::bigint,
          'renewing a live hold changes no status: no new version');
SELECT is(pg_temp.last_notify(), '', 'and no notification');

SELECT is((SELECT h.version FROM api.hold_seats(:alice, :scr, ARRAY[:a1, :b1]::bigint[]) AS h), 2::bigint,
          'a hold that renews one seat and takes another is a change');
SELECT is(pg_temp.last_notify(), format('hall_%s {"s":%s,"v":2,"c":[[%s,"held",%s]]}', :hall, :scr, :b1, :alice),
          'only the seat whose status changed is in the notification');

SELECT * FROM api.book_seats(:alice, :scr, ARRAY[:a1]::bigint[]);
SELECT is(pg_temp.last_notify(), format('hall_%s {"s":%s,"v":3,"c":[[%s,"booked",%s]]}', :hall, :scr, :a1, :alice),
          'booking notifies the seats as booked by the user');

SELECT * FROM api.release_seats(:alice, :scr, ARRAY[:a2]::bigint[]);
SELECT is(pg_temp.last_notify(), format('hall_%s {"s":%s,"v":4,"c":[[%s,"free",null]]}', :hall, :scr, :a2),
          'releasing notifies the seats as free with no user');

SELECT b.booking_id AS bk FROM api.book_seats(:alice, :scr, ARRAY[:b1]::bigint[]) AS b \gset
SELECT pg_temp.forget_notify();
SELECT is((SELECT c.version FROM api.cancel_booking(:alice, :bk) AS c), 6::bigint,
          'cancelling a booking is one change set');
SELECT is(pg_temp.last_notify(), format('hall_%s {"s":%s,"v":6,"c":[[%s,"free",null]]}', :hall, :scr, :b1),
          'and notifies its seats as free');
SELECT pg_temp.forget_notify();
SELECT is((SELECT c.version FROM api.cancel_booking(:alice, :bk) AS c), 6::bigint,
          'cancelling it again changes nothing');
SELECT is(pg_temp.last_notify(), '', 'and sends nothing');

SELECT isnt(current_setting('marquee.publisher', true), 'api',
            'the api functions silence the notify triggers only while they run (a SET clause, not a session setting)');

-- Changes made directly in SQL ----------------------------------------------------------------------------------

UPDATE seat_states SET status = 'blocked', user_id = NULL, hold_expires_at = NULL
 WHERE screening_id = :scr AND seat_id IN (:a3, :b2);
SELECT is(pg_temp.version(:scr), 7::bigint, 'a DBA''s plain UPDATE bumps the version once per statement');
SELECT is(pg_temp.last_notify(),
          format('hall_%s {"s":%s,"v":7,"c":[[%s,"blocked",null],[%s,"blocked",null]]}', :hall, :scr, :a3, :b2),
          'and notifies like any other change (a held and a free seat became blocked)');

SELECT pg_temp.forget_notify();
UPDATE seat_states SET status = 'free' WHERE screening_id = :scr AND status = 'free';
UPDATE seat_states SET hold_expires_at = hold_expires_at + interval '1 minute' WHERE screening_id = :scr AND status = 'held';
SELECT is(pg_temp.version(:scr), 7::bigint, 'updates that change no (status, user_id) bump no version');
SELECT is(pg_temp.last_notify(), '', 'and notify nothing');

UPDATE seat_states SET status = 'free', user_id = NULL, hold_expires_at = NULL, booking_id = NULL
 WHERE screening_id IN (:scr, :scr2) AND status = 'blocked';
UPDATE seat_states SET status = 'blocked' WHERE screening_id IN (:scr, :scr2) AND seat_id = :a2;
SELECT is(ARRAY[pg_temp.version(:scr), pg_temp.version(:scr2)], ARRAY[9, 1]::bigint[],
          'one statement over two screenings bumps each changed screening once; two statements bump twice');
SELECT is(pg_temp.last_notify(), format('hall_%s {"s":%s,"v":1,"c":[[%s,"blocked",null]]}', :hall, :scr2, :a2),
          'each screening gets its own notification, with its own version');

DELETE FROM seat_states WHERE screening_id = :scr2 AND seat_id = :a2;
SELECT is(pg_temp.version(:scr2), 2::bigint, 'deleting a non-free seat row is a change (a missing row reads as free)');
SELECT is(pg_temp.last_notify(), format('hall_%s {"s":%s,"v":2,"c":[[%s,"free",null]]}', :hall, :scr2, :a2),
          'and notifies the seat as free');
SELECT pg_temp.forget_notify();
DELETE FROM seat_states WHERE screening_id = :scr2 AND seat_id = :b2;
SELECT is(pg_temp.version(:scr2), 2::bigint, 'deleting a free seat row is no change');
INSERT INTO seat_states (screening_id, seat_id, status, user_id, hold_expires_at)
VALUES (:scr2, :a2, 'held', :bob, now() + interval '1 minute');
SELECT is(pg_temp.last_notify(), format('hall_%s {"s":%s,"v":3,"c":[[%s,"held",%s]]}', :hall, :scr2, :a2, :bob),
          'inserting a non-free seat row is a change');
SELECT lives_ok(format('DELETE FROM screenings WHERE id = %s', :scr2),
                'deleting a screening with held seats works (nothing left to notify)');

-- The payload's size limit ------------------------------------------------------------------------------------------

SELECT pg_temp.make_screening(20, 25) AS big \gset
SELECT hall_id AS bighall FROM screenings WHERE id = :big \gset
UPDATE seat_states SET status = 'blocked' WHERE screening_id = :big;
SELECT is(pg_temp.last_notify(), format('hall_%s {"s":%s,"v":1,"r":1}', :bighall, :big),
          'a change set whose payload would exceed 7,900 bytes sends the resync notice instead');
UPDATE seat_states SET status = 'free' WHERE screening_id = :big AND seat_id IN (
    SELECT seat_id FROM seat_states WHERE screening_id = :big ORDER BY seat_id LIMIT 300);
SELECT ok(octet_length(split_part(pg_temp.last_notify(), ' ', 2)) BETWEEN 1000 AND 7900
          AND split_part(pg_temp.last_notify(), ' ', 2)::jsonb -> 'c' -> 299 ->> 1 = 'free',
          'a payload under 7,900 bytes is sent whole, as valid JSON');

SELECT is(internal.seat_payload(1, 2, repeat('x', 7880)), '{"s":1,"v":2,"c":[' || repeat('x', 7880) || ']}',
          'a payload of exactly 7,900 bytes is sent whole');
SELECT is(internal.seat_payload(1, 2, repeat('x', 7881)), '{"s":1,"v":2,"r":1}',
          'one byte more and the resync notice is sent instead');
SELECT is(internal.seat_entries(ARRAY[3, 5]::bigint[], 'held', 9), '[3,"held",9],[5,"held",9]',
          'the api functions'' entries for seats that all became one status');
SELECT is(internal.seat_entries(ARRAY[4]::bigint[], 'free', NULL), '[4,"free",null]',
          'a seat with no user is spelled null');

SELECT * FROM finish();
ROLLBACK;
