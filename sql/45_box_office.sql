-- The box office's seat rules (PROTOCOL.md "Box office (version 1.1)"): prices per seat kind, no orphan seats,
-- companion seats, best available, and the DBA functions that set them up.
--
-- The rules are internal functions that api.hold_seats / api.book_seats (sql/40_seats.sql) call at their place
-- in the error order, after SEAT_UNAVAILABLE; api.hold_best_available is here in full.
--
-- SEAT_RULE is raised as SQLSTATE MQ422 with DETAIL a JSON object {"rule":"orphan"|"companion","seat_ids":[...]}
-- (ids as strings, ascending), so the server maps it by code and reads the details as JSON, never message text.
--
-- Definitions (the contract's words):
--   * neighbours: same row_label, x differing by exactly 1 (a gap in x is an aisle);
--   * open: the seat reads free (free, or held with a lapsed hold);
--   * run: a maximal set of open seats of one row connected through neighbours.
--
-- Concurrency: every hold of a screening (api.hold_seats, api.hold_best_available) first takes
-- pg_advisory_xact_lock(<screening id>), so holds of one screening are decided one after the other, each on the
-- state the previous one committed (READ COMMITTED takes a new snapshot per statement, after the lock was
-- granted). That is what the orphan rule needs: whether a hold leaves a seat alone depends on seats it does not
-- touch, so row locks on the requested seats alone would let two holds each see the other's seats still free and
-- together isolate the seat between them. Why this lock and not another:
--   * a row lock on the screening would queue behind the version bump that every seat change of the screening
--     (books, releases, the sweep) holds until commit, and those need no ordering against holds;
--   * locking the whole row of seats (or the hall) FOR UPDATE takes tens of row locks per hold, each a write to
--     the heap, and still needs a rule for best available, which does not know its row in advance;
--   * SERIALIZABLE would abort and retry instead of waiting, and every other caller would pay for it.
-- One advisory lock is an in-memory lock-table entry: no disk write, released at commit, and it is taken before
-- any row lock, so it cannot form a cycle with the row locks books and releases take. Holds of different
-- screenings never wait for each other. Releases, bookings, the sweep and DBA changes only ever open seats or
-- keep them closed (a release or sweep frees, a booking turns a hold into a booking), so they cannot make a
-- decided hold wrong; releases, bookings and cancellations take the lock all the same, for another reason: a
-- batch of changes in one transaction (sql/47_seat_batch.sql) must never wait for a row lock of a screening
-- whose version row it holds (sql/40_seats.sql, header).

-- Prices -----------------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION internal.screenings_create_prices()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    INSERT INTO screening_prices (screening_id, kind, price)
    SELECT sc.id, k.kind, sc.price
      FROM new_screenings AS sc
     CROSS JOIN (VALUES ('standard'), ('vip'), ('wheelchair'), ('companion')) AS k(kind)
     ORDER BY sc.id, k.kind
    ON CONFLICT (screening_id, kind) DO NOTHING;
    RETURN NULL;
END;
$$;

COMMENT ON FUNCTION internal.screenings_create_prices() IS
    'Statement-level AFTER INSERT trigger on screenings: every kind of seat of a new screening costs its price, '
    'however the screening was inserted (admin.create_screening, seed_demo or a DBA). admin.set_price changes one.';

SELECT internal.ensure_trigger(
    'screenings', 'screenings_create_prices',
    $ddl$
    CREATE TRIGGER screenings_create_prices
        AFTER INSERT ON screenings
        REFERENCING NEW TABLE AS new_screenings
        FOR EACH STATEMENT EXECUTE FUNCTION internal.screenings_create_prices()
    $ddl$,
    'A new screening gets one price per seat kind, each its price.');

CREATE OR REPLACE FUNCTION api.screening_prices(p_screening bigint)
RETURNS jsonb
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT jsonb_object_agg(sp.kind, sp.price ORDER BY sp.kind)
      FROM screening_prices AS sp
     WHERE sp.screening_id = p_screening
$$;

COMMENT ON FUNCTION api.screening_prices(bigint) IS
    'The prices object of a hall snapshot: {"companion":1150,"standard":1150,"vip":1550,"wheelchair":1150}, or '
    'null for an unknown screening.';

-- A booking's total is summed by api.book_seats's own lock-and-classify statement (sql/40_seats.sql), which
-- reads the seats' kinds anyway: a function of its own cost a call and a query per booking.
DROP FUNCTION IF EXISTS internal.seats_total(bigint, bigint[]);

-- Seat rules -------------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION internal.seat_rule_error(p_rule text, p_seats bigint[])
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'MQ422',
        MESSAGE = CASE p_rule
                      WHEN 'companion' THEN 'A companion seat goes with a wheelchair space: hold the wheelchair space too.'
                      ELSE 'This choice would leave a single seat on its own; please choose seats next to it.'
                  END,
        DETAIL = '{"rule":' || to_json(p_rule)::text || ',"seat_ids":' || internal.ids_json(p_seats) || '}';
END;
$$;

COMMENT ON FUNCTION internal.seat_rule_error(text, bigint[]) IS
    'Raises SEAT_RULE (MQ422) with DETAIL {"rule":...,"seat_ids":[...]} (ids as strings, ascending).';

CREATE OR REPLACE FUNCTION internal.companion_check(p_user bigint, p_screening bigint, p_seats bigint[],
                                                    p_booking boolean)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    v_companions bigint[];
BEGIN
    SELECT array_agg(s.id ORDER BY s.id) INTO v_companions
      FROM seats AS s
     WHERE s.id = ANY (p_seats) AND s.kind = 'companion';
    IF v_companions IS NULL THEN
        RETURN;
    END IF;
    -- A hold counts the user's live holds and bookings plus the request; a booking counts only what is booked
    -- afterwards (the request and the user's existing bookings): a held wheelchair space may still lapse.
    IF EXISTS (SELECT 1 FROM seats AS s WHERE s.id = ANY (p_seats) AND s.kind = 'wheelchair')
       OR EXISTS (SELECT 1
                    FROM seat_states AS ss
                    JOIN seats AS s ON s.id = ss.seat_id
                   WHERE ss.screening_id = p_screening
                     AND ss.user_id = p_user
                     AND s.kind = 'wheelchair'
                     AND (ss.status = 'booked'
                          OR (NOT p_booking AND ss.status = 'held' AND ss.hold_expires_at > now()))) THEN
        RETURN;
    END IF;
    PERFORM internal.seat_rule_error('companion', v_companions);
END;
$$;

COMMENT ON FUNCTION internal.companion_check(bigint, bigint, bigint[], boolean) IS
    'SEAT_RULE "companion" (DETAIL: the companion seats among p_seats) unless, after the request, the user holds '
    '(p_booking false) or has booked a wheelchair seat of the screening. For book_seats (p_booking true) only the '
    'seats being booked and the user''s existing bookings count.';

-- The orphans a hold would make are found by api.hold_seats's own lock-and-classify statement (sql/40_seats.sql):
-- a function of their own cost about a third of a hold (a call, a loop over the request's rows and a window
-- query), against the contract's budget of 15 %.
DROP FUNCTION IF EXISTS internal.orphans_made(bigint, bigint[]);

CREATE OR REPLACE FUNCTION internal.seat_together_possible(p_screening bigint, p_n int)
RETURNS boolean
LANGUAGE plpgsql
STABLE
AS $$
DECLARE
    v_result boolean;
BEGIN
    -- Run lengths by gaps and islands: within a row, open seats at consecutive x share x - rank.
    SELECT EXISTS (
        SELECT 1
          FROM (SELECT s.row_label, s.x - row_number() OVER (PARTITION BY s.row_label ORDER BY s.x) AS island
                  FROM seats AS s
                  JOIN seat_states AS ss ON ss.screening_id = p_screening AND ss.seat_id = s.id
                 WHERE s.hall_id = (SELECT sc.hall_id FROM screenings AS sc WHERE sc.id = p_screening)
                   AND (ss.status = 'free' OR (ss.status = 'held' AND ss.hold_expires_at <= now()))) AS o
         GROUP BY o.row_label, o.island
        HAVING count(*) = p_n OR count(*) >= p_n + 2) INTO v_result;
    RETURN v_result;
END;
$$;

COMMENT ON FUNCTION internal.seat_together_possible(bigint, int) IS
    'True when some run of the screening has a length L with L = n or L >= n + 2: n seats could be held together '
    'without leaving one alone. Scans the whole hall, so it runs only once an orphan was found.';

-- Earlier forms of the check, replaced by api.hold_seats's statement and internal.orphan_refusal.
DROP FUNCTION IF EXISTS internal.seat_rule_check(bigint, bigint, bigint[]);
DROP FUNCTION IF EXISTS internal.seat_rule_check(bigint, bigint, bigint[], boolean, boolean);

-- The refusal takes the requested seats now (it used to take the orphans api.hold_seats had listed): same types, a
-- new parameter name, which CREATE OR REPLACE cannot change.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_proc AS p
                WHERE p.oid = to_regprocedure('internal.orphan_refusal(bigint, bigint[], int)')
                  AND p.proargnames[2] = 'p_orphans') THEN
        DROP FUNCTION internal.orphan_refusal(bigint, bigint[], int);
    END IF;
END;
$$;

CREATE OR REPLACE FUNCTION internal.orphan_refusal(p_screening bigint, p_seats bigint[], p_new int)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    v_orphans bigint[];
BEGIN
    -- Only the "no alternative" exception is left to decide, and it needs the whole hall: it runs only here, once
    -- api.hold_seats found that the hold makes an orphan.
    IF NOT internal.seat_together_possible(p_screening, p_new) THEN
        RETURN;
    END IF;
    -- The orphans, by the rule api.hold_seats applies as a bit mask (sql/40_seats.sql), spelled out: a neighbour f
    -- of a requested seat s is an orphan when it stays open (open, not requested), the seat g beyond it does not
    -- (absent, taken or requested), and s or g was open. The requested rows are locked by the caller, and the
    -- screening's holds wait for its advisory lock, so this reads what the caller's statement read.
    WITH requested AS (
        SELECT s.id, s.hall_id, s.row_label, s.x,
               ss.status = 'free' OR (ss.status = 'held' AND ss.hold_expires_at <= now()) AS open
          FROM seats AS s
          JOIN seat_states AS ss ON ss.screening_id = p_screening AND ss.seat_id = s.id
         WHERE s.id = ANY (p_seats)
    ), around AS (
        SELECT n.id, n.hall_id, n.row_label, n.x,
               (ns.status = 'free' OR (ns.status = 'held' AND ns.hold_expires_at <= now())) AS open,
               (ns.status = 'free' OR (ns.status = 'held' AND ns.hold_expires_at <= now()))
                   AND n.id <> ALL (p_seats) AS stays_open
          FROM seats AS n
          JOIN seat_states AS ns ON ns.screening_id = p_screening AND ns.seat_id = n.id
         WHERE (n.hall_id, n.row_label) IN (SELECT r.hall_id, r.row_label FROM requested AS r)
    )
    SELECT array_agg(DISTINCT f.id ORDER BY f.id) INTO v_orphans
      FROM requested AS s
      CROSS JOIN (VALUES (-1), (1)) AS side(d)
      JOIN around AS f ON f.hall_id = s.hall_id AND f.row_label = s.row_label AND f.x = s.x + side.d
      LEFT JOIN around AS g ON g.hall_id = s.hall_id AND g.row_label = s.row_label AND g.x = s.x + 2 * side.d
     WHERE f.stays_open
       AND NOT coalesce(g.stays_open, false)
       AND (s.open OR coalesce(g.open, false));
    PERFORM internal.seat_rule_error('orphan', v_orphans);
END;
$$;

COMMENT ON FUNCTION internal.orphan_refusal(bigint, bigint[], int) IS
    'SEAT_RULE "orphan" listing the orphans that holding p_seats would make (sorted, without repeats), unless no '
    'run of the screening has a length L = n or L >= n + 2, n = p_new (the seats the hold adds). Called by '
    'api.hold_seats once its statement found an orphan.';

-- Best available ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION internal.best_block(p_screening bigint, p_count int, p_kinds text[], p_orphan_rule boolean)
RETURNS bigint[]
LANGUAGE plpgsql
STABLE
-- The search is one query of six steps over the whole hall: planned anew for every request (a custom plan) it
-- cost a third of the request's time (a 300-seat hall: 1.08 ms a call, 0.72 ms with the plan kept).
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_result bigint[];
BEGIN
    -- A candidate is p_count open seats of allowed kinds at consecutive x of one row. It makes an orphan exactly
    -- when it leaves one open seat at either end of its run (the seat beyond it is taken, an aisle or the wall).
    -- Scores are compared multiplied by 2n, so they stay integers and ties are exact:
    --   2n * (|mean x - cx| + 1.5 |y - py|) = |2 * sum x - n * (min x + max x)| + 3n |y - py|.
    -- The hall's seats are found by the hall's id (an index range of seats_hall_row_x_idx), not by joining every
    -- seat to the screening's states: the kept generic plan, blind to how many states a screening has, hashed
    -- the whole seats table for that (2.4 ms a search once the database held 36,000 seats).
    WITH hall_seats AS (
        SELECT s.id, s.row_label, s.x, s.y, s.kind,
               (ss.status = 'free' OR (ss.status = 'held' AND ss.hold_expires_at <= now())) AS open
          FROM seats AS s
          JOIN seat_states AS ss ON ss.screening_id = p_screening AND ss.seat_id = s.id
         WHERE s.hall_id = (SELECT sc.hall_id FROM screenings AS sc WHERE sc.id = p_screening)
    ), bounds AS MATERIALIZED (  -- one row, computed once (inlined, it was re-aggregated per candidate)
        SELECT min(h.x)::bigint AS min_x, max(h.x)::bigint AS max_x, (2 * max(h.y) / 3)::bigint AS py
          FROM hall_seats AS h
    ), open_seats AS (
        SELECT h.*, h.x - row_number() OVER (PARTITION BY h.row_label ORDER BY h.x) AS run
          FROM hall_seats AS h
         WHERE h.open
    ), runs AS (
        SELECT o.*, min(o.x) OVER r AS run_first, max(o.x) OVER r AS run_last
          FROM open_seats AS o
        WINDOW r AS (PARTITION BY o.row_label, o.run)
    ), allowed AS (
        SELECT r.*, r.x - row_number() OVER (PARTITION BY r.row_label, r.run ORDER BY r.x) AS island
          FROM runs AS r
         WHERE r.kind = ANY (p_kinds)
    ), islands AS (
        SELECT a.*, max(a.x) OVER (PARTITION BY a.row_label, a.run, a.island) AS island_last
          FROM allowed AS a
    ), best AS (
        SELECT i.row_label, i.x AS first_x
          FROM islands AS i
         CROSS JOIN bounds AS b
         WHERE i.x + p_count - 1 <= i.island_last
         ORDER BY p_orphan_rule AND (i.x - i.run_first = 1 OR i.run_last - (i.x + p_count - 1) = 1),
                  abs(2 * (p_count::bigint * i.x + p_count::bigint * (p_count - 1) / 2)
                      - p_count * (b.min_x + b.max_x))
                  + 3 * p_count * abs(i.y - b.py),
                  i.y, i.x, i.row_label
         LIMIT 1
    )
    SELECT array_agg(h.id ORDER BY h.id) INTO v_result
      FROM best AS w
      JOIN hall_seats AS h ON h.row_label = w.row_label AND h.x BETWEEN w.first_x AND w.first_x + p_count - 1;
    RETURN v_result;
END;
$$;

COMMENT ON FUNCTION internal.best_block(bigint, int, text[], boolean) IS
    'The best available block of p_count seats (ids ascending), or null when there is none: with p_orphan_rule, '
    'candidates that make no orphan first; then the lowest |mean x - cx| + 1.5 |y - py| (cx the middle of the '
    'hall''s x range, py = floor(2 max y / 3)), the lower y, the lower first x.';

CREATE OR REPLACE FUNCTION api.hold_best_available(p_user bigint, p_screening bigint, p_count int, p_kinds text[])
RETURNS TABLE (seat_ids bigint[], expires_at timestamptz, version bigint)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_kinds     text[];
    v_starts_at timestamptz;
    v_limit     int;
    v_count     bigint;
    v_seats     bigint[];
    v_locked    int;
    v_expires   timestamptz;
    v_user_limit int;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);

    IF p_screening IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'screening_id is required.';
    END IF;
    v_limit := internal.setting('seat_limit');
    IF p_count IS NULL OR p_count < 1 OR p_count > v_limit THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = format('count must be between 1 and %s.', v_limit);
    END IF;
    v_kinds := coalesce(p_kinds, ARRAY['standard', 'vip']);
    IF cardinality(v_kinds) = 0
       OR EXISTS (SELECT 1 FROM unnest(v_kinds) AS k(kind)
                   WHERE k.kind IS NULL OR k.kind NOT IN ('standard', 'vip', 'wheelchair', 'companion')) THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400',
            MESSAGE = 'kinds must be a non-empty list of standard, vip, wheelchair and companion.';
    END IF;
    PERFORM internal.require_user(p_user);
    SELECT f.starts_at INTO v_starts_at FROM internal.find_screening(p_screening, '{}'::bigint[]) AS f;
    IF v_starts_at <= now() THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ410', MESSAGE = 'This screening has already started.';
    END IF;

    -- Holds of one screening are decided one after the other (see the top of this file), and one user's holds
    -- too (user_hold_limit; the same two locks in the same order as api.hold_seats).
    PERFORM pg_advisory_xact_lock(p_screening);
    PERFORM pg_advisory_xact_lock(2, (p_user % 2147483647)::int);

    SELECT count(*) INTO v_count
      FROM seat_states AS ss
     WHERE ss.screening_id = p_screening
       AND ss.user_id = p_user
       AND (ss.status = 'booked' OR (ss.status = 'held' AND ss.hold_expires_at > now()));
    IF v_count + p_count > v_limit THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ411',
            MESSAGE = format('You can hold or book at most %s seats for one screening.', v_limit);
    END IF;
    v_user_limit := internal.setting('user_hold_limit');
    SELECT count(*) INTO v_count
      FROM seat_states AS ss
     WHERE ss.user_id = p_user AND ss.status = 'held' AND ss.hold_expires_at > now();
    IF v_count + p_count > v_user_limit THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ411',
            MESSAGE = format('You can hold at most %s seats at a time over all screenings.', v_user_limit);
    END IF;

    -- Other holds wait for the advisory lock, so the block chosen is still open when its rows are locked; only a
    -- DBA's change (blocking a seat) can take one meanwhile, and then the next candidate is chosen.
    FOR i IN 1..5 LOOP
        v_seats := internal.best_block(p_screening, p_count, v_kinds, internal.setting('orphan_rule') <> 0);
        IF v_seats IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'MQ409', MESSAGE = 'There are not enough seats together any more.',
                                  DETAIL = '[]';
        END IF;
        SELECT count(*)::int INTO v_locked
          FROM (SELECT ss.seat_id
                  FROM seat_states AS ss
                 WHERE ss.screening_id = p_screening AND ss.seat_id = ANY (v_seats)
                   AND (ss.status = 'free' OR (ss.status = 'held' AND ss.hold_expires_at <= now()))
                 ORDER BY ss.seat_id
                   FOR UPDATE) AS l;
        EXIT WHEN v_locked = p_count;
        v_seats := NULL;
    END LOOP;
    IF v_seats IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ409', MESSAGE = 'There are not enough seats together any more.',
                              DETAIL = '[]';
    END IF;

    PERFORM internal.companion_check(p_user, p_screening, v_seats, false);

    -- Every seat of the block is open, so each is a new hold: taken now, capped at now + max_hold_seconds.
    v_expires := now() + make_interval(secs => least(internal.setting('hold_ttl_seconds'),
                                                     internal.setting('max_hold_seconds')));
    UPDATE seat_states AS ss
       SET status = 'held', user_id = p_user, hold_expires_at = v_expires, held_at = now(), booking_id = NULL,
           expired_holder = NULL
     WHERE ss.screening_id = p_screening AND ss.seat_id = ANY (v_seats);

    RETURN QUERY SELECT v_seats, v_expires, sv.version
                   FROM screening_versions AS sv
                  WHERE sv.screening_id = p_screening;
