-- Helpers for applying sql/ idempotently.
--
-- sql/ runs in one transaction on every `marquee migrate` and every server
-- start, while other replicas may be serving traffic. CREATE OR REPLACE
-- FUNCTION takes no table lock, but DROP/CREATE TRIGGER takes a
-- SHARE ROW EXCLUSIVE lock on the table, which would stall seat changes and
-- could deadlock with them. internal.ensure_trigger therefore touches a
-- trigger only when its definition changed.

CREATE OR REPLACE FUNCTION internal.ensure_trigger(
    p_table      regclass,
    p_name       name,
    p_definition text,
    p_comment    text
) RETURNS boolean
LANGUAGE plpgsql
AS $$
-- It runs DDL, so VOLATILE is right (plpgsql_check cannot see into EXECUTE):
-- @plpgsql_check_options: performance_warnings = off
DECLARE
    -- The comment carries a fingerprint of the definition it was created from.
    v_tag     text := '[ddl ' || md5(p_definition) || ']';
    v_current text;
    v_exists  boolean;
BEGIN
    SELECT true, obj_description(t.oid, 'pg_trigger')
      INTO v_exists, v_current
      FROM pg_trigger AS t
     WHERE t.tgrelid = p_table
       AND t.tgname = p_name
       AND NOT t.tgisinternal;

    IF v_current IS NOT NULL AND right(v_current, length(v_tag)) = v_tag THEN
        IF v_current <> p_comment || ' ' || v_tag THEN
            -- Only the comment changed: COMMENT takes a lock that does not conflict with row changes.
            EXECUTE format('COMMENT ON TRIGGER %I ON %s IS %L', p_name, p_table, p_comment || ' ' || v_tag);
        END IF;
        RETURN false;  -- already as defined: no DDL lock taken
    END IF;

    IF v_exists THEN
        EXECUTE format('DROP TRIGGER %I ON %s', p_name, p_table);
    END IF;
    EXECUTE p_definition;
    EXECUTE format('COMMENT ON TRIGGER %I ON %s IS %L', p_name, p_table, p_comment || ' ' || v_tag);
    RETURN true;
END;
$$;

COMMENT ON FUNCTION internal.ensure_trigger(regclass, name, text, text) IS
    'Creates or replaces a trigger only when its CREATE TRIGGER text changed (fingerprint kept in the trigger''s '
    'comment), so re-applying sql/ on every start takes no table lock on busy tables. Returns true when it (re)created.';
