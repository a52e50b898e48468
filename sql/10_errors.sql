-- Errors and small shared helpers.
--
-- Business errors are raised with custom SQLSTATEs in class MQ; the server
-- maps the SQLSTATE (never the message text) to the wire error code:
--
--   MQ400 BAD_REQUEST        MQ410 SCREENING_CLOSED
--   MQ401 UNAUTHORIZED       MQ411 HOLD_LIMIT        (MESSAGE names the limit)
--   MQ404 NOT_FOUND          MQ412 HOLD_EXPIRED      (DETAIL: JSON array of seat ids as strings)
--   MQ409 SEAT_UNAVAILABLE   (DETAIL: JSON array of seat ids as strings)
--   MQ422 SEAT_RULE          (DETAIL: {"rule":"orphan"|"companion","seat_ids":[...]}; sql/45_box_office.sql)
--
-- USERNAME_TAKEN and RATE_LIMITED are never raised: the auth functions
-- (sql/50_auth.sql) return them as outcome rows, because raising would roll
-- back the failed attempt they have just recorded.
--
-- MESSAGE is plain English fit for an end user: no SQL, no internals.
-- When several errors apply, checks run in the protocol's order, so the first
-- of BAD_REQUEST, UNAUTHORIZED, NOT_FOUND, SCREENING_CLOSED, HOLD_LIMIT,
-- SEAT_UNAVAILABLE, HOLD_EXPIRED wins.

CREATE OR REPLACE FUNCTION internal.ids_json(p_ids bigint[])
RETURNS text
LANGUAGE sql
IMMUTABLE
AS $$
    SELECT '[' || coalesce(string_agg('"' || d.id || '"', ',' ORDER BY d.id), '') || ']'
      FROM (SELECT DISTINCT u.id FROM unnest(p_ids) AS u(id) WHERE u.id IS NOT NULL) AS d
$$;

COMMENT ON FUNCTION internal.ids_json(bigint[]) IS
    'Seat ids as the compact JSON array of strings the wire uses (["12","13"]), sorted and distinct; '
    'the DETAIL of MQ409/MQ412 so the server need not parse anything but JSON.';

CREATE OR REPLACE FUNCTION internal.setting(p_key text)
RETURNS int
LANGUAGE plpgsql
STABLE
AS $$
DECLARE
    v_value int;
BEGIN
    SELECT s.value INTO v_value FROM settings AS s WHERE s.key = p_key;
    IF v_value IS NULL THEN
        -- A missing setting is a deployment bug, not a user error: plain error, answered as INTERNAL.
        RAISE EXCEPTION 'setting % is missing from table settings', p_key;
    END IF;
    RETURN v_value;
END;
$$;

COMMENT ON FUNCTION internal.setting(text) IS
    'Reads a setting on every call (no caching) so admin.set_* apply to the next request on every replica.';

-- hold_settings (migration V17) holds the settings every hold reads as one row, so a hold reads one row instead of
-- aggregating the settings table; this trigger keeps it equal to settings, whoever writes settings.
CREATE OR REPLACE FUNCTION internal.settings_mirror()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    UPDATE hold_settings AS h
       SET seat_limit       = (SELECT s.value FROM settings AS s WHERE s.key = 'seat_limit'),
           hold_ttl_seconds = (SELECT s.value FROM settings AS s WHERE s.key = 'hold_ttl_seconds'),
           user_hold_limit  = (SELECT s.value FROM settings AS s WHERE s.key = 'user_hold_limit'),
           max_hold_seconds = (SELECT s.value FROM settings AS s WHERE s.key = 'max_hold_seconds'),
           orphan_rule      = (SELECT s.value FROM settings AS s WHERE s.key = 'orphan_rule')
     WHERE h.one;
    RETURN NULL;
END;
$$;

COMMENT ON FUNCTION internal.settings_mirror() IS
    'Statement-level trigger on settings: copies the five settings api.hold_seats reads into the one row of '
    'hold_settings (a deleted setting becomes null there, which the hold reports as missing).';