END;
$$;

COMMENT ON FUNCTION api.hold_best_available(bigint, bigint, int, text[]) IS
    'hold_best_available: holds the best block of p_count open seats of the given kinds (null = standard and vip) '
    'in one row (internal.best_block) like hold_seats. BAD_REQUEST (count outside 1..seat_limit, bad kinds), '
    'UNAUTHORIZED, NOT_FOUND, SCREENING_CLOSED, HOLD_LIMIT, SEAT_UNAVAILABLE with DETAIL [] (no candidate), '
    'SEAT_RULE "companion" (the block has a companion seat and the user no wheelchair space). Returns the seats '
    '(ascending), the expiry and the version after the call.';

-- DBA functions ----------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION internal.check_kind(p_kind text)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
AS $$
BEGIN
    IF p_kind IS NULL OR p_kind NOT IN ('standard', 'vip', 'wheelchair', 'companion') THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400',
            MESSAGE = format('Unknown seat kind %L; use standard, vip, wheelchair or companion.', p_kind);
    END IF;
END;
$$;

COMMENT ON FUNCTION internal.check_kind(text) IS 'BAD_REQUEST unless p_kind is one of the four seat kinds.';

CREATE OR REPLACE FUNCTION admin.create_hall_layout(cinema_id bigint, name text, layout text[])
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_id  bigint;
    v_bad text;
