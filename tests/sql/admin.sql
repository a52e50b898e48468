-- DBA functions (sql/60_admin.sql) and demo data (sql/70_demo.sql).
BEGIN;
\ir fixtures.psql
SELECT plan(46);

SELECT pg_temp.make_user('tap_alice') AS alice \gset
SELECT pg_temp.make_user('tap_bob') AS bob \gset

-- Cinemas, halls, films ------------------------------------------------------------------------------------------

SELECT is(pg_temp.err($$SELECT admin.create_cinema('X', 'Y', 'Z', 'Mars/Olympus_Mons')$$), 'MQ400',
          'create_cinema refuses a time zone that is not in pg_timezone_names');
SELECT is(pg_temp.err($$SELECT admin.create_cinema(' ', 'Y', 'Z', 'UTC')$$), 'MQ400', 'a cinema needs a name');
SELECT admin.create_cinema(name => 'Tap Kino', city => 'Hamburg', address => 'Reeperbahn 1', timezone => 'Europe/Berlin')
       AS cinema \gset
SELECT is((SELECT row(name, city, address, timezone)::text FROM cinemas WHERE id = :cinema),
          row('Tap Kino', 'Hamburg', 'Reeperbahn 1', 'Europe/Berlin')::text,
          'create_cinema stores the cinema (named notation with the protocol''s parameter names works)');

SELECT admin.create_hall(:cinema, 'Big', 28, 3) AS hall \gset
SELECT is((SELECT count(*)::int FROM seats WHERE hall_id = :hall), 84, 'create_hall creates rows x seats_per_row seats');
SELECT is((SELECT string_agg(DISTINCT row_label, ',' ORDER BY row_label) FILTER (WHERE y IN (0, 1, 25, 26, 27))
             FROM seats WHERE hall_id = :hall),
          'A,AA,AB,B,Z', 'rows are labelled A, B, ... Z, then AA, AB');
SELECT is((SELECT row(row_label, number, x, y, kind)::text FROM seats WHERE hall_id = :hall AND row_label = 'B' AND number = 3),
          row('B', 3, 2, 1, 'standard')::text,
          'seats are numbered from 1, x = number - 1, y = row index, kind standard');
SELECT is(pg_temp.err(format($$SELECT admin.create_hall(%s, 'Big', 2, 2)$$, :cinema)), 'MQ400',
          'hall names are unique within a cinema');
SELECT is(pg_temp.err($$SELECT admin.create_hall(-1, 'Nowhere', 2, 2)$$), 'MQ404', 'an unknown cinema is NOT_FOUND');
SELECT is(pg_temp.err(format($$SELECT admin.create_hall(%s, 'Empty', 0, 2)$$, :cinema)), 'MQ400',
          'a hall needs at least one row');
SELECT is(pg_temp.err(format($$SELECT admin.create_hall(%s, 'Empty', 2, 0)$$, :cinema)), 'MQ400',
          'a hall needs at least one seat per row');

SELECT is(pg_temp.err($$SELECT admin.create_film('', 90, '12')$$), 'MQ400', 'a film needs a title');
SELECT is(pg_temp.err($$SELECT admin.create_film('Short', 0, '12')$$), 'MQ400', 'a film needs a positive duration');
SELECT admin.create_film('Tap Film', 95, 'FSK 12') AS film \gset
SELECT is((SELECT row(title, duration_min, age_rating)::text FROM films WHERE id = :film),
          row('Tap Film', 95, 'FSK 12')::text, 'create_film stores the film');

-- Screenings -------------------------------------------------------------------------------------------------------

SELECT admin.create_screening(:hall, :film, now() + interval '1 day', 990, 'eur') AS scr \gset
SELECT is((SELECT row(sc.hall_id, sc.film_id, sc.starts_at, sc.price, sc.currency, sv.version)::text
             FROM screenings AS sc JOIN screening_versions AS sv ON sv.screening_id = sc.id
            WHERE sc.id = :scr),
          row(:hall::bigint, :film::bigint, now() + interval '1 day', 990, 'EUR', 0::bigint)::text,
          'create_screening stores the screening with the currency upper-cased and version 0');
SELECT is((SELECT count(*)::int FROM seat_states WHERE screening_id = :scr AND status = 'free'), 84,
          'a new screening has one free seat_states row per seat of its hall');
SELECT is(pg_temp.err(format($$SELECT admin.create_screening(%s, %s, now() + interval '1 day', 990, 'EUR')$$, :hall, :film)),
          'MQ400', 'a hall cannot have two screenings starting at the same time');
SELECT is(pg_temp.err(format($$SELECT admin.create_screening(%s, %s, now(), -1, 'EUR')$$, :hall, :film)),
          'MQ400', 'a negative price is BAD_REQUEST');
