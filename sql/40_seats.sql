-- Holding, releasing, booking and cancelling seats; the hold-expiry sweep.
--
-- Rules every function here follows:
--   * Checks run in the protocol's error order: BAD_REQUEST, UNAUTHORIZED,
--     NOT_FOUND, SCREENING_CLOSED, HOLD_LIMIT, SEAT_UNAVAILABLE, HOLD_EXPIRED.
--   * Seat rows are locked in seat_id order (SELECT ... ORDER BY seat_id
--     FOR UPDATE) before they are read for a decision, so concurrent calls
--     wait for each other instead of deadlocking, and decide on committed
--     state (READ COMMITTED takes a fresh snapshot per statement).
--   * Changes of one screening are decided one after the other: hold_seats,
--     release_seats, book_seats and cancel_booking (and api.hold_best_available,
--     admin.block_seats, admin.unblock_seats) take a transaction advisory lock on
--     the screening before any row lock. Holds need it for their rules (see
--     api.hold_seats); the others take it so that a transaction holding several
--     changes (api.seat_batch, sql/47_seat_batch.sql) never waits for a row lock
--     of a screening whose version row it holds: whoever holds a screening's
--     row locks holds its advisory lock too. The sweep only tries it (it never
--     waits). Nothing waits for that lock while holding a row lock of the
--     screening, so it adds no lock-order cycle; it adds little waiting either,
--     because the version bump already orders a screening's changes until commit.
--   * seat_states is changed by ONE UPDATE per call, so a call is one change
--     set: one version bump and one notification (sql/20_notify.sql).
--   * A held row whose hold_expires_at <= now() counts as free for everyone,
--     even before api.sweep_expired_holds rewrote it.
--   * Settings are read on every call (a hold reads hold_settings, the one-row copy of settings).
--   * Holds are ephemeral: hold, release and sweep commit with
--     synchronous_commit off (a crash may forget the last few hundred ms of
--     holds, which would have lapsed anyway); bookings and cancellations keep
--     the server's setting (synchronous by default).
--
-- These are the hot path (docs/benchmarks.md): each call is written as few
-- statements as its rules allow, with the checks inlined rather than calls of
-- small helper functions (each PL/pgSQL call and each statement costs
-- executor start-up, and SQL-language helpers are planned again on every
-- call). The functions run with plan_cache_mode = force_generic_plan: their
-- statements look rows up by primary key or by (screening_id, user_id), where
-- the generic plan is the custom one, so planning once per session is enough.
-- And with enable_seqscan = off: a generic plan is made once per connection
-- and kept, and one made while the tables were small (a new database, a
-- benchmark's) read seat_states and screening_versions from end to end on
-- every call for as long as the connection lived (docs/benchmarks.md,
-- session 5: PostgreSQL CPU per hold or release 170 % of the floor with
-- those plans, 137 % without). Every lookup here has an index.

CREATE OR REPLACE FUNCTION api.hold_seats(p_user bigint, p_screening bigint, p_seats bigint[])
RETURNS TABLE (expires_at timestamptz, version bigint)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET marquee.publisher = 'api'
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_entries     text;  -- the notification's seat entries (internal.seat_entries)
    v_seats       bigint[] := p_seats;
    v_n           int := cardinality(p_seats);
    v_user_ok     boolean;
    v_hall        bigint;
    v_starts_at   timestamptz;
    v_seat_limit  int;
    v_ttl         int;
    v_user_limit  int;
    v_max_hold    int;
    v_orphan_rule boolean;
    v_companion   boolean;
    v_found       int;
    v_renewed     int;
    v_first_taken timestamptz;
    v_orphan      boolean;
    v_taken       boolean;
    v_unavailable bigint[];
    v_missing     bigint[];
    v_mine        bigint;
    v_user_holds  bigint;
    v_changed     bigint[];
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);

    IF p_screening IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'screening_id is required.';
    END IF;
    IF v_n IS DISTINCT FROM 1 OR p_seats[1] IS NULL THEN
        -- Anything but one seat id (the common request) is checked and sorted by internal.seat_list
        -- (BAD_REQUEST when empty or with a null); one id is already a valid, sorted list.
        v_seats := internal.seat_list(p_seats);
        v_n := cardinality(v_seats);
    END IF;

    -- The user (UNAUTHORIZED unless it exists: a session of a deleted user must not reach the seat tables), the
    -- screening and every setting in one statement.
    SELECT EXISTS (SELECT FROM users AS u WHERE u.id = p_user), sc.hall_id, sc.starts_at,
           st.seat_limit, st.hold_ttl_seconds, st.user_hold_limit, st.max_hold_seconds, st.orphan_rule <> 0
      INTO v_user_ok, v_hall, v_starts_at, v_seat_limit, v_ttl, v_user_limit, v_max_hold, v_orphan_rule
      FROM hold_settings AS st  -- settings' copy as one row (migration V17, internal.settings_mirror)
      LEFT JOIN screenings AS sc ON sc.id = p_screening;
    IF NOT v_user_ok THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ401', MESSAGE = 'Please log in first.';
    END IF;
    IF v_hall IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ404', MESSAGE = 'Screening not found.';
    END IF;
    IF v_seat_limit IS NULL OR v_ttl IS NULL OR v_user_limit IS NULL OR v_max_hold IS NULL OR v_orphan_rule IS NULL
    THEN
        -- A deployment bug, not a user error: a plain error, answered as INTERNAL.
        RAISE EXCEPTION 'a hold setting is missing from table settings';
    END IF;

    -- Holds of one screening are decided one after the other, each on the state the previous one committed: the
    -- seat rules (the per-screening limit here, the orphan rule) look at seats beyond the requested ones, which
    -- row locks on the requested seats alone would not protect. Why this lock: sql/45_box_office.sql. The
    -- version bump serialises a screening's changes until commit anyway, so it adds no wait the design did not
    -- have.
    PERFORM pg_advisory_xact_lock(p_screening);
    -- user_hold_limit spans screenings, so one user's holds queue on the user too (two-key form, a lock space
    -- of its own; ids folded into int4, two users sharing a key only queue together), taken second by every
    -- hold: no cycle.
    PERFORM pg_advisory_xact_lock(2, (p_user % 2147483647)::int);

    -- Lock the requested seats in seat_id order and classify them in the same statement: their kind (only a
    -- companion seat needs the companion rule), whether any is taken, whether the hold would make an orphan
    -- (with the orphan rule on), and the user's other seats for the two limits. It answers counts and flags only:
    -- the lists an error names (the taken seats, the orphans) are read again on the error paths, because every
    -- array_agg, FILTER and sub-plan here is set up anew on each call (the executor's start-up of this statement
    -- was the largest part of a hold; docs/benchmarks.md, session 5).
    --
    -- Orphans: only a neighbour f of a requested seat s can become one, and f's neighbours are s (held after the
    -- request, whatever it was before) and the seat g beyond f. So the seats from 2 left to 2 right of s, as they
    -- are before the request, decide it: f is an orphan when it stays open (open and not requested), g does not
    -- (absent, taken or requested), and f had an open neighbour before (s or g). The neighbours' states fold into
    -- one bit mask per requested seat, two bits per offset d from s: bit 2(d+2) "stays open", bit 2(d+2)+1 "open"
    -- (d = -2: 1 and 2, d = -1: 4 and 8, d = 1: 64 and 128, d = 2: 256 and 512; an absent seat sets neither).
    -- internal.orphan_refusal names the orphans (sql/45_box_office.sql). The neighbours are read, not locked
    -- (FOR UPDATE OF ss locks the requested rows only): the holds of the screening wait for its advisory lock
    -- above, and nothing else closes an open seat but a DBA's change (a blocked seat), which the rule never binds.
    SELECT count(*)::int,
           count(*) FILTER (WHERE l.live_own)::int,
           bool_or(l.kind = 'companion'),
           min(coalesce(l.held_at, now())) FILTER (WHERE l.live_own),
           bool_or(l.status IN ('booked', 'blocked')
                   OR (l.status = 'held' AND l.user_id <> p_user AND l.hold_expires_at > now())),
           -- Left: f = s - 1 stays open (4), g = s - 2 does not (1), and s or g was open (2).
           -- Right: f = s + 1 stays open (64), g = s + 2 does not (256), and s or g was open (512).
           -- With the rule off the mask is null, and so is the flag.
           bool_or((nb.mask & 4 <> 0 AND nb.mask & 1 = 0 AND (l.open OR nb.mask & 2 <> 0))
                   OR (nb.mask & 64 <> 0 AND nb.mask & 256 = 0 AND (l.open OR nb.mask & 512 <> 0))),
           -- The limits: the user's other seats of this screening, and the user's other live holds anywhere.
           (SELECT count(*)
              FROM seat_states AS ss
             WHERE ss.screening_id = p_screening AND ss.user_id = p_user
               AND (ss.status = 'booked' OR (ss.status = 'held' AND ss.hold_expires_at > now()))
               AND ss.seat_id <> ALL (v_seats)),
           (SELECT count(*)
              FROM seat_states AS ss
             WHERE ss.user_id = p_user AND ss.status = 'held' AND ss.hold_expires_at > now()
               AND NOT (ss.screening_id = p_screening AND ss.seat_id = ANY (v_seats)))
      INTO v_found, v_renewed, v_companion, v_first_taken, v_taken, v_orphan, v_mine, v_user_holds
      FROM (SELECT ss.seat_id, ss.status, ss.user_id, ss.hold_expires_at, ss.held_at,
                   s.kind, s.hall_id, s.row_label, s.x,
                   ss.status = 'held' AND ss.user_id = p_user AND ss.hold_expires_at > now() AS live_own,
                   ss.status = 'free' OR (ss.status = 'held' AND ss.hold_expires_at <= now()) AS open
              FROM seat_states AS ss
              JOIN seats AS s ON s.id = ss.seat_id
             WHERE ss.screening_id = p_screening AND ss.seat_id = ANY (v_seats)
             ORDER BY ss.seat_id
               FOR UPDATE OF ss) AS l
     CROSS JOIN LATERAL
           (SELECT bit_or((CASE WHEN n.open THEN 2 ELSE 0 END
                           | CASE WHEN n.open AND n.id <> ALL (v_seats) THEN 1 ELSE 0 END) << (2 * (n.x - l.x + 2)))
                       AS mask
              FROM (SELECT n.id, n.x,
                           ns.status = 'free' OR (ns.status = 'held' AND ns.hold_expires_at <= now()) AS open
                      FROM seats AS n
                      JOIN seat_states AS ns ON ns.screening_id = p_screening AND ns.seat_id = n.id
                     WHERE v_orphan_rule  -- off: a one-time filter, nothing is read
                       AND n.hall_id = l.hall_id AND n.row_label = l.row_label
                       AND n.x BETWEEN l.x - 2 AND l.x + 2 AND n.x <> l.x) AS n) AS nb;
    IF v_found < v_n THEN
        SELECT array_agg(u.id ORDER BY u.id) INTO v_missing
          FROM unnest(v_seats) AS u(id)
         WHERE NOT EXISTS (SELECT FROM seats AS s WHERE s.id = u.id AND s.hall_id = v_hall);
        IF v_missing IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'MQ404', MESSAGE = 'Seat not found in this screening''s hall.',
                                  DETAIL = internal.ids_json(v_missing);
        END IF;
        -- Seats of the hall whose state row a DBA deleted read as free: give them their row back (a free row is
        -- no change, sql/20_notify.sql) and read again.
        INSERT INTO seat_states (screening_id, seat_id)
        SELECT p_screening, u.id FROM unnest(v_seats) AS u(id)
        ON CONFLICT DO NOTHING;
        RETURN QUERY SELECT h.expires_at, h.version FROM api.hold_seats(p_user, p_screening, v_seats) AS h;
        RETURN;
    END IF;

    IF v_starts_at <= now() THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ410', MESSAGE = 'This screening has already started.';
    END IF;

    -- After this call the user holds every requested seat: the limits count the user's other seats plus them.
    IF v_mine + v_n > v_seat_limit THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ411',
            MESSAGE = format('You can hold or book at most %s seats for one screening.', v_seat_limit);
    END IF;
    IF v_user_holds + v_n > v_user_limit THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ411',
            MESSAGE = format('You can hold at most %s seats at a time over all screenings.', v_user_limit);
    END IF;

    IF v_taken THEN
        -- The rows are locked: read again, they are as the statement above saw them.
        SELECT array_agg(ss.seat_id ORDER BY ss.seat_id) INTO v_unavailable
          FROM seat_states AS ss
         WHERE ss.screening_id = p_screening AND ss.seat_id = ANY (v_seats)
           AND (ss.status IN ('booked', 'blocked')
                OR (ss.status = 'held' AND ss.user_id <> p_user AND ss.hold_expires_at > now()));
        RAISE EXCEPTION USING ERRCODE = 'MQ409', MESSAGE = 'Some of these seats are no longer available.',
                              DETAIL = internal.ids_json(v_unavailable);
    END IF;

    -- SEAT_RULE (sql/45_box_office.sql); when both rules refuse, companion is the one reported.
    IF v_companion THEN
        PERFORM internal.companion_check(p_user, p_screening, v_seats, false);
    END IF;
    IF v_orphan THEN
        PERFORM internal.orphan_refusal(p_screening, v_seats, v_n - v_renewed);
    END IF;

    -- The seats whose (status, user) changes and which subscribers are told of: all but the user's live holds,
    -- which are only renewed (a lapsed hold taken again is a change, sql/20_notify.sql).
    IF v_renewed = 0 THEN
        v_changed := v_seats;
    ELSIF v_renewed < v_n THEN
        SELECT array_agg(ss.seat_id ORDER BY ss.seat_id) INTO v_changed
          FROM seat_states AS ss
         WHERE ss.screening_id = p_screening AND ss.seat_id = ANY (v_seats)
           AND NOT (ss.status = 'held' AND ss.user_id = p_user AND ss.hold_expires_at > now());
    END IF;

    -- A seat the user holds live is renewed and keeps the moment it was taken; any other becomes a new hold.
    -- Either way its expiry is now + TTL, capped at that moment + max_hold_seconds.
    UPDATE seat_states AS ss
       SET status = 'held', user_id = p_user, booking_id = NULL, expired_holder = NULL,
           held_at = CASE
                         WHEN ss.status = 'held' AND ss.user_id = p_user AND ss.hold_expires_at > now()
                             THEN coalesce(ss.held_at, now())
                         ELSE now()
                     END,
           hold_expires_at = least(now() + make_interval(secs => v_ttl),
                                   CASE
                                       WHEN ss.status = 'held' AND ss.user_id = p_user AND ss.hold_expires_at > now()
                                           THEN coalesce(ss.held_at, now())
                                       ELSE now()
                                   END + make_interval(secs => v_max_hold))
     WHERE ss.screening_id = p_screening AND ss.seat_id = ANY (v_seats);

    -- The answer's expiry is the earliest of the seats' (the oldest renewed hold reaches its cap first).
    expires_at := least(now() + make_interval(secs => v_ttl),
                        coalesce(v_first_taken, now()) + make_interval(secs => v_max_hold));
    IF v_changed IS NULL THEN
        -- Renewals only: no change, no bump.
        SELECT sv.version INTO version FROM screening_versions AS sv WHERE sv.screening_id = p_screening;
    ELSE
        -- This function publishes its change (sql/20_notify.sql, "Who publishes"): the version bump's row lock
        -- orders it with the screening's other changes until commit.
        UPDATE screening_versions AS sv SET version = sv.version + 1 WHERE sv.screening_id = p_screening
        RETURNING sv.version INTO version;
        v_entries := internal.seat_entries(v_changed, 'held', p_user);
        PERFORM internal.send_notification('hall_' || v_hall, internal.seat_payload(p_screening, version, v_entries));
    END IF;
    RETURN NEXT;
