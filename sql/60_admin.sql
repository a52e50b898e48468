-- DBA functions (docs/protocol.md "SQL interface for DBAs").
--
-- Parameter names are the protocol's, so named notation works:
--   SELECT admin.create_hall(cinema_id => 1, name => 'Saal 3', rows => 8, seats_per_row => 12);
-- Bad input raises MQ400 (BAD_REQUEST) and unknown ids MQ404 (NOT_FOUND),
-- with a message that says what to fix.

CREATE OR REPLACE FUNCTION internal.row_label(p_index int)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
STRICT
AS $$
DECLARE
    v_label text := '';
    v_n     int := p_index + 1;
BEGIN
    -- Bijective base 26 (like spreadsheet columns): 0 -> A, 25 -> Z, 26 -> AA, 701 -> ZZ.
    WHILE v_n > 0 LOOP
        v_label := chr(65 + (v_n - 1) % 26) || v_label;
        v_n := (v_n - 1) / 26;
    END LOOP;
    RETURN v_label;
END;
$$;

COMMENT ON FUNCTION internal.row_label(int) IS
    'Row label for the 0-based row index: A..Z, then AA, AB, ... so halls may have more than 26 rows.';

CREATE OR REPLACE FUNCTION admin.create_cinema(name text, city text, address text, timezone text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_id bigint;
BEGIN
    IF coalesce(btrim(create_cinema.name), '') = '' THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'A cinema needs a name.';
    END IF;
    IF coalesce(btrim(create_cinema.city), '') = '' THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'A cinema needs a city.';
    END IF;
    IF create_cinema.address IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'A cinema needs an address.';
    END IF;
    IF create_cinema.timezone IS NULL
       OR NOT EXISTS (SELECT 1 FROM pg_timezone_names AS z WHERE z.name = create_cinema.timezone) THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400',
            MESSAGE = format('Unknown time zone %L; use an IANA name such as Europe/Berlin.', create_cinema.timezone);
    END IF;

    INSERT INTO cinemas AS c (name, city, address, timezone)
    VALUES (btrim(create_cinema.name), btrim(create_cinema.city), create_cinema.address, create_cinema.timezone)
    RETURNING c.id INTO v_id;
    RETURN v_id;
END;
$$;

COMMENT ON FUNCTION admin.create_cinema(text, text, text, text) IS
    'Creates a cinema; the time zone must be a name in pg_timezone_names (e.g. Europe/Berlin). Returns its id.';

CREATE OR REPLACE FUNCTION admin.create_hall(cinema_id bigint, name text, rows int, seats_per_row int)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_id bigint;
BEGIN
    IF create_hall.cinema_id IS NULL OR coalesce(btrim(create_hall.name), '') = '' THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'A hall needs a cinema_id and a name.';
    END IF;
    IF create_hall.rows IS NULL OR create_hall.rows NOT BETWEEN 1 AND 702 THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'rows must be between 1 and 702 (A to ZZ).';
    END IF;
    IF create_hall.seats_per_row IS NULL OR create_hall.seats_per_row NOT BETWEEN 1 AND 500 THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'seats_per_row must be between 1 and 500.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM cinemas AS c WHERE c.id = create_hall.cinema_id) THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ404', MESSAGE = 'Cinema not found.';
    END IF;
    IF EXISTS (SELECT 1 FROM halls AS h WHERE h.cinema_id = create_hall.cinema_id AND h.name = btrim(create_hall.name)) THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'This cinema already has a hall of that name.';
    END IF;

    INSERT INTO halls AS h (cinema_id, name)
    VALUES (create_hall.cinema_id, btrim(create_hall.name))
    RETURNING h.id INTO v_id;

    -- Row A is nearest the screen (y = 0); seat 1 is leftmost (x = 0). Kinds and aisles can be changed after.
    INSERT INTO seats (hall_id, row_label, number, x, y, kind)
    SELECT v_id, internal.row_label(r.i), n.i, n.i - 1, r.i, 'standard'
      FROM generate_series(0, create_hall.rows - 1) AS r(i)
     CROSS JOIN generate_series(1, create_hall.seats_per_row) AS n(i)
     ORDER BY r.i, n.i;
    RETURN v_id;
END;
$$;

COMMENT ON FUNCTION admin.create_hall(bigint, text, int, int) IS
    'Creates a hall with a rectangular layout: rows labelled A, B, ... (AA after Z), seats numbered from 1, '
    'x = number - 1, y = row index, kind standard. Change kinds or x afterwards with a plain UPDATE seats. '
    'Returns the hall id.';

CREATE OR REPLACE FUNCTION admin.create_film(title text, duration_min int, age_rating text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_id bigint;
BEGIN
    IF coalesce(btrim(create_film.title), '') = '' THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'A film needs a title.';
    END IF;
    IF create_film.duration_min IS NULL OR create_film.duration_min NOT BETWEEN 1 AND 1440 THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'duration_min must be between 1 and 1440.';
    END IF;
    IF create_film.age_rating IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'A film needs an age rating.';
    END IF;

    INSERT INTO films AS f (title, duration_min, age_rating)
    VALUES (btrim(create_film.title), create_film.duration_min, btrim(create_film.age_rating))
    RETURNING f.id INTO v_id;
    RETURN v_id;
END;
$$;

COMMENT ON FUNCTION admin.create_film(text, int, text) IS 'Creates a film. Returns its id.';

CREATE OR REPLACE FUNCTION admin.create_screening(hall_id bigint, film_id bigint, starts_at timestamptz,
                                                  price int, currency text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_currency text := upper(btrim(create_screening.currency));
    v_id       bigint;
BEGIN
    IF create_screening.hall_id IS NULL OR create_screening.film_id IS NULL OR create_screening.starts_at IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'A screening needs a hall_id, a film_id and starts_at.';
    END IF;
    IF create_screening.price IS NULL OR create_screening.price < 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'price must be zero or more (minor units, e.g. cents).';
    END IF;
    IF v_currency IS NULL OR v_currency !~ '^[A-Z]{3}$' THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'currency must be an ISO 4217 code such as EUR.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM halls AS h WHERE h.id = create_screening.hall_id) THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ404', MESSAGE = 'Hall not found.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM films AS f WHERE f.id = create_screening.film_id) THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ404', MESSAGE = 'Film not found.';
    END IF;

    INSERT INTO screenings AS sc (hall_id, film_id, starts_at, price, currency)
    VALUES (create_screening.hall_id, create_screening.film_id, create_screening.starts_at,
            create_screening.price, v_currency)
    ON CONFLICT ON CONSTRAINT screenings_hall_starts_at_key DO NOTHING
    RETURNING sc.id INTO v_id;
    IF v_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'This hall already has a screening at that time.';
    END IF;
    RETURN v_id;  -- its seat_states rows were created by trigger screenings_create_seat_states
END;
$$;

COMMENT ON FUNCTION admin.create_screening(bigint, bigint, timestamptz, int, text) IS
    'Creates a screening (currency upper-cased) with every seat of the hall free. Returns its id.';

CREATE OR REPLACE FUNCTION admin.block_seats(screening_id bigint, seat_ids bigint[])
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_seats bigint[];
    v_count int;
BEGIN
    IF block_seats.screening_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'screening_id is required.';
    END IF;
    v_seats := internal.seat_list(block_seats.seat_ids);
    PERFORM internal.find_screening(block_seats.screening_id, v_seats);
    -- Before any row lock, like every change of a screening through the api (sql/40_seats.sql).
    PERFORM pg_advisory_xact_lock(block_seats.screening_id);

    PERFORM 1
       FROM seat_states AS ss
      WHERE ss.screening_id = block_seats.screening_id AND ss.seat_id = ANY (v_seats)
        AND ss.status IN ('free', 'held')
      ORDER BY ss.seat_id
        FOR UPDATE;

    UPDATE seat_states AS ss
       SET status = 'blocked', user_id = NULL, hold_expires_at = NULL, held_at = NULL
     WHERE ss.screening_id = block_seats.screening_id AND ss.seat_id = ANY (v_seats)
       AND ss.status IN ('free', 'held');
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END;
$$;

COMMENT ON FUNCTION admin.block_seats(bigint, bigint[]) IS
    'Blocks seats of a screening (broken seat, reserved for staff): free and held seats become blocked (a hold is '
    'lost), booked ones are left alone (cancel the booking first). Notifies like any change. Returns how many '
    'seats changed.';

CREATE OR REPLACE FUNCTION admin.unblock_seats(screening_id bigint, seat_ids bigint[])
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_seats bigint[];
    v_count int;
BEGIN
    IF unblock_seats.screening_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'screening_id is required.';
    END IF;
    v_seats := internal.seat_list(unblock_seats.seat_ids);
    PERFORM internal.find_screening(unblock_seats.screening_id, v_seats);
    -- Before any row lock, like every change of a screening through the api (sql/40_seats.sql).
    PERFORM pg_advisory_xact_lock(unblock_seats.screening_id);

    PERFORM 1
       FROM seat_states AS ss
      WHERE ss.screening_id = unblock_seats.screening_id AND ss.seat_id = ANY (v_seats)
        AND ss.status = 'blocked'
      ORDER BY ss.seat_id
        FOR UPDATE;

    UPDATE seat_states AS ss
       SET status = 'free'
     WHERE ss.screening_id = unblock_seats.screening_id AND ss.seat_id = ANY (v_seats)
       AND ss.status = 'blocked';
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END;
$$;

COMMENT ON FUNCTION admin.unblock_seats(bigint, bigint[]) IS
    'Makes blocked seats of a screening free again; other seats are left alone. Returns how many seats changed.';

CREATE OR REPLACE FUNCTION admin.set_hold_ttl(seconds int)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    PERFORM internal.put_setting('hold_ttl_seconds', set_hold_ttl.seconds, 1, 86400,
                                 'The hold TTL must be between 1 and 86400 seconds.');
END;
$$;

COMMENT ON FUNCTION admin.set_hold_ttl(int) IS
    'Sets how long a new or renewed hold lasts (1 s to 1 day); applies to the next hold on every replica. '
    'Existing holds keep their expiry.';

CREATE OR REPLACE FUNCTION admin.set_seat_limit(n int)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    PERFORM internal.put_setting('seat_limit', set_seat_limit.n, 1, 1000,
                                 'The seat limit must be between 1 and 1000.');
END;
$$;

COMMENT ON FUNCTION admin.set_seat_limit(int) IS
    'Sets how many seats one user may hold or have booked per screening; applies to the next hold on every '
    'replica. Seats already held or booked are kept.';

CREATE OR REPLACE FUNCTION admin.set_user_hold_limit(n int)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    PERFORM internal.put_setting('user_hold_limit', set_user_hold_limit.n, 1, 100000,
                                 'The hold limit per user must be between 1 and 100000.');
END;
$$;

COMMENT ON FUNCTION admin.set_user_hold_limit(int) IS
    'Sets how many seats one user may hold at once over all screenings together (bookings do not count); applies '
    'to the next hold on every replica. Holds already taken are kept.';

CREATE OR REPLACE FUNCTION admin.set_max_hold_seconds(s int)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    PERFORM internal.put_setting('max_hold_seconds', set_max_hold_seconds.s, 1, 604800,
                                 'The hold lifetime must be between 1 and 604800 seconds.');
END;
$$;

COMMENT ON FUNCTION admin.set_max_hold_seconds(int) IS
    'Sets the longest a user may keep one seat by renewing: its expiry never passes the moment the user took it '
    'plus this many seconds (1 s to 7 days); applies to the next hold on every replica.';

CREATE OR REPLACE FUNCTION admin.set_registration_limit(per_hour int)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    PERFORM internal.put_setting('registrations_per_hour', set_registration_limit.per_hour, 0, 1000000,
                                 'The registration limit must be between 0 (off) and 1000000 per hour.');
END;
$$;

COMMENT ON FUNCTION admin.set_registration_limit(int) IS
    'Sets how many users one client address may register per hour (0 turns the limit off); applies to the next '
    'auth_start on every replica. Registrations already made keep counting for their hour.';

CREATE OR REPLACE FUNCTION admin.set_login_limits(per_name_address int, per_name int, per_address int)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF set_login_limits.per_name_address IS NULL OR set_login_limits.per_name_address NOT BETWEEN 1 AND 1000000
       OR set_login_limits.per_name IS NULL OR set_login_limits.per_name NOT BETWEEN 1 AND 1000000
       OR set_login_limits.per_address IS NULL OR set_login_limits.per_address NOT BETWEEN 1 AND 1000000 THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400',
            MESSAGE = 'Each wrong-code limit must be between 1 and 1000000 per 15 minutes.';
    END IF;
    INSERT INTO settings AS s (key, value) VALUES
        ('login_failures_per_name_address', set_login_limits.per_name_address),
        ('login_failures_per_name', set_login_limits.per_name),
        ('login_failures_per_address', set_login_limits.per_address)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value;
END;
$$;

COMMENT ON FUNCTION admin.set_login_limits(int, int, int) IS
    'Sets the wrong-code limits, each in a sliding 15 minutes: per username and client address, per username from '
    'all addresses, per address over all usernames; applies to the next auth_verify on every replica. Failures '
    'already recorded keep counting.';
