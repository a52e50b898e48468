-- Catalogue reads: api.get_cinemas, api.get_screenings, api.hall_snapshot.
BEGIN;
\ir fixtures.psql
SELECT plan(17);

SELECT pg_temp.make_user('tap_alice') AS alice \gset
SELECT pg_temp.make_user('tap_bob') AS bob \gset

-- Cinemas -------------------------------------------------------------------------------------------------------

SELECT admin.create_cinema('tap Zeta', 'Porto', 'Rua 1', 'Europe/Lisbon') AS zeta \gset
SELECT admin.create_cinema('tap Alpha', 'Berlin', 'Straße 2', 'Europe/Berlin') AS alpha1 \gset
SELECT admin.create_cinema('tap Alpha', 'Munich', 'Straße 3', 'Europe/Berlin') AS alpha2 \gset
SELECT results_eq($$SELECT id FROM api.get_cinemas() WHERE name LIKE 'tap %'$$,
                  format('VALUES (%s::bigint), (%s::bigint), (%s::bigint)', :alpha1, :alpha2, :zeta),
                  'get_cinemas orders by name, then id');
SELECT is((SELECT row(g.name, g.city, g.address, g.timezone)::text FROM api.get_cinemas() AS g WHERE g.id = :zeta),
          row('tap Zeta', 'Porto', 'Rua 1', 'Europe/Lisbon')::text,
          'get_cinemas answers name, city, address and time zone');

-- Screenings ----------------------------------------------------------------------------------------------------

SELECT admin.create_hall(:alpha1, 'One', 2, 3) AS hall1 \gset
SELECT admin.create_hall(:zeta, 'Two', 1, 2) AS hall2 \gset
SELECT admin.create_film('Tap Film', 101, '16') AS film \gset
SELECT admin.create_screening(:hall1, :film, '2040-01-01 20:00+00', 1200, 'EUR') AS s1 \gset
SELECT admin.create_screening(:hall2, :film, '2040-01-01 18:00+00', 800, 'EUR') AS s2 \gset
SELECT admin.create_screening(:hall1, :film, '2040-01-02 20:00+00', 1200, 'EUR') AS s3 \gset
SELECT admin.create_screening(:hall2, :film, '2040-01-01 20:00+00', 800, 'EUR') AS s4 \gset

SELECT results_eq($$SELECT id FROM api.get_screenings(NULL, '2040-01-01 00:00+00', '2040-01-03 00:00+00')$$,
                  format('VALUES (%s::bigint), (%s::bigint), (%s::bigint), (%s::bigint)', :s2, :s1, :s4, :s3),
                  'get_screenings orders by starts_at, then id; null cinema means all');
SELECT results_eq(format($$SELECT id FROM api.get_screenings(%s, '2040-01-01 00:00+00', '2040-01-03 00:00+00')$$, :alpha1),
                  format('VALUES (%s::bigint), (%s::bigint)', :s1, :s3),
                  'get_screenings filters by cinema');
SELECT is_empty($$SELECT * FROM api.get_screenings(-1, '2040-01-01 00:00+00', '2040-01-03 00:00+00')$$,
                'an unknown cinema gives an empty list');
SELECT results_eq($$SELECT id FROM api.get_screenings(NULL, '2040-01-01 20:00+00', '2040-01-02 20:00+00')$$,
                  format('VALUES (%s::bigint), (%s::bigint)', :s1, :s4),
                  'from is inclusive and to is exclusive');
SELECT is((SELECT row(g.cinema_id, g.hall_id, g.hall_name, g.film_id, g.title, g.duration_min, g.age_rating,
                      g.starts_at, g.price, g.currency, g.seats_total, g.seats_free)::text
             FROM api.get_screenings(NULL, '2040-01-01 00:00+00', '2040-01-03 00:00+00') AS g WHERE g.id = :s1),
          row(:alpha1::bigint, :hall1::bigint, 'One', :film::bigint, 'Tap Film', 101, '16',
              '2040-01-01 20:00+00'::timestamptz, 1200, 'EUR', 6, 6)::text,
          'get_screenings answers cinema, hall, film, start, price and seat counts');

