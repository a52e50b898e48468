-- The catalogue: seat rows for new screenings, and the read functions the
-- server calls for get_cinemas, get_screenings and hall snapshots.

CREATE OR REPLACE FUNCTION internal.screenings_create_seat_states()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    INSERT INTO screening_versions (screening_id, version)
    SELECT sc.id, 0 FROM new_screenings AS sc;
    INSERT INTO seat_states (screening_id, seat_id, status)
    SELECT sc.id, s.id, 'free'
      FROM new_screenings AS sc
      JOIN seats AS s ON s.hall_id = sc.hall_id
     ORDER BY sc.id, s.id;
    RETURN NULL;
END;
$$;

COMMENT ON FUNCTION internal.screenings_create_seat_states() IS
    'Statement-level AFTER INSERT trigger on screenings: gives every new screening its version row (0) and one free '
    'seat_states row per seat of its hall, however the screening was inserted (admin.create_screening, seed_demo '
    'or a DBA). Free rows are no change, so this neither bumps the version nor notifies.';

SELECT internal.ensure_trigger(
    'screenings', 'screenings_create_seat_states',
    $ddl$
    CREATE TRIGGER screenings_create_seat_states
        AFTER INSERT ON screenings
        REFERENCING NEW TABLE AS new_screenings
        FOR EACH STATEMENT EXECUTE FUNCTION internal.screenings_create_seat_states()
    $ddl$,
    'Every seat of a new screening''s hall starts free.');

CREATE OR REPLACE FUNCTION internal.seats_create_seat_states()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    INSERT INTO seat_states (screening_id, seat_id, status)
    SELECT sc.id, s.id, 'free'
      FROM new_seats AS s
      JOIN screenings AS sc ON sc.hall_id = s.hall_id
     ORDER BY sc.id, s.id;
    RETURN NULL;
END;
$$;

COMMENT ON FUNCTION internal.seats_create_seat_states() IS
    'Statement-level AFTER INSERT trigger on seats: a seat a DBA adds to a hall that already has screenings '
    'gets a free row in each, so "one seat_states row per seat and screening" always holds.';

SELECT internal.ensure_trigger(
    'seats', 'seats_create_seat_states',
    $ddl$
    CREATE TRIGGER seats_create_seat_states
        AFTER INSERT ON seats
        REFERENCING NEW TABLE AS new_seats
        FOR EACH STATEMENT EXECUTE FUNCTION internal.seats_create_seat_states()
    $ddl$,
    'A seat added to a hall is free in the hall''s existing screenings.');

CREATE OR REPLACE FUNCTION internal.screenings_keep_hall()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'MQ400',
        MESSAGE = 'A screening cannot move to another hall; cancel it and create a new one.';
END;
$$;

COMMENT ON FUNCTION internal.screenings_keep_hall() IS
    'BEFORE UPDATE trigger on screenings: refuses changing hall_id, because the screening''s seat_states rows, '
    'holds and bookings name seats of the old hall.';

SELECT internal.ensure_trigger(
    'screenings', 'screenings_keep_hall',
    $ddl$
    CREATE TRIGGER screenings_keep_hall
        BEFORE UPDATE OF hall_id ON screenings
        FOR EACH ROW
        WHEN (OLD.hall_id IS DISTINCT FROM NEW.hall_id)
        EXECUTE FUNCTION internal.screenings_keep_hall()
    $ddl$,
    'Seat rows belong to the hall a screening was created in.');

CREATE OR REPLACE FUNCTION api.get_cinemas()
RETURNS TABLE (id bigint, name text, city text, address text, timezone text)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT c.id, c.name, c.city, c.address, c.timezone
      FROM cinemas AS c
     ORDER BY c.name, c.id
$$;

COMMENT ON FUNCTION api.get_cinemas() IS
    'get_cinemas: every cinema, ordered by name then id.';

CREATE OR REPLACE FUNCTION api.get_screenings(p_cinema bigint, p_from timestamptz, p_to timestamptz)
RETURNS TABLE (
    id           bigint,
    cinema_id    bigint,
    hall_id      bigint,
    hall_name    text,
    film_id      bigint,
    title        text,
    duration_min int,
    age_rating   text,
    starts_at    timestamptz,
    price        int,
    currency     text,
    seats_total  int,
    seats_free   int,
    prices       jsonb
)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_from timestamptz := coalesce(p_from, now());
    v_to   timestamptz := coalesce(p_to, coalesce(p_from, now()) + interval '7 days');
