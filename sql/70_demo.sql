-- Demo data for development, demos and manual testing.

CREATE OR REPLACE FUNCTION admin.seed_demo()
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    f       record;
    h       record;
    v_film  bigint;
    v_films bigint[] := '{}'::bigint[];
    v_cin   bigint;
    v_hall  bigint;
    v_new    bigint[];
    v_layout text[];
BEGIN
    -- Two DBAs (or two replicas' start-up scripts) seeding at once must not create everything twice.
    PERFORM pg_advisory_xact_lock(hashtextextended('marquee.seed_demo', 0));

    -- Films, looked up by title.
    FOR f IN
        SELECT t.title, t.duration_min, t.age_rating
          FROM (VALUES (1, 'The Last Projectionist',  118, '12'),
                       (2, 'Neon Harbour',            104, '16'),
                       (3, 'Paper Moons',              92, '6'),
                       (4, 'Orbit of Small Things',   131, '12'),
                       (5, 'A Tram Named Twenty-Eight', 99, '0'),
                       (6, 'Midnight at the Marquee', 110, '16'),
                       (7, 'The Lighthouse Keeper''s Cat', 84, '0'))
               AS t(ord, title, duration_min, age_rating)
         ORDER BY t.ord
    LOOP
        SELECT fi.id INTO v_film FROM films AS fi WHERE fi.title = f.title ORDER BY fi.id LIMIT 1;
        IF v_film IS NULL THEN
            v_film := admin.create_film(f.title, f.duration_min, f.age_rating);
        END IF;
        v_films := v_films || v_film;
    END LOOP;

    -- Cinemas (looked up by name) and their halls (by cinema and name); each hall 100 to 300 seats.
    FOR h IN
        SELECT t.*
          FROM (VALUES
                (0, 'Marquee Berlin Mitte',  'Berlin',   'Rosenthaler Straße 40, 10178 Berlin',  'Europe/Berlin',
                    'Saal 1',   10, 14, 1150, 'EUR'),
                (1, 'Marquee Berlin Mitte',  'Berlin',   'Rosenthaler Straße 40, 10178 Berlin',  'Europe/Berlin',
                    'Saal 2',   12, 20, 1150, 'EUR'),
                (2, 'Marquee Lisboa Chiado', 'Lisbon',   'Rua Garrett 12, 1200-203 Lisboa',      'Europe/Lisbon',
                    'Sala 1',    9, 12,  750, 'EUR'),
                (3, 'Marquee Lisboa Chiado', 'Lisbon',   'Rua Garrett 12, 1200-203 Lisboa',      'Europe/Lisbon',
                    'Sala 2',   11, 16,  750, 'EUR'),
                (4, 'Marquee Brooklyn',      'New York', '285 Kent Avenue, Brooklyn, NY 11249', 'America/New_York',
                    'Screen 1', 10, 12, 1600, 'USD'),
                (5, 'Marquee Brooklyn',      'New York', '285 Kent Avenue, Brooklyn, NY 11249', 'America/New_York',
                    'Screen 2', 14, 20, 1600, 'USD'))
               AS t(ord, cinema, city, address, tz, hall, nrows, per_row, price, currency)
         ORDER BY t.ord
    LOOP
        SELECT c.id INTO v_cin FROM cinemas AS c WHERE c.name = h.cinema ORDER BY c.id LIMIT 1;
        IF NOT FOUND THEN
            v_cin := admin.create_cinema(h.cinema, h.city, h.address, h.tz);
        END IF;

        SELECT ha.id INTO v_hall FROM halls AS ha WHERE ha.cinema_id = v_cin AND ha.name = h.hall;
        IF NOT FOUND THEN
            -- Drawn with admin.create_hall_layout, like a DBA would: two aisles (after seat 4 and before the last
            -- 4 seats), the last two rows vip, and in row A a wheelchair space at each end with its companion seat
            -- beside it ('wc..' ... '..cw'). Only for a hall created just now: a DBA's later edits stay.
            SELECT array_agg(l.line ORDER BY l.y) INTO v_layout
              FROM (SELECT r.i AS y,
                           string_agg(CASE
                                          WHEN r.i >= h.nrows - 2 THEN 'v'
                                          WHEN r.i = 0 AND n.i IN (1, h.per_row) THEN 'w'
                                          WHEN r.i = 0 AND n.i IN (2, h.per_row - 1) THEN 'c'
                                          ELSE 's'
                                      END
                                      || CASE WHEN n.i IN (4, h.per_row - 4) THEN '.' ELSE '' END,
                                      '' ORDER BY n.i) AS line
                      FROM generate_series(0, h.nrows - 1) AS r(i)
                     CROSS JOIN generate_series(1, h.per_row) AS n(i)
                     GROUP BY r.i) AS l;
            v_hall := admin.create_hall_layout(v_cin, h.hall, v_layout);
        END IF;

        -- Top up: four screenings a day at whole local hours, today and the next 8 days, future only: one day
        -- more than the 7-day window, so the window is full at every hour of the day in every time zone.
        WITH slots AS (
            SELECT d.i AS day, k.i AS slot, hr.i AS hour,
                   (((now() AT TIME ZONE h.tz)::date + d.i) + make_time(hr.i, 0, 0)) AT TIME ZONE h.tz AS starts_at
              FROM generate_series(0, 8) AS d(i)
              CROSS JOIN unnest(ARRAY[13, 16, 19, 22]) WITH ORDINALITY AS hr(i, k_ord)
              CROSS JOIN LATERAL (SELECT hr.k_ord::int AS i) AS k
        ), inserted AS (
            INSERT INTO screenings AS sc (hall_id, film_id, starts_at, price, currency)
            SELECT v_hall,
                   v_films[1 + (h.ord * 3 + s.day * 2 + s.slot) % cardinality(v_films)],
                   s.starts_at,
                   h.price + CASE WHEN s.hour >= 19 THEN 200 ELSE 0 END,
                   h.currency
              FROM slots AS s
             WHERE s.starts_at > now()
             ORDER BY s.starts_at
            ON CONFLICT ON CONSTRAINT screenings_hall_starts_at_key DO NOTHING
            RETURNING sc.id
        )
        SELECT array_agg(i.id) INTO v_new FROM inserted AS i;

        -- Vip seats cost 3.00 more than the rest (every kind starts at the screening's price).
        UPDATE screening_prices AS sp
           SET price = sp.price + 300
         WHERE sp.screening_id = ANY (v_new) AND sp.kind = 'vip';

        -- Seat C5 of every demo hall is broken: blocked in each screening created just now.
        UPDATE seat_states AS ss
           SET status = 'blocked'
          FROM seats AS s
         WHERE s.id = ss.seat_id
           AND s.hall_id = v_hall AND s.row_label = 'C' AND s.number = 5
           AND ss.screening_id = ANY (v_new)
           AND ss.status = 'free';
    END LOOP;
END;
$$;

COMMENT ON FUNCTION admin.seed_demo() IS
    'Idempotent demo data: 7 films, 3 cinemas (Berlin, Lisbon, New York; their own time zones) with 2 halls each '
    '(drawn with admin.create_hall_layout: vip rows 3.00 dearer, wheelchair spaces with companion seats beside them, '
    'aisles, broken seat C5 blocked), and 4 screenings a day per hall at 13, 16, 19 and '
    '22 local time from today to 8 days ahead. Running it again creates nothing twice (cinemas by name, halls by '
    'name, films by title, screenings by hall and start) and only tops screenings up to 8 days ahead.';
