-- Versions and notifications: the heart of the real-time fan-out.
--
-- Every statement that changes seat_states, whoever runs it (api, sweep,
-- admin function, a DBA's plain UPDATE), is seen by three statement-level
-- AFTER triggers with transition tables. A seat "changed" when its
-- (status, user_id) differs between before and after (a missing row counts as
-- ('free', null)), or when a lapsed hold is taken again (see below). For each
-- screening with at least one changed seat the statement
--   * bumps screenings.version by exactly 1, and
--   * sends exactly one pg_notify on channel 'hall_<hall_id>' with payload
--     {"s":<screening_id>,"v":<version>,"c":[[<seat_id>,"<status>",<user_id|null>],...]}
--     (seats in seat_id order; status and user_id are the new ones), or
--     {"s":<screening_id>,"v":<version>,"r":1} when that would exceed 7,900
--     bytes (resync: fetch api.hall_snapshot).
--
-- Ordering: the version bump is an UPDATE of the screening row, so two
-- transactions changing one screening serialise on that row lock; the second
-- gets the next version and commits (and notifies) after the first. Hence
-- versions reach listeners in commit order, gap-free.
--
-- Lapsed holds: a held row whose hold_expires_at has passed reads as free
-- everywhere (api.hall_snapshot included) until the sweep rewrites it. If its
-- holder takes it again before the sweep, (status, user_id) does not change,
-- but a subscriber who loaded the hall meanwhile saw it free; so re-holding a
-- lapsed hold also counts as a change. Renewing a live hold (only
-- hold_expires_at moves) is not a change.

CREATE OR REPLACE FUNCTION internal.seat_change_payload(
    p_screening bigint,
    p_version   bigint,
    p_seat_ids  bigint[],
    p_statuses  text[],
    p_user_ids  bigint[]
) RETURNS text
LANGUAGE sql
IMMUTABLE
AS $$
    WITH full_payload AS (
        SELECT '{"s":' || p_screening || ',"v":' || p_version || ',"c":['
               || coalesce(string_agg('[' || c.seat_id || ',' || to_json(c.status)::text || ','
                                      || coalesce(c.user_id::text, 'null') || ']',
                                      ',' ORDER BY c.seat_id),
                           '')
               || ']}' AS payload
          FROM unnest(p_seat_ids, p_statuses, p_user_ids) AS c(seat_id, status, user_id)
    )
    SELECT CASE
               WHEN octet_length(f.payload) <= 7900 THEN f.payload
               ELSE '{"s":' || p_screening || ',"v":' || p_version || ',"r":1}'
           END
      FROM full_payload AS f
$$;

COMMENT ON FUNCTION internal.seat_change_payload(bigint, bigint, bigint[], text[], bigint[]) IS
    'Builds the compact JSON notification payload for one screening''s change set, or the resync notice when it '
    'would exceed 7,900 bytes (pg_notify refuses payloads of 8,000 bytes or more). Pure, so tests can call it.';

CREATE OR REPLACE FUNCTION internal.publish_seat_changes(
    p_screening bigint,
    p_seat_ids  bigint[],
    p_statuses  text[],
    p_user_ids  bigint[]
) RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    v_version bigint;
    v_hall    bigint;
    v_channel text;
    v_payload text;
BEGIN
    UPDATE screenings AS sc
       SET version = sc.version + 1
     WHERE sc.id = p_screening
    RETURNING sc.version, sc.hall_id INTO v_version, v_hall;
    IF NOT FOUND THEN
        -- The screening was deleted by this very statement (ON DELETE CASCADE): nobody to tell.
        RETURN NULL;
    END IF;

    v_channel := 'hall_' || v_hall;
    v_payload := internal.seat_change_payload(p_screening, v_version, p_seat_ids, p_statuses, p_user_ids);
    PERFORM pg_notify(v_channel, v_payload);
    -- Notifications are only delivered at commit, which a test inside a rolled-back transaction never
    -- reaches; the last one sent is kept in a transaction-local setting so tests can read it.
    PERFORM set_config('marquee.last_notify', v_channel || ' ' || v_payload, true);
    RETURN v_version;
END;
$$;

COMMENT ON FUNCTION internal.publish_seat_changes(bigint, bigint[], text[], bigint[]) IS
    'Bumps one screening''s version by 1 and sends its one notification for the current statement; the row lock '
    'taken by the bump orders concurrent change sets of a screening by commit. Also records the last notification '
    'in setting marquee.last_notify (transaction-local) for tests.';

CREATE OR REPLACE FUNCTION internal.seat_states_notify()
RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    r record;
BEGIN
    -- Screenings are published in id order so that statements touching several screenings (the sweep, a DBA's
    -- UPDATE) take the screening row locks in one global order and cannot deadlock with each other.
    IF TG_OP = 'INSERT' THEN
        FOR r IN
            SELECT n.screening_id,
                   array_agg(n.seat_id ORDER BY n.seat_id) AS seat_ids,
                   array_agg(n.status  ORDER BY n.seat_id) AS statuses,
                   array_agg(n.user_id ORDER BY n.seat_id) AS user_ids
              FROM new_rows AS n
             WHERE n.status <> 'free'  -- a new free row changes nothing anybody sees
             GROUP BY n.screening_id
             ORDER BY n.screening_id
        LOOP
            PERFORM internal.publish_seat_changes(r.screening_id, r.seat_ids, r.statuses, r.user_ids);
        END LOOP;

    ELSIF TG_OP = 'DELETE' THEN
        FOR r IN
            SELECT o.screening_id,
                   array_agg(o.seat_id ORDER BY o.seat_id)    AS seat_ids,
                   array_agg('free'::text ORDER BY o.seat_id) AS statuses,
                   array_agg(NULL::bigint ORDER BY o.seat_id) AS user_ids
              FROM old_rows AS o
             WHERE o.status <> 'free'  -- a deleted row reads as free
             GROUP BY o.screening_id
             ORDER BY o.screening_id
        LOOP
            PERFORM internal.publish_seat_changes(r.screening_id, r.seat_ids, r.statuses, r.user_ids);
        END LOOP;

    ELSE  -- UPDATE
        FOR r IN
            WITH changed AS (
                SELECT coalesce(n.screening_id, o.screening_id) AS screening_id,
                       coalesce(n.seat_id, o.seat_id)           AS seat_id,
                       coalesce(n.status, 'free')               AS status,
                       n.user_id
                  FROM old_rows AS o
                  FULL JOIN new_rows AS n
                    ON n.screening_id = o.screening_id AND n.seat_id = o.seat_id
                 WHERE (coalesce(o.status, 'free'), o.user_id) IS DISTINCT FROM (coalesce(n.status, 'free'), n.user_id)
                    OR (o.status = 'held' AND o.hold_expires_at <= now()
                        AND n.status = 'held' AND n.hold_expires_at > now())
            )
            SELECT c.screening_id,
                   array_agg(c.seat_id ORDER BY c.seat_id) AS seat_ids,
                   array_agg(c.status  ORDER BY c.seat_id) AS statuses,
                   array_agg(c.user_id ORDER BY c.seat_id) AS user_ids
              FROM changed AS c
             GROUP BY c.screening_id
             ORDER BY c.screening_id
        LOOP
            PERFORM internal.publish_seat_changes(r.screening_id, r.seat_ids, r.statuses, r.user_ids);
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
        FOR EACH STATEMENT EXECUTE FUNCTION internal.seat_states_notify()
    $ddl$,
    'Inserted non-free seats are a change: bump the version and notify hall_<hall_id>.');

SELECT internal.ensure_trigger(
    'seat_states', 'seat_states_notify_update',
    $ddl$
    CREATE TRIGGER seat_states_notify_update
        AFTER UPDATE ON seat_states
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION internal.seat_states_notify()
    $ddl$,
    'Seats whose (status, user_id) changed: bump the version and notify hall_<hall_id>, once per screening per statement.');

SELECT internal.ensure_trigger(
    'seat_states', 'seat_states_notify_delete',
    $ddl$
    CREATE TRIGGER seat_states_notify_delete
        AFTER DELETE ON seat_states
        REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION internal.seat_states_notify()
    $ddl$,
    'Deleted non-free seats read as free from now on: bump the version and notify hall_<hall_id>.');

CREATE OR REPLACE FUNCTION internal.seat_states_clear_expired_holder()
RETURNS trigger
LANGUAGE plpgsql
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