BEGIN
    IF create_hall_layout.cinema_id IS NULL OR coalesce(btrim(create_hall_layout.name), '') = '' THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'A hall needs a cinema_id and a name.';
    END IF;
    IF create_hall_layout.layout IS NULL OR cardinality(create_hall_layout.layout) NOT BETWEEN 1 AND 702 THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'layout must have 1 to 702 rows (A to ZZ).';
    END IF;
    SELECT l.line INTO v_bad
      FROM unnest(create_hall_layout.layout) WITH ORDINALITY AS l(line, i)
     WHERE l.line IS NULL OR l.line !~ '^[svwc.]*$' OR length(l.line) > 500
     ORDER BY l.i
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400',
            MESSAGE = format('Layout row %L: use at most 500 of s (standard), v (vip), w (wheelchair), '
                             'c (companion) and . (no seat).', v_bad);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM unnest(create_hall_layout.layout) AS l(line) WHERE l.line ~ '[svwc]') THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'A hall needs at least one seat.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM cinemas AS c WHERE c.id = create_hall_layout.cinema_id) THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ404', MESSAGE = 'Cinema not found.';
    END IF;
    IF EXISTS (SELECT 1 FROM halls AS h
                WHERE h.cinema_id = create_hall_layout.cinema_id AND h.name = btrim(create_hall_layout.name)) THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'This cinema already has a hall of that name.';
    END IF;

    INSERT INTO halls AS h (cinema_id, name)
    VALUES (create_hall_layout.cinema_id, btrim(create_hall_layout.name))
    RETURNING h.id INTO v_id;

    -- Row r (0-based, from the screen) is labelled internal.row_label(r) and has y = r; character c (0-based) is
    -- x = c; seats are numbered 1, 2, ... left to right, gaps skipped.
    INSERT INTO seats (hall_id, row_label, number, x, y, kind)
    SELECT v_id, internal.row_label(l.i::int - 1),
           row_number() OVER (PARTITION BY l.i ORDER BY c.x)::int,
           c.x - 1, l.i - 1,
           CASE c.ch WHEN 's' THEN 'standard' WHEN 'v' THEN 'vip' WHEN 'w' THEN 'wheelchair' ELSE 'companion' END
      FROM unnest(create_hall_layout.layout) WITH ORDINALITY AS l(line, i)
     CROSS JOIN LATERAL unnest(string_to_array(l.line, NULL)) WITH ORDINALITY AS c(ch, x)
     WHERE c.ch <> '.'
     ORDER BY l.i, c.x;
    RETURN v_id;