BEGIN
    -- One answer stays small (PROTOCOL.md "Abuse limits"): a year of screenings was tens of kilobytes per request.
    IF v_to - v_from > interval '31 days' THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'Ask for at most 31 days of screenings at a time.';
    END IF;
    RETURN QUERY
    SELECT sc.id, h.cinema_id, h.id, h.name,
           f.id, f.title, f.duration_min, f.age_rating,
           sc.starts_at, sc.price, sc.currency,
           n.seats_total, n.seats_free,
           (SELECT jsonb_object_agg(sp.kind, sp.price ORDER BY sp.kind)
              FROM screening_prices AS sp WHERE sp.screening_id = sc.id)
      FROM screenings AS sc
      JOIN halls AS h ON h.id = sc.hall_id
      JOIN films AS f ON f.id = sc.film_id
     CROSS JOIN LATERAL (
           SELECT count(*)::int AS seats_total,
                  (count(*) FILTER (WHERE ss.status = 'free'
                                       OR (ss.status = 'held' AND ss.hold_expires_at <= now())))::int AS seats_free
             FROM seat_states AS ss
            WHERE ss.screening_id = sc.id
           ) AS n
     WHERE (p_cinema IS NULL OR h.cinema_id = p_cinema)
       AND sc.starts_at >= v_from
       AND sc.starts_at <  v_to
     ORDER BY sc.starts_at, sc.id;
END;
$$;

COMMENT ON FUNCTION api.get_screenings(bigint, timestamptz, timestamptz) IS
    'get_screenings: screenings with p_from <= starts_at < p_to (null p_cinema = all cinemas; null p_from = now, '
    'null p_to = p_from + 7 days), ordered by starts_at, id. seats_free counts free seats now: lapsed holds count '
    'as free, blocked seats do not. prices: one price per seat kind (screening_prices, version 1.1). '
    'A window longer than 31 days raises MQ400 (BAD_REQUEST).';

CREATE OR REPLACE FUNCTION api.screening_hall(p_screening bigint)
RETURNS bigint
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT sc.hall_id FROM screenings AS sc WHERE sc.id = p_screening
$$;

COMMENT ON FUNCTION api.screening_hall(bigint) IS
    'The hall of a screening (its notification channel is hall_<hall_id>), or null when there is no such '
    'screening; the server LISTENs on that channel before it loads the snapshot.';

CREATE OR REPLACE FUNCTION api.hall_snapshot(p_screening bigint)
RETURNS TABLE (
    screening_id bigint,
    hall_id      bigint,
    hall_name    text,
    version      bigint,
    seat_id      bigint,
    row_label    text,
    number       int,
    x            int,
    y            int,
    kind         text,
    status       text,
    user_id      bigint
)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF p_screening IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'screening_id is required.';
    END IF;

    -- One statement, so one MVCC snapshot: the version agrees with the seat states. A listener that started
    -- LISTENing before this call applies only notifications with a greater version.
    RETURN QUERY
    SELECT sc.id, h.id, h.name, sv.version,
           s.id, s.row_label, s.number, s.x, s.y, s.kind,
           CASE WHEN ss.status = 'held' AND ss.hold_expires_at <= now() THEN 'free' ELSE ss.status END,
           CASE WHEN ss.status = 'held' AND ss.hold_expires_at <= now() THEN NULL ELSE ss.user_id END
      FROM screenings AS sc
      JOIN screening_versions AS sv ON sv.screening_id = sc.id
      JOIN halls AS h ON h.id = sc.hall_id
      JOIN seat_states AS ss ON ss.screening_id = sc.id
      -- The hall's seats by the hall's id (an index range): joined by seat id alone, the plan hashed every seat
      -- of every hall, 4-5 ms a snapshot once the database held 36,000 seats.
      JOIN seats AS s ON s.hall_id = sc.hall_id AND s.id = ss.seat_id
     WHERE sc.id = p_screening
     ORDER BY s.y, s.x, s.id;

    IF NOT FOUND AND NOT EXISTS (SELECT 1 FROM screenings AS sc WHERE sc.id = p_screening) THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ404', MESSAGE = 'Screening not found.';
    END IF;
END;
$$;

COMMENT ON FUNCTION api.hall_snapshot(bigint) IS
    'subscribe_hall / get_hall: one row per seat (ordered by y, x, seat_id) with the screening''s version, read in '
    'one query so version and states agree. Lapsed holds read as free with user_id null. NOT_FOUND (MQ404) for an '
    'unknown screening.';