SELECT pg_temp.seat(:s1, 'A1') AS a1, pg_temp.seat(:s1, 'A2') AS a2, pg_temp.seat(:s1, 'A3') AS a3,
       pg_temp.seat(:s1, 'B1') AS b1, pg_temp.seat(:s1, 'B2') AS b2, pg_temp.seat(:s1, 'B3') AS b3 \gset
SELECT * FROM api.hold_seats(:alice, :s1, ARRAY[:a1, :a2]::bigint[]);
SELECT * FROM api.hold_seats(:bob, :s1, ARRAY[:b1]::bigint[]);
SELECT * FROM api.book_seats(:bob, :s1, ARRAY[:b1]::bigint[]);
SELECT admin.block_seats(:s1, ARRAY[:b2]::bigint[]);
UPDATE seat_states SET hold_expires_at = now() - interval '1 second' WHERE screening_id = :s1 AND seat_id = :a2;
SELECT is((SELECT row(g.seats_total, g.seats_free)::text
             FROM api.get_screenings(:alpha1, '2040-01-01 00:00+00', '2040-01-03 00:00+00') AS g WHERE g.id = :s1),
          row(6, 3)::text,
          'seats_free counts free seats and lapsed holds, not live holds, bookings or blocked seats');
SELECT ok(EXISTS (SELECT 1 FROM api.get_screenings(NULL, NULL, NULL) AS g WHERE g.id = :s3) = false
          AND EXISTS (SELECT 1 FROM api.get_screenings(NULL, '2040-01-01 00:00+00', NULL) AS g WHERE g.id = :s3),
          'a null from means now and a null to means from + 7 days');

-- Hall snapshot ----------------------------------------------------------------------------------------------------

UPDATE seats SET x = x + 1 WHERE hall_id = :hall1 AND number = 1 AND row_label = 'B';
SELECT results_eq(format('SELECT seat_id FROM api.hall_snapshot(%s)', :s1),
                  format('VALUES (%s::bigint), (%s::bigint), (%s::bigint), (%s::bigint), (%s::bigint), (%s::bigint)',
                         :a1, :a2, :a3, :b1, :b2, :b3),
                  'hall_snapshot has one row per seat, ordered by y, then x, then seat id');
SELECT is((SELECT string_agg(h.status || coalesce(':' || h.user_id, ''), ' ' ORDER BY h.y, h.x, h.seat_id)
             FROM api.hall_snapshot(:s1) AS h),
          format('held:%s free free booked:%s blocked free', :alice, :bob),
          'hall_snapshot shows each seat''s status and holder or booker; a lapsed hold is free with no user');
SELECT is((SELECT row(h.screening_id, h.hall_id, h.hall_name, h.version, h.row_label, h.number, h.x, h.y, h.kind)::text
             FROM api.hall_snapshot(:s1) AS h WHERE h.seat_id = :b1),
          row(:s1::bigint, :hall1::bigint, 'One', pg_temp.version(:s1), 'B', 1, 1, 1, 'standard')::text,
          'each row carries the screening, hall, current version and the seat''s layout');
SELECT is((SELECT count(DISTINCT h.version)::int FROM api.hall_snapshot(:s1) AS h), 1,
          'every row of a snapshot carries the same version');
SELECT is(api.screening_hall(:s1), :hall1::bigint, 'screening_hall answers the hall whose channel carries the screening');
SELECT is(api.screening_hall(-1), NULL, 'screening_hall answers null for an unknown screening');
SELECT is(pg_temp.err('SELECT * FROM api.hall_snapshot(-1)'), 'MQ404', 'an unknown screening is NOT_FOUND');
SELECT is(pg_temp.err('SELECT * FROM api.hall_snapshot(NULL)'), 'MQ400', 'a missing screening id is BAD_REQUEST');

SELECT * FROM finish();
ROLLBACK;
