-- Least-privilege roles (docs/sql.md, "Roles"):
--
--   marquee_owner  owns every schema, table and function of Marquee. Migrations and sql/ run as it, or as a
--                  superuser (this file and sql/90_grants.sql then hand what the superuser created over to it).
--   marquee_app    what the server logs in as: USAGE on schema api and EXECUTE on the api.* functions the server
--                  calls (sql/90_grants.sql), and no privilege on any table. The api functions are SECURITY DEFINER,
--                  owned by marquee_owner, so they do the reading and writing.
--   marquee_admin  for DBAs (GRANT marquee_admin TO alice): admin.* and api.*, SELECT on every table,
--                  UPDATE/DELETE on seat_states (a plain UPDATE still notifies), UPDATE of the layout columns of seats.
--
-- Roles belong to the cluster, not the database, so they are created only when missing (which needs CREATEROLE;
-- where migrations run as a non-superuser owner, a DBA creates the roles beforehand, see docs/sql.md). Function
-- privileges live in sql/90_grants.sql, because sql/ re-creates functions on every apply.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'marquee_owner') THEN
        CREATE ROLE marquee_owner NOLOGIN;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN
        NULL;  -- created meanwhile by a migration of another database in this cluster
    WHEN insufficient_privilege THEN
        RAISE EXCEPTION 'role marquee_owner is missing and % may not create roles', current_user
            USING HINT = 'Create the Marquee roles as a superuser first (docs/sql.md, Roles), or migrate as a superuser.';
END;
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'marquee_app') THEN
        CREATE ROLE marquee_app LOGIN;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN
        NULL;
    WHEN insufficient_privilege THEN
        RAISE EXCEPTION 'role marquee_app is missing and % may not create roles', current_user
            USING HINT = 'Create the Marquee roles as a superuser first (docs/sql.md, Roles), or migrate as a superuser.';
END;
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'marquee_admin') THEN
        CREATE ROLE marquee_admin NOLOGIN;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN
        NULL;
    WHEN insufficient_privilege THEN
        RAISE EXCEPTION 'role marquee_admin is missing and % may not create roles', current_user
            USING HINT = 'Create the Marquee roles as a superuser first (docs/sql.md, Roles), or migrate as a superuser.';
END;
$$;

-- Ownership: the function schemas and every table (identity sequences follow their tables) of schema public, the
-- migration bookkeeping included, so that migrations may later run as marquee_owner itself. Only what is owned by
-- someone else is touched (ALTER TABLE takes an exclusive lock even when the owner does not change).
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT n.nspname
          FROM pg_namespace AS n
         WHERE n.nspname IN ('api', 'admin', 'internal')
           AND n.nspowner <> 'marquee_owner'::regrole
         ORDER BY n.nspname
    LOOP
        EXECUTE format('ALTER SCHEMA %I OWNER TO marquee_owner', r.nspname);
    END LOOP;

    FOR r IN
        SELECT c.oid::regclass AS rel, c.relkind
          FROM pg_class AS c
         WHERE c.relnamespace = 'public'::regnamespace
           AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
           AND c.relowner <> 'marquee_owner'::regrole
           AND NOT EXISTS (SELECT FROM pg_depend AS d  -- objects of extensions, and identity sequences, stay as they are
                            WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('e', 'i', 'a'))
         ORDER BY c.relname
    LOOP
        EXECUTE format('ALTER %s %s OWNER TO marquee_owner',
                       CASE r.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                                      WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,
                       r.rel);
    END LOOP;

    -- So that an owner-run migration may create tables (in PostgreSQL 15 only the database owner may by default).
    IF NOT has_schema_privilege('marquee_owner', 'public', 'CREATE') THEN
        GRANT USAGE, CREATE ON SCHEMA public TO marquee_owner;
    END IF;
END;
$$;

-- Schemas: nobody but the owner uses internal.
REVOKE ALL ON SCHEMA api, admin, internal FROM PUBLIC;
GRANT USAGE ON SCHEMA api TO marquee_app, marquee_admin;
GRANT USAGE ON SCHEMA admin TO marquee_admin;
GRANT USAGE ON SCHEMA public TO marquee_admin;

-- Tables: the server has no direct access at all; DBAs read everything and may change seat states by hand (the
-- notify triggers are SECURITY DEFINER, so the version bump they make needs no privilege on screenings) and edit
-- the layout of seats.
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC, marquee_app;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM PUBLIC, marquee_app;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO marquee_admin;
GRANT UPDATE, DELETE ON seat_states TO marquee_admin;
GRANT UPDATE (row_label, number, x, y, kind) ON seats TO marquee_admin;

-- Objects marquee_owner creates later: functions are not executable by PUBLIC (sql/90_grants.sql grants what each
-- role needs), tables readable by DBAs.
ALTER DEFAULT PRIVILEGES FOR ROLE marquee_owner REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
ALTER DEFAULT PRIVILEGES FOR ROLE marquee_owner IN SCHEMA public GRANT SELECT ON TABLES TO marquee_admin;

COMMENT ON SCHEMA api IS
    'Functions the Marquee server calls (as marquee_app; SECURITY DEFINER, owned by marquee_owner). Signatures are a '
    'contract with src/; change them only together.';
