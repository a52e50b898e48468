-- Holding, releasing, booking and cancelling seats; the hold-expiry sweep.
--
-- Rules every function here follows:
--   * Checks run in the protocol's error order: BAD_REQUEST, UNAUTHORIZED,
--     NOT_FOUND, SCREENING_CLOSED, HOLD_LIMIT, SEAT_UNAVAILABLE, HOLD_EXPIRED.
--   * Seat rows are locked in seat_id order (SELECT ... ORDER BY seat_id
--     FOR UPDATE) before they are read for a decision, so concurrent calls
--     wait for each other instead of deadlocking, and decide on committed
--     state (READ COMMITTED takes a fresh snapshot per statement).
--   * seat_states is changed by ONE UPDATE per call, so a call is one change
--     set: one version bump and one notification (sql/20_notify.sql).
--   * A held row whose hold_expires_at <= now() counts as free for everyone,
--     even before api.sweep_expired_holds rewrote it.
--   * Settings are read on every call.
--   * Holds are ephemeral: hold, release and sweep commit with
--     synchronous_commit off (a crash may forget the last few hundred ms of
--     holds, which would have lapsed anyway); bookings and cancellations keep
--     the server's setting (synchronous by default).

CREATE OR REPLACE FUNCTION api.hold_seats(p_user bigint, p_screening bigint, p_seats bigint[])
RETURNS TABLE (expires_at timestamptz, version bigint)
LANGUAGE plpgsql
AS $$
DECLARE
    v_seats       bigint[];
    v_starts_at   timestamptz;
    v_limit       int;
    v_ttl         int;
    v_count       bigint;
    v_unavailable bigint[];
    v_expires     timestamptz;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);

    IF p_screening IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'screening_id is required.';
    END IF;
    v_seats := internal.seat_list(p_seats);
    PERFORM internal.require_user(p_user);
    SELECT f.starts_at INTO v_starts_at FROM internal.find_screening(p_screening, v_seats) AS f;
    IF v_starts_at <= now() THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ410', MESSAGE = 'This screening has already started.';
    END IF;

    v_limit := internal.setting('seat_limit');
    v_ttl := internal.setting('hold_ttl_seconds');

    -- Holds of one screening are decided one after the other on committed state: the seat limit and the orphan
    -- rule (which reads seats the hold does not lock) need it. One in-memory lock per hold, taken before any row
    -- lock so no lock-order cycle; why this one is the cheap correct lock: sql/45_box_office.sql.
    PERFORM pg_advisory_xact_lock(p_screening);

    PERFORM 1
       FROM seat_states AS ss
      WHERE ss.screening_id = p_screening AND ss.seat_id = ANY (v_seats)
      ORDER BY ss.seat_id
        FOR UPDATE;

    SELECT count(*) INTO v_count
      FROM (SELECT ss.seat_id
              FROM seat_states AS ss
             WHERE ss.screening_id = p_screening
               AND ss.user_id = p_user
               AND (ss.status = 'booked' OR (ss.status = 'held' AND ss.hold_expires_at > now()))
            UNION
            SELECT u.id FROM unnest(v_seats) AS u(id)) AS mine;
    IF v_count > v_limit THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ411',
            MESSAGE = format('You can hold or book at most %s seats for one screening.', v_limit);
    END IF;

    SELECT array_agg(ss.seat_id ORDER BY ss.seat_id) INTO v_unavailable
      FROM seat_states AS ss
     WHERE ss.screening_id = p_screening
       AND ss.seat_id = ANY (v_seats)
       AND (ss.status IN ('booked', 'blocked')
            OR (ss.status = 'held' AND ss.user_id <> p_user AND ss.hold_expires_at > now()));
    IF v_unavailable IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ409', MESSAGE = 'Some of these seats are no longer available.',
                              DETAIL = internal.ids_json(v_unavailable);
    END IF;

    PERFORM internal.seat_rule_check(p_user, p_screening, v_seats);  -- SEAT_RULE (sql/45_box_office.sql)

    v_expires := now() + make_interval(secs => v_ttl);
    UPDATE seat_states AS ss
       SET status = 'held', user_id = p_user, hold_expires_at = v_expires, booking_id = NULL, expired_holder = NULL
     WHERE ss.screening_id = p_screening AND ss.seat_id = ANY (v_seats);

    RETURN QUERY SELECT v_expires, sc.version FROM screenings AS sc WHERE sc.id = p_screening;
