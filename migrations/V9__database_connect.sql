-- Only Marquee's roles may connect to Marquee's database (issue 12, point 6).
--
-- PostgreSQL grants CONNECT and TEMP on every new database to PUBLIC, and NOTIFY needs no privilege at all: any
-- role of the cluster could connect and `NOTIFY hall_<id>` a forged seat change that every replica would push to
-- its subscribers. Revoking CONNECT from PUBLIC closes that; TEMP goes too, since no Marquee role needs temporary
-- tables. The Marquee roles get CONNECT back explicitly; DBAs connect through membership of marquee_admin (GRANT
-- marquee_admin TO alice), and superusers are not subject to privileges.
--
-- Changing a database's privileges needs its owner or a superuser. Where migrations run as marquee_owner on a
-- database someone else owns, this cannot be done here: a WARNING says so and what to run (docs/deploy.md,
-- "Shared PostgreSQL servers"), and the migration still succeeds, as the rest of Marquee works either way.
--
-- A database created with `CREATE DATABASE ... TEMPLATE` does not inherit these privileges from its template.

DO $$
DECLARE
    db text := current_database();
BEGIN
    EXECUTE format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', db);
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO marquee_owner, marquee_app, marquee_admin', db);
EXCEPTION
    WHEN insufficient_privilege THEN
        RAISE WARNING 'role % may not change the privileges of database %: any role of this cluster may still connect to it',
                      current_user, db
            USING HINT = format('As the database owner or a superuser, run: REVOKE CONNECT, TEMPORARY ON DATABASE %I '
                                'FROM PUBLIC; GRANT CONNECT ON DATABASE %I TO marquee_owner, marquee_app, marquee_admin;',
                                db, db);
END;
$$;