END;
$$;

COMMENT ON FUNCTION admin.create_hall_layout(bigint, text, text[]) IS
    'Creates a hall from a drawn layout, one string per row from the screen backwards (rows A, B, ...; y = index), '
    'one character per grid column (x = index): s standard, v vip, w wheelchair, c companion, . no seat (aisle or '
    'gap). Seats are numbered 1, 2, ... left to right in each row, gaps skipped. Example: '
    'ARRAY[''wc.ssss.cw'', ''ssssssssss'', ''vvvv..vvvv'']. Returns the hall id.';

CREATE OR REPLACE FUNCTION admin.set_price(screening_id bigint, kind text, price int)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF set_price.screening_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'screening_id is required.';
    END IF;
    PERFORM internal.check_kind(set_price.kind);
    IF set_price.price IS NULL OR set_price.price < 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'price must be zero or more (minor units, e.g. cents).';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM screenings AS sc WHERE sc.id = set_price.screening_id) THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ404', MESSAGE = 'Screening not found.';
    END IF;

    INSERT INTO screening_prices AS sp (screening_id, kind, price)
    VALUES (set_price.screening_id, set_price.kind, set_price.price)
    ON CONFLICT ON CONSTRAINT screening_prices_pkey DO UPDATE SET price = excluded.price;
    -- The wire's price is the standard price.
    IF set_price.kind = 'standard' THEN
        UPDATE screenings AS sc SET price = set_price.price
         WHERE sc.id = set_price.screening_id AND sc.price <> set_price.price;
    END IF;