END;
$$;

COMMENT ON FUNCTION api.hold_seats(bigint, bigint, bigint[]) IS
    'hold_seats, all or nothing: holds free (or lapsed) seats and renews the user''s own holds until now + '
    'hold_ttl_seconds. NOT_FOUND, SCREENING_CLOSED, HOLD_LIMIT (more than seat_limit seats held or booked by the '
    'user on the screening afterwards), SEAT_UNAVAILABLE (DETAIL: the seats held by others, booked or blocked), '
    'SEAT_RULE (companion or orphan; internal.seat_rule_check). '
    'Returns the new expiry and the screening''s version after the call.';

CREATE OR REPLACE FUNCTION api.release_seats(p_user bigint, p_screening bigint, p_seats bigint[])
RETURNS TABLE (seat_ids bigint[], version bigint)
LANGUAGE plpgsql
AS $$
DECLARE
    v_seats     bigint[];
    v_starts_at timestamptz;
    v_released  bigint[];
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);

    IF p_screening IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'screening_id is required.';
    END IF;
    v_seats := internal.seat_list(p_seats);
    PERFORM internal.require_user(p_user);
    SELECT f.starts_at INTO v_starts_at FROM internal.find_screening(p_screening, v_seats) AS f;
    IF v_starts_at <= now() THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ410', MESSAGE = 'This screening has already started.';
    END IF;

    PERFORM 1
       FROM seat_states AS ss
      WHERE ss.screening_id = p_screening AND ss.seat_id = ANY (v_seats)
        AND ss.status = 'held' AND ss.user_id = p_user
      ORDER BY ss.seat_id
        FOR UPDATE;

    WITH released AS (
        UPDATE seat_states AS ss
           SET status = 'free', user_id = NULL, hold_expires_at = NULL
         WHERE ss.screening_id = p_screening AND ss.seat_id = ANY (v_seats)
           AND ss.status = 'held' AND ss.user_id = p_user
        RETURNING ss.seat_id
    )
    SELECT coalesce(array_agg(r.seat_id ORDER BY r.seat_id), '{}') INTO v_released FROM released AS r;

    RETURN QUERY SELECT v_released, sc.version FROM screenings AS sc WHERE sc.id = p_screening;
END;
$$;

COMMENT ON FUNCTION api.release_seats(bigint, bigint, bigint[]) IS
    'release_seats: frees the user''s own holds among the given seats (lapsed ones too) and returns those, sorted; '
    'other seats are ignored. NOT_FOUND for an unknown screening or seat, SCREENING_CLOSED once it started.';

CREATE OR REPLACE FUNCTION api.book_seats(p_user bigint, p_screening bigint, p_seats bigint[])
RETURNS TABLE (
    booking_id   bigint,
    screening_id bigint,
    seat_ids     bigint[],
    total        int,
    currency     text,
    status       text,
    created_at   timestamptz,
    version      bigint
)
LANGUAGE plpgsql
AS $$
DECLARE
    v_seats       bigint[];
    v_screening   record;
    v_unavailable bigint[];
    v_expired     bigint[];
    v_booking     bigint;
    v_total       int;
    v_created     timestamptz;
