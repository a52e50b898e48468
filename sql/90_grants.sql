-- Ownership, SECURITY DEFINER and privileges of the functions (roles: migrations/V7__roles.sql, docs/sql.md "Roles").
--
-- Runs last, in the same transaction as the rest of sql/, so callers never see a function in between.
--
--   * Every function of api, admin and internal is owned by marquee_owner (a superuser applying sql/ creates new
--     ones as itself; they are handed over here).
--   * Every api and admin function, and every trigger function, declares SECURITY DEFINER with
--     search_path = pg_catalog, public, pg_temp in its own text (checked here, not set here: a CREATE OR REPLACE
--     would drop what an ALTER set). It runs with marquee_owner's rights, so marquee_app needs no table
--     privilege, and a DBA's plain UPDATE of seat_states can bump screenings.version and notify. pg_catalog first
--     and pg_temp last, so nobody can shadow a table, function or operator with a temporary one.
--   * Nobody but the owner may execute a function unless granted below: marquee_app exactly the api functions the
--     server calls (src/models/*.rs; tests/it/roles.rs checks the list against the source), marquee_admin all of api
--     and admin. internal is for the owner only.
--
-- It also gives marquee_owner tables that a superuser created in public by a later migration, and lets DBAs read
-- them. Each of these touches only what is not yet as it should be (ALTER TABLE ... OWNER locks the table).

DO $$
DECLARE
    r         record;
    v_missing text;
BEGIN
    FOR r IN
        SELECT p.oid::regprocedure AS fn
          FROM pg_proc AS p
         WHERE p.pronamespace IN ('api'::regnamespace, 'admin'::regnamespace, 'internal'::regnamespace)
           AND p.proowner <> 'marquee_owner'::regrole
         ORDER BY p.oid
    LOOP
        EXECUTE format('ALTER ROUTINE %s OWNER TO marquee_owner', r.fn);
    END LOOP;

    -- SECURITY DEFINER and the search_path are declared in each function's own text (so a DBA's CREATE OR REPLACE
    -- hotfix, copied from sql/, keeps them); a function that lacks them stops the apply here, by name, instead of
    -- answering "permission denied" (or running with the caller's rights) in production.
    SELECT string_agg(p.oid::regprocedure::text, ', ' ORDER BY p.oid::regprocedure::text)
      INTO v_missing
      FROM pg_proc AS p
     WHERE (p.pronamespace IN ('api'::regnamespace, 'admin'::regnamespace)
            OR (p.pronamespace = 'internal'::regnamespace AND p.prorettype = 'trigger'::regtype))
       AND p.prokind = 'f'
       AND (NOT p.prosecdef
            OR NOT coalesce('search_path=pg_catalog, public, pg_temp' = ANY (p.proconfig), false));
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION 'functions without SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp: %', v_missing
            USING HINT = 'Declare both in the function''s CREATE OR REPLACE FUNCTION in sql/.';
    END IF;

    FOR r IN
        SELECT c.oid::regclass AS rel
          FROM pg_class AS c
         WHERE c.relnamespace = 'public'::regnamespace
           AND c.relkind IN ('r', 'p', 'v', 'm')
           AND c.relowner <> 'marquee_owner'::regrole
           AND NOT EXISTS (SELECT FROM pg_depend AS d
                            WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
         ORDER BY c.relname
    LOOP
        EXECUTE format('ALTER TABLE %s OWNER TO marquee_owner', r.rel);
    END LOOP;

    FOR r IN
        SELECT c.oid::regclass AS rel
          FROM pg_class AS c
         WHERE c.relnamespace = 'public'::regnamespace
           AND c.relkind IN ('r', 'p', 'v', 'm')
           AND c.relowner = 'marquee_owner'::regrole
           AND NOT has_table_privilege('marquee_admin', c.oid, 'SELECT')
         ORDER BY c.relname
    LOOP
        EXECUTE format('GRANT SELECT ON %s TO marquee_admin', r.rel);
    END LOOP;
END;
$$;

-- From scratch every time, so a grant removed below is really gone.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA api, admin, internal FROM PUBLIC, marquee_app, marquee_admin;

-- The server (marquee_app): exactly what src/models/*.rs calls.
GRANT EXECUTE ON FUNCTION
    api.get_cinemas(),
    api.get_screenings(bigint, timestamptz, timestamptz),
    api.screening_hall(bigint),
    api.hall_snapshot(bigint),
    api.hold_seats(bigint, bigint, bigint[]),
    api.release_seats(bigint, bigint, bigint[]),
    api.book_seats(bigint, bigint, bigint[]),
    api.cancel_booking(bigint, bigint),
    api.seat_batch(text[], bigint[], bigint[], int[], bigint[]),
    api.get_bookings(bigint),
    api.hold_best_available(bigint, bigint, int, text[]),
    api.screening_prices(bigint),
    api.sweep_expired_holds(),
    api.auth_user(text),
    api.auth_login(text, bigint, int, inet),
    api.auth_register(text, bytea, bigint, int, inet),
    api.registration_retry_after(inet),
    api.session_user(uuid),
    api.revoke_session(uuid),
    api.dead_sessions(uuid[]),
    api.prune_auth()
TO marquee_app;

-- DBAs (marquee_admin): the admin functions, and the api ones for support work (api.cancel_booking on a user's
-- behalf, api.hall_snapshot to look at a hall as clients see it).
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA api, admin TO marquee_admin;