SELECT is(pg_temp.err(format($$SELECT admin.create_screening(%s, %s, now(), 100, 'EURO')$$, :hall, :film)),
          'MQ400', 'a currency must be three letters');
SELECT is(pg_temp.err(format($$SELECT admin.create_screening(-1, %s, now(), 100, 'EUR')$$, :film)),
          'MQ404', 'an unknown hall is NOT_FOUND');
SELECT is(pg_temp.err(format($$SELECT admin.create_screening(%s, -1, now(), 100, 'EUR')$$, :hall)),
          'MQ404', 'an unknown film is NOT_FOUND');
SELECT admin.create_hall(:cinema, 'Small', 1, 1) AS small \gset
SELECT is(pg_temp.err(format('UPDATE screenings SET hall_id = %s WHERE id = %s', :small, :scr)), 'MQ400',
          'a screening cannot move to another hall');
INSERT INTO seats (hall_id, row_label, number, x, y) VALUES (:hall, 'AC', 1, 0, 28);
SELECT is((SELECT count(*)::int FROM seat_states WHERE screening_id = :scr), 85,
          'a seat added to a hall later gets a free row in its existing screenings');

-- Blocking --------------------------------------------------------------------------------------------------------

SELECT pg_temp.seat(:scr, 'A1') AS a1, pg_temp.seat(:scr, 'A2') AS a2, pg_temp.seat(:scr, 'A3') AS a3,
       pg_temp.seat(:scr, 'B1') AS b1 \gset
SELECT * FROM api.hold_seats(:alice, :scr, ARRAY[:a2]::bigint[]);
SELECT * FROM api.hold_seats(:bob, :scr, ARRAY[:a3]::bigint[]);
SELECT * FROM api.book_seats(:bob, :scr, ARRAY[:a3]::bigint[]);
SELECT pg_temp.version(:scr) AS v0 \gset
SELECT is(admin.block_seats(:scr, ARRAY[:a1, :a2, :a3, :a1]::bigint[]), 2,
          'block_seats blocks free and held seats, never booked ones, and counts the seats changed');
SELECT is(pg_temp.state(:scr, 'A1') || ' ' || pg_temp.state(:scr, 'A2') || ' ' || pg_temp.state(:scr, 'A3'),
          format('blocked blocked booked:%s', :bob), 'a hold on a blocked seat is lost; a booking stays');
SELECT is(pg_temp.version(:scr), :v0 + 1::bigint, 'blocking is one change set');
SELECT is(admin.block_seats(:scr, ARRAY[:a1]::bigint[]), 0, 'blocking a blocked seat changes nothing');
SELECT is(pg_temp.err(format('SELECT admin.block_seats(%s, ARRAY[-1]::bigint[])', :scr)), 'MQ404 ["-1"]',
          'blocking an unknown seat is NOT_FOUND');
SELECT is(pg_temp.err('SELECT admin.block_seats(-1, ARRAY[1]::bigint[])'), 'MQ404',
          'blocking in an unknown screening is NOT_FOUND');
SELECT is(admin.unblock_seats(:scr, ARRAY[:a1, :a2, :a3, :b1]::bigint[]), 2,
          'unblock_seats frees blocked seats only and counts them');
SELECT is(pg_temp.state(:scr, 'A1') || ' ' || pg_temp.state(:scr, 'A2') || ' ' || pg_temp.state(:scr, 'B1'),
          'free free free', 'unblocked seats are free');

-- Settings ----------------------------------------------------------------------------------------------------------

SELECT admin.set_hold_ttl(90);
SELECT admin.set_seat_limit(4);
SELECT is((SELECT array_agg(value ORDER BY key) FROM settings WHERE key IN ('hold_ttl_seconds', 'seat_limit')),
          ARRAY[90, 4], 'set_hold_ttl and set_seat_limit store the settings');
SELECT is(pg_temp.err('SELECT admin.set_hold_ttl(0)'), 'MQ400', 'a hold TTL must be positive');
SELECT is(pg_temp.err('SELECT admin.set_seat_limit(NULL)'), 'MQ400', 'a seat limit is required');
SELECT is((SELECT row(h.hold_ttl_seconds, h.seat_limit)::text FROM hold_settings AS h), row(90, 4)::text,
          'the one-row copy a hold reads (hold_settings) follows the settings at once');
SELECT admin.set_orphan_rule(false);
SELECT is((SELECT h.orphan_rule FROM hold_settings AS h), 0, 'every setting a hold reads is copied (the orphan rule)');
SELECT admin.set_orphan_rule(true);
SAVEPOINT missing_setting;
DELETE FROM settings WHERE key = 'user_hold_limit';
SELECT is((SELECT h.user_hold_limit FROM hold_settings AS h), NULL::int,
          'a hold setting deleted from settings is missing from the copy too');