BEGIN
    IF p_screening IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'screening_id is required.';
    END IF;
    v_seats := internal.seat_list(p_seats);
    PERFORM internal.require_user(p_user);
    SELECT f.starts_at, f.price, f.currency INTO v_screening FROM internal.find_screening(p_screening, v_seats) AS f;
    IF v_screening.starts_at <= now() THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ410', MESSAGE = 'This screening has already started.';
    END IF;

    PERFORM 1
       FROM seat_states AS ss
      WHERE ss.screening_id = p_screening AND ss.seat_id = ANY (v_seats)
      ORDER BY ss.seat_id
        FOR UPDATE;

    SELECT array_agg(v.seat_id ORDER BY v.seat_id) FILTER (WHERE v.verdict = 'unavailable'),
           array_agg(v.seat_id ORDER BY v.seat_id) FILTER (WHERE v.verdict = 'expired')
      INTO v_unavailable, v_expired
      FROM (SELECT ss.seat_id,
                   CASE
                       WHEN ss.status = 'held' AND ss.user_id = p_user AND ss.hold_expires_at > now() THEN 'ok'
                       WHEN ss.status = 'held' AND ss.user_id = p_user THEN 'expired'
                       WHEN ss.status = 'free' AND ss.expired_holder = p_user THEN 'expired'
                       ELSE 'unavailable'
                   END AS verdict
              FROM seat_states AS ss
             WHERE ss.screening_id = p_screening AND ss.seat_id = ANY (v_seats)) AS v;
    IF v_unavailable IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ409', MESSAGE = 'Some of these seats are not held by you.',
                              DETAIL = internal.ids_json(v_unavailable);
    END IF;
    IF v_expired IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ412', MESSAGE = 'Your hold on some of these seats has expired.',
                              DETAIL = internal.ids_json(v_expired);
    END IF;
    PERFORM internal.companion_check(p_user, p_screening, v_seats, true);  -- SEAT_RULE "companion"

    v_total := internal.seats_total(p_screening, v_seats);  -- each seat at its kind's price
    INSERT INTO bookings AS b (user_id, screening_id, total, currency, status)
    VALUES (p_user, p_screening, v_total, v_screening.currency, 'confirmed')
    RETURNING b.id, b.created_at INTO v_booking, v_created;

    UPDATE seat_states AS ss
       SET status = 'booked', booking_id = v_booking, hold_expires_at = NULL
     WHERE ss.screening_id = p_screening AND ss.seat_id = ANY (v_seats);

    INSERT INTO booking_seats (booking_id, screening_id, seat_id, active)
    SELECT v_booking, p_screening, u.id, true FROM unnest(v_seats) AS u(id);

    RETURN QUERY
    SELECT v_booking, p_screening, v_seats, v_total, v_screening.currency::text, 'confirmed'::text, v_created, sc.version
      FROM screenings AS sc
     WHERE sc.id = p_screening;
END;
$$;

COMMENT ON FUNCTION api.book_seats(bigint, bigint, bigint[]) IS
    'book_seats, all or nothing: turns the user''s live holds into a confirmed booking (total = the sum of the '
    'seats'' prices by kind). '
    'NOT_FOUND, SCREENING_CLOSED, SEAT_UNAVAILABLE (held by someone else, booked, blocked, or free and not a '
    'lapsed hold of this user), HOLD_EXPIRED (the user''s hold lapsed and nobody took the seat since), SEAT_RULE '
    '"companion" (a companion seat without a wheelchair space booked with it or before). '
    'Commits synchronously (the server''s default): a booking must survive a crash.';

CREATE OR REPLACE FUNCTION api.cancel_booking(p_user bigint, p_booking bigint)
RETURNS TABLE (
    booking_id   bigint,
    screening_id bigint,
    seat_ids     bigint[],
    total        int,
    currency     text,
    status       text,
    created_at   timestamptz,
    version      bigint
)
LANGUAGE plpgsql
AS $$
DECLARE
    v_booking   record;
    v_starts_at timestamptz;
