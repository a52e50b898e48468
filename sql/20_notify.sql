-- Versions and notifications: the heart of the real-time fan-out.
--
-- Every statement that changes seat_states, whoever runs it (api, sweep,
-- admin function, a DBA's plain UPDATE), is seen by three statement-level
-- AFTER triggers with transition tables. A seat "changed" when its
-- (status, user_id) differs between before and after (a missing row counts as
-- ('free', null)), or when a lapsed hold is taken again (see below). For each
-- screening with at least one changed seat the statement
--   * bumps screening_versions.version by exactly 1, and
--   * sends exactly one pg_notify on channel 'hall_<hall_id>' with payload
--     {"s":<screening_id>,"v":<version>,"c":[[<seat_id>,"<status>",<user_id|null>],...]}
--     (seats in seat_id order; status and user_id are the new ones), or
--     {"s":<screening_id>,"v":<version>,"r":1} when that would exceed 7,900
--     bytes (resync: fetch api.hall_snapshot).
--
-- Ordering: the version bump is an UPDATE of the screening's version row, so two
-- transactions changing one screening serialise on that row lock; the second
-- gets the next version and commits (and notifies) after the first. Hence
-- versions reach listeners in commit order, gap-free.
--
-- Who publishes: the api functions of sql/40_seats.sql that change seats (hold, release, book, cancel) know
-- which seats they change and to what, so they bump and notify themselves, with the same payload function
-- (internal.seat_payload) and in the same transaction, right after their one UPDATE; they run with
-- marquee.publisher = 'api' (a SET clause of the function), and the triggers below stand aside while it is set
-- (their WHEN clause). Everything else (the sweep, admin functions, hold_best_available, a DBA's plain UPDATE)
-- is published by the triggers. Why: the statement trigger's machinery (transition tables handed to a
-- SECURITY DEFINER PL/pgSQL call, a hash full join and a string_agg per statement) cost about as much as the
-- rest of a one-seat change (docs/benchmarks.md, session 5). The setting only says who sends the notification:
-- a session that sets it itself can silence its own direct changes, which only a role allowed to UPDATE
-- seat_states (a DBA) can make.
--
-- Lapsed holds: a held row whose hold_expires_at has passed reads as free
-- everywhere (api.hall_snapshot included) until the sweep rewrites it. If its
-- holder takes it again before the sweep, (status, user_id) does not change,
-- but a subscriber who loaded the hall meanwhile saw it free; so re-holding a
-- lapsed hold also counts as a change. Renewing a live hold (only
-- hold_expires_at moves) is not a change.

-- Before this file built each payload in a SQL-language function, which PostgreSQL parses and plans again on
-- every call: the largest single cost of a seat change (docs/benchmarks.md). The payload is now aggregated by
-- the trigger's own query and wrapped in PL/pgSQL.
DROP FUNCTION IF EXISTS internal.seat_change_payload(bigint, bigint, bigint[], text[], bigint[]);
DROP FUNCTION IF EXISTS internal.publish_seat_changes(bigint, bigint[], text[], bigint[]);

CREATE OR REPLACE FUNCTION internal.seat_change_entry(p_seat bigint, p_status text, p_user bigint)
RETURNS text
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
AS $$
    -- status needs no JSON escaping: the CHECK on seat_states.status allows four plain words only. A single
    -- immutable expression (hence the explicit ::text casts), so the planner inlines it: it costs no call.
    SELECT '[' || p_seat::text || ',"' || p_status || '",' || coalesce(p_user::text, 'null') || ']'
$$;

COMMENT ON FUNCTION internal.seat_change_entry(bigint, text, bigint) IS
    'One changed seat as it appears in a notification: [seat_id,"status",user_id|null].';

-- The entries of seats that all change to one status (one user, or none): the api functions' form of the list
-- the trigger aggregates row by row. array_to_string joins the ids with the tail of one entry and the head of the
-- next, so the whole list is one expression, inlined like the function below. p_seats: non-empty, sorted.
-- Callers assign it to a variable before passing it to internal.seat_payload: an argument that is itself an
-- expression of more than ten operators would stop the planner from inlining seat_payload (which reads each of
-- its parameters more than once), and a SQL function that is not inlined is planned again on every call.
CREATE OR REPLACE FUNCTION internal.seat_entries(p_seats bigint[], p_status text, p_user bigint)
RETURNS text
LANGUAGE sql
STABLE PARALLEL SAFE  -- not IMMUTABLE: array_to_string is STABLE, and a function claiming more is never inlined
AS $$
    SELECT '[' || array_to_string(p_seats, ',"' || p_status || '",' || coalesce(p_user::text, 'null') || '],[')
           || ',"' || p_status || '",' || coalesce(p_user::text, 'null') || ']'
$$;

COMMENT ON FUNCTION internal.seat_entries(bigint[], text, bigint) IS
    'The notification entries of seats (non-empty, sorted) that all became p_status of p_user: '
    '[id,"status",user|null],... in the order given.';

-- One expression (no call once inlined): the 18 bytes around the entries are counted rather than the payload
-- built twice.
CREATE OR REPLACE FUNCTION internal.seat_payload(p_screening bigint, p_version bigint, p_changes text)
RETURNS text
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE
               WHEN octet_length(p_changes) + octet_length(p_screening::text) + octet_length(p_version::text) + 18
                    > 7900
                   -- pg_notify refuses payloads of 8,000 bytes or more: subscribers fetch api.hall_snapshot instead.
                   THEN '{"s":' || p_screening::text || ',"v":' || p_version::text || ',"r":1}'
               ELSE '{"s":' || p_screening::text || ',"v":' || p_version::text || ',"c":[' || p_changes || ']}'
           END
$$;

COMMENT ON FUNCTION internal.seat_payload(bigint, bigint, text) IS
    'A seat notification''s payload: {"s":screening,"v":version,"c":[entries]}, or the resync notice '
    '{"s","v","r":1} when that would pass 7,900 bytes.';

-- A PL/pgSQL function of its own cost a call per notification (about 2 µs, as much as pg_notify itself); as a
-- one-expression SQL function it is inlined into the trigger's cached plan. tests/sql/fixtures.psql replaces it
-- (in PL/pgSQL) inside its own transaction, which invalidates that plan.
CREATE OR REPLACE FUNCTION internal.send_notification(p_channel text, p_payload text)
RETURNS void
LANGUAGE sql
VOLATILE
AS $$
    -- The one place seat notifications leave: tests/sql replace this function inside their (rolled-back)
    -- transaction to read what would have been sent, since pg_notify delivers only at commit.
    SELECT pg_notify(p_channel, p_payload)
$$;

COMMENT ON FUNCTION internal.send_notification(text, text) IS
    'pg_notify(channel, payload); the seam through which the SQL tests observe notifications.';

CREATE OR REPLACE FUNCTION internal.publish_seat_changes(p_screening bigint, p_changes text)
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    v_version bigint;
    v_hall    bigint;
BEGIN
    UPDATE screening_versions AS sv
       SET version = sv.version + 1
      FROM screenings AS sc
     WHERE sv.screening_id = p_screening AND sc.id = sv.screening_id
    RETURNING sv.version, sc.hall_id INTO v_version, v_hall;
    IF NOT FOUND THEN
        -- The screening was deleted by this very statement (ON DELETE CASCADE): nobody to tell.
        RETURN NULL;
    END IF;

    PERFORM internal.send_notification('hall_' || v_hall, internal.seat_payload(p_screening, v_version, p_changes));
    RETURN v_version;
END;
$$;

COMMENT ON FUNCTION internal.publish_seat_changes(bigint, text) IS
    'Bumps one screening''s version by 1 and sends its one notification for the current statement (p_changes: '
    'the seat entries, comma-separated, in seat_id order), or the resync notice {"s","v","r":1} when the payload '
    'would pass 7,900 bytes. The row lock taken by the bump orders concurrent change sets of a screening by commit.';

CREATE OR REPLACE FUNCTION internal.seat_states_notify()
RETURNS trigger
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    r         record;
    v_version bigint;
    v_hall    bigint;
BEGIN
    -- Screenings are published in id order so that statements touching several screenings (the sweep, a DBA's
    -- UPDATE) take the screening row locks in one global order and cannot deadlock with each other.
    IF TG_OP = 'UPDATE' THEN
        FOR r IN
            WITH changed AS (
                SELECT coalesce(n.screening_id, o.screening_id) AS screening_id,
                       coalesce(n.seat_id, o.seat_id)           AS seat_id,
                       coalesce(n.status, 'free')               AS status,
                       n.user_id
                  FROM old_rows AS o
                  FULL JOIN new_rows AS n  -- full: a DBA may move a row to another screening or seat
                    ON n.screening_id = o.screening_id AND n.seat_id = o.seat_id
                 WHERE (coalesce(o.status, 'free'), o.user_id) IS DISTINCT FROM (coalesce(n.status, 'free'), n.user_id)
                    OR (o.status = 'held' AND o.hold_expires_at <= now()
                        AND n.status = 'held' AND n.hold_expires_at > now())
            )
            SELECT c.screening_id,
                   string_agg(internal.seat_change_entry(c.seat_id, c.status, c.user_id), ',' ORDER BY c.seat_id)
                       AS changes
              FROM changed AS c
             GROUP BY c.screening_id
             ORDER BY c.screening_id
        LOOP
            -- internal.publish_seat_changes, written out: every hold, release and booking comes this way, and the
            -- call of a PL/pgSQL function from here costs about as much as the version bump itself.
            UPDATE screening_versions AS sv
               SET version = sv.version + 1
              FROM screenings AS sc
             WHERE sv.screening_id = r.screening_id AND sc.id = sv.screening_id
            RETURNING sv.version, sc.hall_id INTO v_version, v_hall;
            CONTINUE WHEN NOT FOUND;
            PERFORM internal.send_notification('hall_' || v_hall,
                                               internal.seat_payload(r.screening_id, v_version, r.changes));
        END LOOP;

    ELSIF TG_OP = 'INSERT' THEN
        FOR r IN
            SELECT n.screening_id,
                   string_agg(internal.seat_change_entry(n.seat_id, n.status, n.user_id), ',' ORDER BY n.seat_id)
                       AS changes
              FROM new_rows AS n
             WHERE n.status <> 'free'  -- a new free row changes nothing anybody sees
             GROUP BY n.screening_id
             ORDER BY n.screening_id
        LOOP
            PERFORM internal.publish_seat_changes(r.screening_id, r.changes);
        END LOOP;

    ELSE  -- DELETE
        FOR r IN
            SELECT o.screening_id,
                   string_agg(internal.seat_change_entry(o.seat_id, 'free', NULL), ',' ORDER BY o.seat_id) AS changes
              FROM old_rows AS o
             WHERE o.status <> 'free'  -- a deleted row reads as free
             GROUP BY o.screening_id
             ORDER BY o.screening_id
        LOOP
            PERFORM internal.publish_seat_changes(r.screening_id, r.changes);
        END LOOP;
    END IF;

    RETURN NULL;
END;
$$;

COMMENT ON FUNCTION internal.seat_states_notify() IS
    'Statement-level AFTER trigger on seat_states (INSERT, UPDATE, DELETE): finds seats whose (status, user_id) '
    'changed in the statement and publishes one version bump and one notification per screening, so every path '
    'that changes seats, a DBA''s plain UPDATE included, reaches subscribers the same way.';

SELECT internal.ensure_trigger(
    'seat_states', 'seat_states_notify_insert',
    $ddl$
    CREATE TRIGGER seat_states_notify_insert
        AFTER INSERT ON seat_states
        REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT
        WHEN (current_setting('marquee.publisher', true) IS DISTINCT FROM 'api')
        EXECUTE FUNCTION internal.seat_states_notify()
    $ddl$,
    'Inserted non-free seats are a change: bump the version and notify hall_<hall_id>.');

SELECT internal.ensure_trigger(
    'seat_states', 'seat_states_notify_update',
    $ddl$
    CREATE TRIGGER seat_states_notify_update
        AFTER UPDATE ON seat_states
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT
        WHEN (current_setting('marquee.publisher', true) IS DISTINCT FROM 'api')
        EXECUTE FUNCTION internal.seat_states_notify()
    $ddl$,
    'Seats whose (status, user_id) changed: bump the version and notify hall_<hall_id>, once per screening per statement.');

SELECT internal.ensure_trigger(
    'seat_states', 'seat_states_notify_delete',
    $ddl$
    CREATE TRIGGER seat_states_notify_delete
        AFTER DELETE ON seat_states
        REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT
        WHEN (current_setting('marquee.publisher', true) IS DISTINCT FROM 'api')
        EXECUTE FUNCTION internal.seat_states_notify()
    $ddl$,
    'Deleted non-free seats read as free from now on: bump the version and notify hall_<hall_id>.');

CREATE OR REPLACE FUNCTION internal.seat_states_clear_expired_holder()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    NEW.expired_holder := NULL;
    RETURN NEW;
END;
$$;

COMMENT ON FUNCTION internal.seat_states_clear_expired_holder() IS
    'BEFORE row trigger: forgets expired_holder when a seat stops being free, so a DBA''s plain '
    'UPDATE seat_states SET status = ''blocked'', user_id = NULL, hold_expires_at = NULL works on any free seat '
    '(the check constraint allows expired_holder only on free seats).';

SELECT internal.ensure_trigger(
    'seat_states', 'seat_states_clear_expired_holder',
    $ddl$
    CREATE TRIGGER seat_states_clear_expired_holder
        BEFORE INSERT OR UPDATE ON seat_states
        FOR EACH ROW
        WHEN (NEW.status <> 'free' AND NEW.expired_holder IS NOT NULL)
        EXECUTE FUNCTION internal.seat_states_clear_expired_holder()
    $ddl$,
    'A seat that is taken, booked or blocked no longer remembers whose hold expired into it.');