END;
$$;

COMMENT ON FUNCTION admin.set_price(bigint, text, int) IS
    'Sets the price of one seat kind for a screening (minor units); the standard price is also the screening''s '
    'price. Bookings made before keep their total.';

CREATE OR REPLACE FUNCTION admin.set_seat_kind(hall_id bigint, seat_ids bigint[], kind text)
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_seats   bigint[];
    v_missing bigint[];
    v_taken   bigint[];
    v_count   int;
BEGIN
    IF set_seat_kind.hall_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'hall_id is required.';
    END IF;
    v_seats := internal.seat_list(set_seat_kind.seat_ids);
    PERFORM internal.check_kind(set_seat_kind.kind);
    IF NOT EXISTS (SELECT 1 FROM halls AS h WHERE h.id = set_seat_kind.hall_id) THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ404', MESSAGE = 'Hall not found.';
    END IF;
    SELECT array_agg(u.id ORDER BY u.id) INTO v_missing
      FROM unnest(v_seats) AS u(id)
     WHERE NOT EXISTS (SELECT 1 FROM seats AS s WHERE s.id = u.id AND s.hall_id = set_seat_kind.hall_id);
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ404', MESSAGE = 'Seat not found in this hall.',
                              DETAIL = internal.ids_json(v_missing);
    END IF;

    -- Locking the seats' rows of future screenings (in the order holds lock them) makes a hold that is deciding
    -- right now finish first, and one that comes later read the new kind.
    PERFORM 1
       FROM seat_states AS ss
       JOIN screenings AS sc ON sc.id = ss.screening_id
      WHERE ss.seat_id = ANY (v_seats) AND sc.starts_at > now()
      ORDER BY ss.screening_id, ss.seat_id
        FOR UPDATE OF ss;

    -- A seat someone holds or booked keeps the kind (and price) they chose.
    SELECT array_agg(DISTINCT ss.seat_id ORDER BY ss.seat_id) INTO v_taken
      FROM seat_states AS ss
      JOIN screenings AS sc ON sc.id = ss.screening_id
     WHERE ss.seat_id = ANY (v_seats) AND sc.starts_at > now()
       AND (ss.status = 'booked' OR (ss.status = 'held' AND ss.hold_expires_at > now()));
    IF v_taken IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ409',
            MESSAGE = 'Some of these seats are held or booked in a future screening; change them when they are free.',
            DETAIL = internal.ids_json(v_taken);
    END IF;

    UPDATE seats AS s SET kind = set_seat_kind.kind
     WHERE s.id = ANY (v_seats) AND s.kind <> set_seat_kind.kind;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END;