BEGIN
    IF p_booking IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'booking_id is required.';
    END IF;
    PERFORM internal.require_user(p_user);

    -- The booking row is locked first, then its seats: book_seats never locks an existing booking, so the two
    -- orders cannot form a cycle.
    SELECT b.id, b.screening_id, b.status
      INTO v_booking
      FROM bookings AS b
     WHERE b.id = p_booking AND b.user_id = p_user
       FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ404', MESSAGE = 'Booking not found.';
    END IF;

    -- Cancelling a cancelled booking answers it again, unchanged (even after the start: nothing is changed).
    IF v_booking.status = 'confirmed' THEN
        SELECT sc.starts_at INTO v_starts_at FROM screenings AS sc WHERE sc.id = v_booking.screening_id;
        -- The cancellation cut-off: closed from starts_at minus cancel_cutoff_minutes on.
        IF v_starts_at - make_interval(mins => internal.setting('cancel_cutoff_minutes')) <= now() THEN
            RAISE EXCEPTION USING ERRCODE = 'MQ410', MESSAGE = 'Too late to cancel: the screening starts soon or has started.';
        END IF;

        PERFORM 1
           FROM seat_states AS ss
          WHERE ss.screening_id = v_booking.screening_id AND ss.booking_id = v_booking.id
          ORDER BY ss.seat_id
            FOR UPDATE;

        UPDATE seat_states AS ss
           SET status = 'free', user_id = NULL, booking_id = NULL
         WHERE ss.screening_id = v_booking.screening_id AND ss.booking_id = v_booking.id;

        UPDATE booking_seats AS bs SET active = false WHERE bs.booking_id = v_booking.id;
        UPDATE bookings AS b SET status = 'cancelled', cancelled_at = now() WHERE b.id = v_booking.id;
    END IF;

    RETURN QUERY
    SELECT b.id, b.screening_id,
           ARRAY(SELECT bs.seat_id FROM booking_seats AS bs WHERE bs.booking_id = b.id ORDER BY bs.seat_id),
           b.total, b.currency, b.status, b.created_at, sc.version
      FROM bookings AS b
      JOIN screenings AS sc ON sc.id = b.screening_id
     WHERE b.id = v_booking.id;
END;
$$;

COMMENT ON FUNCTION api.cancel_booking(bigint, bigint) IS
    'cancel_booking: the user''s own booking only (another''s is NOT_FOUND); SCREENING_CLOSED from the screening''s '
    'start minus cancel_cutoff_minutes on; frees its seats and marks it cancelled. A cancelled booking is returned unchanged, without error.';

CREATE OR REPLACE FUNCTION api.get_bookings(p_user bigint)
RETURNS TABLE (
    booking_id   bigint,
    screening_id bigint,
    seat_ids     bigint[],
    total        int,
    currency     text,
    status       text,
    created_at   timestamptz
)
LANGUAGE sql
STABLE
AS $$
    SELECT b.id, b.screening_id,
           ARRAY(SELECT bs.seat_id FROM booking_seats AS bs WHERE bs.booking_id = b.id ORDER BY bs.seat_id),
           b.total, b.currency, b.status, b.created_at
      FROM bookings AS b
     WHERE b.user_id = p_user
     ORDER BY b.created_at DESC, b.id DESC
$$;

COMMENT ON FUNCTION api.get_bookings(bigint) IS
    'get_bookings: the user''s bookings (cancelled ones too, with the seats they had), newest first, ties by id.';

CREATE OR REPLACE FUNCTION api.sweep_expired_holds()
RETURNS int
LANGUAGE plpgsql
AS $$
DECLARE
    v_count int;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);

    -- SKIP LOCKED: replicas sweeping at the same moment take disjoint rows instead of queueing, and a seat a
    -- request is working on right now is left for the next sweep. The status test is repeated in the UPDATE so
    -- the row is re-checked against its newest version.
    WITH lapsed AS (
        SELECT ss.screening_id, ss.seat_id
          FROM seat_states AS ss
         WHERE ss.status = 'held' AND ss.hold_expires_at <= now()
         ORDER BY ss.hold_expires_at
         LIMIT 10000
           FOR UPDATE SKIP LOCKED
    )
    UPDATE seat_states AS ss
       SET status = 'free', expired_holder = ss.user_id, user_id = NULL, hold_expires_at = NULL
      FROM lapsed AS l
     WHERE ss.screening_id = l.screening_id AND ss.seat_id = l.seat_id
       AND ss.status = 'held' AND ss.hold_expires_at <= now();
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END;
$$;

COMMENT ON FUNCTION api.sweep_expired_holds() IS
    'Frees lapsed holds (at most 10,000 per call; call again while it returns 10,000), remembering the holder in '
    'expired_holder for HOLD_EXPIRED. One UPDATE, so one notification per screening. Safe to run every second on '
    'every replica at once (FOR UPDATE SKIP LOCKED); idempotent. Returns the number of seats freed.';