END;
$$;

COMMENT ON FUNCTION api.hold_seats(bigint, bigint, bigint[]) IS
    'hold_seats, all or nothing: holds free (or lapsed) seats and renews the user''s own holds until now + '
    'hold_ttl_seconds, never past the moment the user took the seat + max_hold_seconds. NOT_FOUND, SCREENING_CLOSED, '
    'HOLD_LIMIT (more than seat_limit seats held or booked by the user on the screening, or more than '
    'user_hold_limit seats held over all screenings, afterwards), SEAT_UNAVAILABLE (DETAIL: the seats held by '
    'others, booked or blocked), SEAT_RULE (companion, or orphan with the rule on: internal.companion_check, '
    'internal.orphan_refusal). Returns the earliest new expiry and the screening''s version after the call.';

CREATE OR REPLACE FUNCTION api.release_seats(p_user bigint, p_screening bigint, p_seats bigint[])
RETURNS TABLE (seat_ids bigint[], version bigint)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET marquee.publisher = 'api'
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_entries     text;  -- the notification's seat entries (internal.seat_entries)
    v_seats     bigint[] := p_seats;
    v_n         int := cardinality(p_seats);
    v_user_ok   boolean;
    v_hall      bigint;
    v_starts_at timestamptz;
    v_known     bigint;
    v_missing   bigint[];
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);

    IF p_screening IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'screening_id is required.';
    END IF;
    IF v_n IS DISTINCT FROM 1 OR p_seats[1] IS NULL THEN
        -- Anything but one seat id (the common request) is checked and sorted by internal.seat_list
        -- (BAD_REQUEST when empty or with a null); one id is already a valid, sorted list.
        v_seats := internal.seat_list(p_seats);
        v_n := cardinality(v_seats);
    END IF;

    SELECT EXISTS (SELECT FROM users AS u WHERE u.id = p_user), sc.hall_id, sc.starts_at,
           -- Found by id (the primary key), then checked for the hall: with the hall in the scan's condition the
           -- kept plan read the hall's seats by hall_id and filtered them by id (3 % of a hold and release).
           (SELECT count(*) FILTER (WHERE s.hall_id = sc.hall_id) FROM seats AS s WHERE s.id = ANY (v_seats))
      INTO v_user_ok, v_hall, v_starts_at, v_known
      FROM (SELECT) AS one
      LEFT JOIN screenings AS sc ON sc.id = p_screening;
    IF NOT v_user_ok THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ401', MESSAGE = 'Please log in first.';
    END IF;
    IF v_hall IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ404', MESSAGE = 'Screening not found.';
    END IF;
    IF v_known < v_n THEN
        SELECT array_agg(u.id ORDER BY u.id) INTO v_missing
          FROM unnest(v_seats) AS u(id)
         WHERE NOT EXISTS (SELECT FROM seats AS s WHERE s.id = u.id AND s.hall_id = v_hall);
        RAISE EXCEPTION USING ERRCODE = 'MQ404', MESSAGE = 'Seat not found in this screening''s hall.',
                              DETAIL = internal.ids_json(v_missing);
    END IF;
    IF v_starts_at <= now() THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ410', MESSAGE = 'This screening has already started.';
    END IF;

    -- Every change of a screening through the api first takes the screening's advisory lock (see the header).
    PERFORM pg_advisory_xact_lock(p_screening);
    IF v_n > 1 THEN
        -- One seat needs no ordering; several are locked in seat_id order before the UPDATE takes them.
        PERFORM FROM seat_states AS ss
          WHERE ss.screening_id = p_screening AND ss.seat_id = ANY (v_seats)
            AND ss.status = 'held' AND ss.user_id = p_user
          ORDER BY ss.seat_id
            FOR UPDATE;
    END IF;

    WITH released AS (
        UPDATE seat_states AS ss
           SET status = 'free', user_id = NULL, hold_expires_at = NULL, held_at = NULL
         WHERE ss.screening_id = p_screening AND ss.seat_id = ANY (v_seats)
           AND ss.status = 'held' AND ss.user_id = p_user
        RETURNING ss.seat_id
    )
    SELECT coalesce(array_agg(r.seat_id ORDER BY r.seat_id), '{}') INTO seat_ids FROM released AS r;

    IF cardinality(seat_ids) = 0 THEN
        -- Nothing was released: no change, no bump.
        SELECT sv.version INTO version FROM screening_versions AS sv WHERE sv.screening_id = p_screening;
    ELSE
        -- Published here, not by the trigger (sql/20_notify.sql, "Who publishes").
        UPDATE screening_versions AS sv SET version = sv.version + 1 WHERE sv.screening_id = p_screening
        RETURNING sv.version INTO version;
        v_entries := internal.seat_entries(seat_ids, 'free', NULL);
        PERFORM internal.send_notification('hall_' || v_hall, internal.seat_payload(p_screening, version, v_entries));
    END IF;
    RETURN NEXT;
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
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET marquee.publisher = 'api'
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_entries     text;  -- the notification's seat entries (internal.seat_entries)
    v_seats       bigint[] := p_seats;
    v_n           int := cardinality(p_seats);
    v_user_ok     boolean;
    v_hall        bigint;
    v_starts_at   timestamptz;
    v_currency    text;
    v_found       int;
    v_companion   boolean;
    v_unavailable bigint[];
    v_expired     bigint[];
    v_missing     bigint[];