SELECT internal.ensure_trigger(
    'settings', 'settings_mirror',
    $ddl$
    CREATE TRIGGER settings_mirror
        AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON settings
        FOR EACH STATEMENT EXECUTE FUNCTION internal.settings_mirror()
    $ddl$,
    'hold_settings follows every change of settings.');

-- Applying sql/ brings the copy up to date too (the first time, right after migration V17 made the row): a
-- statement trigger fires even when no row matches.
UPDATE settings AS s SET value = s.value WHERE false;

CREATE OR REPLACE FUNCTION internal.put_setting(p_key text, p_value int, p_min int, p_max int, p_message text)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    IF p_value IS NULL OR p_value NOT BETWEEN p_min AND p_max THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = p_message;
    END IF;
    INSERT INTO settings AS s (key, value) VALUES (p_key, p_value)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value;
END;
$$;

COMMENT ON FUNCTION internal.put_setting(text, int, int, int, text) IS
    'What every admin.set_* of one number does: BAD_REQUEST with p_message unless p_min <= p_value <= p_max, then '
    'the setting is written (a new key is added); it applies to the next request on every replica.';

CREATE OR REPLACE FUNCTION internal.seat_list(p_seats bigint[])
RETURNS bigint[]
LANGUAGE plpgsql
IMMUTABLE
AS $$
BEGIN
    IF p_seats IS NULL OR cardinality(p_seats) = 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'Please choose at least one seat.';
    END IF;
    IF array_position(p_seats, NULL) IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'A seat id is missing.';
    END IF;
    RETURN ARRAY(SELECT DISTINCT u.id FROM unnest(p_seats) AS u(id) ORDER BY u.id);
END;
$$;

COMMENT ON FUNCTION internal.seat_list(bigint[]) IS
    'Validates a seat id list (BAD_REQUEST when empty or with nulls) and returns it sorted and without '
    'duplicates: duplicated ids count once, and sorted ids give every caller the same lock order.';

CREATE OR REPLACE FUNCTION internal.require_user(p_user bigint)
RETURNS void
LANGUAGE plpgsql
STABLE
AS $$
BEGIN
    IF p_user IS NULL OR NOT EXISTS (SELECT 1 FROM users AS u WHERE u.id = p_user) THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ401', MESSAGE = 'Please log in first.';
    END IF;
END;
$$;

COMMENT ON FUNCTION internal.require_user(bigint) IS
    'UNAUTHORIZED unless the user exists: a session of a deleted user must not reach the seat tables '
    '(whose foreign keys would otherwise answer with an internal error).';

CREATE OR REPLACE FUNCTION internal.find_screening(
    p_screening bigint,
    p_seats     bigint[],
    OUT hall_id   bigint,
    OUT starts_at timestamptz,
    OUT price     int,
    OUT currency  text
)
LANGUAGE plpgsql
STABLE
AS $$
DECLARE
    v_missing bigint[];
BEGIN
    SELECT sc.hall_id, sc.starts_at, sc.price, sc.currency
      INTO hall_id, starts_at, price, currency
      FROM screenings AS sc
     WHERE sc.id = p_screening;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ404', MESSAGE = 'Screening not found.';
    END IF;

    SELECT array_agg(u.id ORDER BY u.id)
      INTO v_missing
      FROM unnest(p_seats) AS u(id)
     WHERE NOT EXISTS (SELECT 1 FROM seats AS s WHERE s.id = u.id AND s.hall_id = find_screening.hall_id);
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ404', MESSAGE = 'Seat not found in this screening''s hall.',
                              DETAIL = internal.ids_json(v_missing);
    END IF;
END;
$$;

COMMENT ON FUNCTION internal.find_screening(bigint, bigint[]) IS
    'NOT_FOUND unless the screening exists and every seat id is a seat of its hall (DETAIL lists the unknown ids); '
    'returns what callers need to check and price the request.';