SELECT is(pg_temp.err(format('SELECT api.hold_seats(%s, %s, ARRAY[%s]::bigint[])', :alice, :scr, :a1)), 'P0001',
          'and a hold then fails as a deployment error (INTERNAL), not with a made-up limit');
ROLLBACK TO SAVEPOINT missing_setting;

-- Demo data ----------------------------------------------------------------------------------------------------------

SELECT admin.seed_demo();
CREATE TEMP TABLE counts AS
SELECT (SELECT count(*) FROM cinemas) AS cinemas, (SELECT count(*) FROM halls) AS halls,
       (SELECT count(*) FROM seats) AS seats, (SELECT count(*) FROM films) AS films,
       (SELECT count(*) FROM screenings) AS screenings, (SELECT count(*) FROM seat_states) AS seat_states,
       (SELECT count(*) FROM seat_states WHERE status = 'blocked') AS blocked;
SELECT admin.seed_demo();
SELECT is((SELECT row(c.*)::text FROM counts AS c),
          (SELECT row((SELECT count(*) FROM cinemas), (SELECT count(*) FROM halls), (SELECT count(*) FROM seats),
                      (SELECT count(*) FROM films), (SELECT count(*) FROM screenings),
                      (SELECT count(*) FROM seat_states),
                      (SELECT count(*) FROM seat_states WHERE status = 'blocked'))::text),
          'running seed_demo again adds nothing');

CREATE TEMP VIEW demo_halls AS
SELECT h.id, h.name, c.timezone, c.city
  FROM halls AS h JOIN cinemas AS c ON c.id = h.cinema_id
 WHERE c.name IN ('Marquee Berlin Mitte', 'Marquee Lisboa Chiado', 'Marquee Brooklyn');
SELECT ok((SELECT count(DISTINCT city) >= 2 AND count(DISTINCT timezone) >= 2 FROM demo_halls),
          'the demo has cinemas in at least two cities and time zones');
SELECT ok((SELECT count(*) >= 2 FROM demo_halls) AND
          (SELECT bool_and(n BETWEEN 100 AND 300)
             FROM (SELECT count(*) AS n FROM seats WHERE hall_id IN (SELECT id FROM demo_halls) GROUP BY hall_id) AS x),
          'demo halls have 100 to 300 seats each');
SELECT ok((SELECT bool_and(v > 0 AND w > 0 AND gaps > 0)
             FROM (SELECT count(*) FILTER (WHERE kind = 'vip') AS v, count(*) FILTER (WHERE kind = 'wheelchair') AS w,
                          max(x) - max(number) + 1 AS gaps
                     FROM seats WHERE hall_id IN (SELECT id FROM demo_halls) GROUP BY hall_id) AS x),
          'every demo hall has vip seats, wheelchair places and an aisle');
SELECT ok((SELECT count(DISTINCT title) >= 6 FROM films), 'the demo has at least 6 films');
SELECT ok((SELECT bool_and(n = 1)
             FROM (SELECT count(*) FILTER (WHERE ss.status = 'blocked') AS n
                     FROM screenings AS sc JOIN seat_states AS ss ON ss.screening_id = sc.id
                     JOIN screening_versions AS sv ON sv.screening_id = sc.id
                    WHERE sc.hall_id IN (SELECT id FROM demo_halls)
                      AND sc.starts_at > now() AND sv.version <= 1
                    GROUP BY sc.id) AS x),
          'each untouched demo screening has exactly one blocked seat');
SELECT ok((SELECT bool_and(extract(minute FROM sc.starts_at AT TIME ZONE d.timezone) = 0
                           AND extract(second FROM sc.starts_at AT TIME ZONE d.timezone) = 0)
             FROM screenings AS sc JOIN demo_halls AS d ON d.id = sc.hall_id),
          'demo screenings start at whole local hours of their cinema');
SELECT ok((SELECT bool_and(cnt >= 8 AND latest > now() + interval '7 days')
             FROM (SELECT d.id, count(sc.id) FILTER (WHERE sc.starts_at BETWEEN now() AND now() + interval '2 days') AS cnt,
                          max(sc.starts_at) AS latest
                     FROM demo_halls AS d LEFT JOIN screenings AS sc ON sc.hall_id = d.id GROUP BY d.id) AS x),
          'every demo hall has several screenings a day, reaching more than 7 days ahead');
DELETE FROM screenings
 WHERE hall_id IN (SELECT id FROM demo_halls) AND starts_at > now() + interval '5 days';
SELECT admin.seed_demo();
SELECT is((SELECT count(*) FROM screenings), (SELECT c.screenings FROM counts AS c),
          'seed_demo tops screenings up to 7 days ahead again');

SELECT * FROM finish();
ROLLBACK;