BEGIN
    IF p_screening IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'screening_id is required.';
    END IF;
    IF v_n IS DISTINCT FROM 1 OR p_seats[1] IS NULL THEN
        -- Anything but one seat id (the common request) is checked and sorted by internal.seat_list
        -- (BAD_REQUEST when empty or with a null); one id is already a valid, sorted list.
        v_seats := internal.seat_list(p_seats);
        v_n := cardinality(v_seats);
    END IF;

    SELECT EXISTS (SELECT FROM users AS u WHERE u.id = p_user), sc.hall_id, sc.starts_at, sc.currency
      INTO v_user_ok, v_hall, v_starts_at, v_currency
      FROM (SELECT) AS one
      LEFT JOIN screenings AS sc ON sc.id = p_screening;
    IF NOT v_user_ok THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ401', MESSAGE = 'Please log in first.';
    END IF;
    IF v_hall IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ404', MESSAGE = 'Screening not found.';
    END IF;

    -- Every change of a screening through the api first takes the screening's advisory lock (see the header).
    PERFORM pg_advisory_xact_lock(p_screening);
    -- Lock the seats in seat_id order and classify them in the same statement, with what the booking needs of
    -- their seats: the total (each seat at its kind's price; a kind without a price row, which a DBA deleted,
    -- costs the screening's price rather than nothing) and whether the companion rule has anything to check.
    SELECT count(*)::int,
           array_agg(l.seat_id ORDER BY l.seat_id) FILTER (WHERE l.verdict = 'unavailable'),
           array_agg(l.seat_id ORDER BY l.seat_id) FILTER (WHERE l.verdict = 'expired'),
           bool_or(l.kind = 'companion'),
           coalesce(sum(l.price), 0)::int
      INTO v_found, v_unavailable, v_expired, v_companion, total
      FROM (SELECT ss.seat_id, s.kind, coalesce(sp.price, sc.price) AS price,
                   CASE
                       WHEN ss.status = 'held' AND ss.user_id = p_user AND ss.hold_expires_at > now() THEN 'ok'
                       WHEN ss.status = 'held' AND ss.user_id = p_user THEN 'expired'
                       WHEN ss.status = 'free' AND ss.expired_holder = p_user THEN 'expired'
                       ELSE 'unavailable'
                   END AS verdict
              FROM seat_states AS ss
              JOIN seats AS s ON s.id = ss.seat_id
              JOIN screenings AS sc ON sc.id = ss.screening_id
              LEFT JOIN screening_prices AS sp ON sp.screening_id = ss.screening_id AND sp.kind = s.kind
             WHERE ss.screening_id = p_screening AND ss.seat_id = ANY (v_seats)
             ORDER BY ss.seat_id
               FOR UPDATE OF ss) AS l;
    IF v_found < v_n THEN
        SELECT array_agg(u.id ORDER BY u.id) INTO v_missing
          FROM unnest(v_seats) AS u(id)
         WHERE NOT EXISTS (SELECT FROM seats AS s WHERE s.id = u.id AND s.hall_id = v_hall);
        IF v_missing IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'MQ404', MESSAGE = 'Seat not found in this screening''s hall.',
                                  DETAIL = internal.ids_json(v_missing);
        END IF;
    END IF;
    IF v_starts_at <= now() THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ410', MESSAGE = 'This screening has already started.';
    END IF;
    IF v_found < v_n THEN
        -- A seat of the hall with no state row reads as free: nobody holds it for this user.
        SELECT array_agg(u.id ORDER BY u.id) INTO v_missing
          FROM unnest(v_seats) AS u(id)
         WHERE NOT EXISTS (SELECT FROM seat_states AS ss WHERE ss.screening_id = p_screening AND ss.seat_id = u.id);
        v_unavailable := ARRAY(SELECT DISTINCT x FROM unnest(v_unavailable || v_missing) AS x ORDER BY x);
    END IF;
    IF v_unavailable IS NOT NULL AND cardinality(v_unavailable) > 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ409', MESSAGE = 'Some of these seats are not held by you.',
                              DETAIL = internal.ids_json(v_unavailable);
    END IF;
    IF v_expired IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ412', MESSAGE = 'Your hold on some of these seats has expired.',
                              DETAIL = internal.ids_json(v_expired);
    END IF;
    IF v_companion THEN
        PERFORM internal.companion_check(p_user, p_screening, v_seats, true);  -- SEAT_RULE "companion"
    END IF;

    INSERT INTO bookings AS b (user_id, screening_id, total, currency, status)
    VALUES (p_user, p_screening, total, v_currency, 'confirmed')
    RETURNING b.id, b.created_at INTO booking_id, created_at;

    UPDATE seat_states AS ss
       SET status = 'booked', booking_id = book_seats.booking_id, hold_expires_at = NULL, held_at = NULL
     WHERE ss.screening_id = p_screening AND ss.seat_id = ANY (v_seats);

    INSERT INTO booking_seats (booking_id, screening_id, seat_id, active)
    SELECT book_seats.booking_id, p_screening, u.id, true FROM unnest(v_seats) AS u(id);

    -- Published here, not by the trigger (sql/20_notify.sql, "Who publishes"): every seat was the user's live hold.
    UPDATE screening_versions AS sv SET version = sv.version + 1 WHERE sv.screening_id = p_screening
    RETURNING sv.version INTO version;
    v_entries := internal.seat_entries(v_seats, 'booked', p_user);
    PERFORM internal.send_notification('hall_' || v_hall, internal.seat_payload(p_screening, version, v_entries));

    screening_id := p_screening;
    seat_ids := v_seats;
    currency := v_currency;
    status := 'confirmed';
    RETURN NEXT;
END;
$$;

COMMENT ON FUNCTION api.book_seats(bigint, bigint, bigint[]) IS
    'book_seats, all or nothing: turns the user''s live holds into a confirmed booking (total = the sum of the '
    'seats'' prices by kind). NOT_FOUND, SCREENING_CLOSED, SEAT_UNAVAILABLE (held by someone else, booked, '
    'blocked, or free and not a lapsed hold of this user), HOLD_EXPIRED (the user''s hold lapsed and nobody took '
    'the seat since), SEAT_RULE "companion" (a companion seat without a wheelchair space booked with it or before). '
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
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET marquee.publisher = 'api'
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_entries     text;  -- the notification's seat entries (internal.seat_entries)
    v_booking   record;
    v_screening bigint;
    v_freed     bigint[];
    v_hall      bigint;
    v_version   bigint;
    v_starts_at timestamptz;
BEGIN
    IF p_booking IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'booking_id is required.';
    END IF;
    PERFORM internal.require_user(p_user);

    -- The screening's advisory lock first (see the header), so the booking's screening is read without a lock;
    -- a booking never moves to another screening. Then the booking row, then its seats: book_seats never locks an
    -- existing booking, so the two orders cannot form a cycle.
    SELECT b.screening_id INTO v_screening FROM bookings AS b WHERE b.id = p_booking AND b.user_id = p_user;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ404', MESSAGE = 'Booking not found.';
    END IF;
    PERFORM pg_advisory_xact_lock(v_screening);
    SELECT b.id, b.screening_id, b.status
      INTO v_booking
      FROM bookings AS b
     WHERE b.id = p_booking
       FOR UPDATE;

    -- Cancelling a cancelled booking answers it again, unchanged (even after the start: nothing is changed).
    IF v_booking.status = 'confirmed' THEN
        SELECT sc.starts_at, sc.hall_id INTO v_starts_at, v_hall
          FROM screenings AS sc
         WHERE sc.id = v_booking.screening_id;
        -- The cancellation cut-off: closed from starts_at minus cancel_cutoff_minutes on.
        IF v_starts_at - make_interval(mins => internal.setting('cancel_cutoff_minutes')) <= now() THEN
            RAISE EXCEPTION USING ERRCODE = 'MQ410', MESSAGE = 'Too late to cancel: the screening starts soon or has started.';
        END IF;

        PERFORM 1
           FROM seat_states AS ss
          WHERE ss.screening_id = v_booking.screening_id AND ss.booking_id = v_booking.id
          ORDER BY ss.seat_id
            FOR UPDATE;

        WITH freed AS (
            UPDATE seat_states AS ss
               SET status = 'free', user_id = NULL, booking_id = NULL
             WHERE ss.screening_id = v_booking.screening_id AND ss.booking_id = v_booking.id
            RETURNING ss.seat_id
        )
        SELECT array_agg(f.seat_id ORDER BY f.seat_id) INTO v_freed FROM freed AS f;
        IF v_freed IS NOT NULL THEN
            -- Published here, not by the trigger (sql/20_notify.sql, "Who publishes").
            UPDATE screening_versions AS sv SET version = sv.version + 1 WHERE sv.screening_id = v_booking.screening_id
            RETURNING sv.version INTO v_version;
            v_entries := internal.seat_entries(v_freed, 'free', NULL);
            PERFORM internal.send_notification('hall_' || v_hall,
                                               internal.seat_payload(v_booking.screening_id, v_version, v_entries));
        END IF;

        UPDATE booking_seats AS bs SET active = false WHERE bs.booking_id = v_booking.id;
        UPDATE bookings AS b SET status = 'cancelled', cancelled_at = now() WHERE b.id = v_booking.id;
    END IF;

    RETURN QUERY
    SELECT b.id, b.screening_id,
           ARRAY(SELECT bs.seat_id FROM booking_seats AS bs WHERE bs.booking_id = b.id ORDER BY bs.seat_id),
           b.total, b.currency, b.status, b.created_at, sv.version
      FROM bookings AS b
      JOIN screening_versions AS sv ON sv.screening_id = b.screening_id
     WHERE b.id = v_booking.id;
END;
$$;

COMMENT ON FUNCTION api.cancel_booking(bigint, bigint) IS
    'cancel_booking: the user''s own booking only (another''s is NOT_FOUND); SCREENING_CLOSED from the screening''s '
    'start minus cancel_cutoff_minutes on; frees its seats and marks it cancelled. A cancelled booking is returned '
    'unchanged, without error.';

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
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
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
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_count int;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);

    -- SKIP LOCKED: replicas sweeping at the same moment take disjoint rows instead of queueing, and a seat a
    -- request is working on right now is left for the next sweep. Likewise a screening whose advisory lock an api
    -- change holds (see the header) is left alone: the sweep never waits for one, so it cannot close a cycle with
    -- a batch of changes (sql/47_seat_batch.sql) that holds the screening's version row and wants a lapsed seat.
    -- The status test is repeated in the UPDATE so the row is re-checked against its newest version.
    WITH lapsed AS (
        SELECT ss.screening_id, ss.seat_id
          FROM seat_states AS ss
         WHERE ss.status = 'held' AND ss.hold_expires_at <= now()
           AND pg_try_advisory_xact_lock(ss.screening_id)
         ORDER BY ss.hold_expires_at
         LIMIT 10000
           FOR UPDATE SKIP LOCKED
    )
    UPDATE seat_states AS ss
       SET status = 'free', expired_holder = ss.user_id, user_id = NULL, hold_expires_at = NULL, held_at = NULL
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