$$;

COMMENT ON FUNCTION admin.set_seat_kind(bigint, bigint[], text) IS
    'Sets the kind of seats of a hall (standard, vip, wheelchair, companion). Refused (SEAT_UNAVAILABLE, DETAIL the '
    'seats) when any of them is held or booked in a screening that has not started. Returns how many changed.';

CREATE OR REPLACE FUNCTION admin.set_orphan_rule("on" boolean)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
    -- The parameter keeps the contract's name "on" (a reserved word, so quoted); SQL rather than PL/pgSQL because
    -- plpgsql_check rightly flags reserved words as variable names. A null fails the NOT NULL of settings.value.
    INSERT INTO settings AS s (key, value)
    VALUES ('orphan_rule', CASE WHEN set_orphan_rule."on" THEN 1 WHEN NOT set_orphan_rule."on" THEN 0 END)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value
$$;

COMMENT ON FUNCTION admin.set_orphan_rule(boolean) IS
    'Switches the no-orphan-seat rule of hold_seats and the orphan preference of hold_best_available on (true) or '
    'off (false); applies to the next request on every replica.';

CREATE OR REPLACE FUNCTION admin.set_cancel_cutoff(minutes int)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    PERFORM internal.put_setting('cancel_cutoff_minutes', set_cancel_cutoff.minutes, 0, 43200,
                                 'The cancellation cut-off must be 0 to 43200 minutes (30 days).');
END;
$$;

COMMENT ON FUNCTION admin.set_cancel_cutoff(int) IS
    'Sets how many minutes before a screening starts cancel_booking is refused (SCREENING_CLOSED); 0 = until the '
    'start. Applies to the next request on every replica.';
