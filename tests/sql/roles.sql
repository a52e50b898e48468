-- Least privilege (migrations/V7__roles.sql, sql/90_grants.sql, docs/sql.md "Roles"): who owns what, which
-- functions run with the owner's rights, who may execute and read what, and what each role can really do.
BEGIN;
\ir fixtures.psql
SELECT plan(130);

-- Runs one statement as p_role (SET ROLE, undone before returning) and answers 'ok' or its SQLSTATE. Its effects
-- stay (rolled back with the test).
CREATE FUNCTION pg_temp.as_role(p_role name, p_sql text)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    v_state text := 'ok';
BEGIN
    PERFORM set_config('role', p_role, true);
    BEGIN
        EXECUTE p_sql;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE;
    END;
    PERFORM set_config('role', 'none', true);
    RETURN v_state;
END;
$$;

-- Functions that must run with their owner's rights: every api and admin function, every trigger function.
CREATE FUNCTION pg_temp.definer_functions()
RETURNS SETOF regprocedure
LANGUAGE sql
AS $$
    SELECT p.oid::regprocedure
      FROM pg_proc AS p
     WHERE p.pronamespace IN ('api'::regnamespace, 'admin'::regnamespace)
        OR (p.pronamespace = 'internal'::regnamespace AND p.prorettype = 'trigger'::regtype)
$$;

CREATE FUNCTION pg_temp.our_functions()
RETURNS SETOF regprocedure
LANGUAGE sql
AS $$
    SELECT p.oid::regprocedure
      FROM pg_proc AS p
     WHERE p.pronamespace IN ('api'::regnamespace, 'admin'::regnamespace, 'internal'::regnamespace)
$$;

-- The tables of the schema (not the migration bookkeeping, which the server must not see either; checked apart).
CREATE TEMP TABLE app_tables (name name PRIMARY KEY);
INSERT INTO app_tables VALUES
    ('settings'), ('cinemas'), ('halls'), ('seats'), ('films'), ('screenings'), ('users'), ('sessions'),
    ('auth_failures'), ('seat_states'), ('bookings'), ('booking_seats');

-- Roles ------------------------------------------------------------------------------------------------------------

SELECT has_role('marquee_owner');
SELECT has_role('marquee_app');
SELECT has_role('marquee_admin');
SELECT isnt_superuser('marquee_owner');
SELECT isnt_superuser('marquee_app');
SELECT isnt_superuser('marquee_admin');
SELECT is((SELECT r.rolcanlogin FROM pg_roles AS r WHERE r.rolname = 'marquee_app'), true,
          'marquee_app can log in (the server connects as it)');
SELECT is((SELECT r.rolcreaterole OR r.rolcreatedb OR r.rolreplication OR r.rolbypassrls
             FROM pg_roles AS r WHERE r.rolname = 'marquee_app'), false,
          'marquee_app has no other role attribute (no CREATEROLE, CREATEDB, REPLICATION, BYPASSRLS)');
SELECT is_empty($$SELECT m.roleid::regrole::text FROM pg_auth_members AS m WHERE m.member = 'marquee_app'::regrole$$,
                'marquee_app is a member of no role (it inherits nothing)');
SELECT is_empty($$SELECT m.member::regrole::text FROM pg_auth_members AS m
                   WHERE m.roleid IN ('marquee_owner'::regrole, 'marquee_admin'::regrole)
                     AND m.member = 'marquee_app'::regrole$$,
                'marquee_app is neither owner nor admin');

-- Ownership --------------------------------------------------------------------------------------------------------

SELECT schema_owner_is('api', 'marquee_owner');
SELECT schema_owner_is('admin', 'marquee_owner');
SELECT schema_owner_is('internal', 'marquee_owner');
SELECT table_owner_is('public', t.name, 'marquee_owner', format('marquee_owner owns table %s', t.name))
  FROM app_tables AS t ORDER BY t.name;
SELECT is_empty($$SELECT c.oid::regclass::text
                    FROM pg_class AS c
                   WHERE c.relnamespace = 'public'::regnamespace
                     AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
                     AND c.relowner <> 'marquee_owner'::regrole
                     AND NOT EXISTS (SELECT FROM pg_depend AS d
                                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')$$,
                'marquee_owner owns every table and sequence in public, the migration bookkeeping included');
SELECT is_empty($$SELECT f::text FROM pg_temp.our_functions() AS f
                   JOIN pg_proc AS p ON p.oid = f WHERE p.proowner <> 'marquee_owner'::regrole$$,
                'marquee_owner owns every function in api, admin and internal');

-- SECURITY DEFINER, with a search_path nobody can hijack --------------------------------------------------------------

SELECT is_empty($$SELECT f::text FROM pg_temp.definer_functions() AS f JOIN pg_proc AS p ON p.oid = f
                   WHERE NOT p.prosecdef
                      OR NOT coalesce('search_path=pg_catalog, public, pg_temp' = ANY (p.proconfig), false)
                      OR EXISTS (SELECT FROM unnest(p.proconfig) AS c(setting)
                                  WHERE c.setting NOT IN ('search_path=pg_catalog, public, pg_temp',
                                                          'plan_cache_mode=force_generic_plan',
                                                          'enable_seqscan=off', 'marquee.publisher=api',
                                                          'lock_timeout=100ms'))$$,
                'every api and admin function and every trigger function is SECURITY DEFINER with '
                'search_path = pg_catalog, public, pg_temp (and at most plan_cache_mode, enable_seqscan, '
                'marquee.publisher and lock_timeout)');
SELECT set_eq($$SELECT p.oid::regprocedure::text FROM pg_proc AS p
                WHERE 'marquee.publisher=api' = ANY (p.proconfig)$$,
              ARRAY['api.hold_seats(bigint,bigint,bigint[])', 'api.release_seats(bigint,bigint,bigint[])',
                    'api.book_seats(bigint,bigint,bigint[])', 'api.cancel_booking(bigint,bigint)'],
              'exactly the four seat-changing api functions that notify themselves silence the notify triggers '
              '(sql/20_notify.sql, "Who publishes")');
SELECT is_empty($$SELECT p.oid::regprocedure::text FROM pg_proc AS p
                   WHERE p.pronamespace = 'internal'::regnamespace AND p.prorettype <> 'trigger'::regtype
                     AND p.prosecdef$$,
                'internal helpers run with their caller''s rights (only definer functions reach them)');
SELECT is_definer('api', 'hold_seats', ARRAY['bigint', 'bigint', 'bigint[]'], 'api.hold_seats is SECURITY DEFINER');
SELECT is_definer('admin', 'block_seats', ARRAY['bigint', 'bigint[]'], 'admin.block_seats is SECURITY DEFINER');
SELECT is_definer('internal', 'seat_states_notify', '{}'::name[],
                  'the version-bumping notify trigger function is SECURITY DEFINER (a DBA''s UPDATE needs it)');
SELECT cmp_ok((SELECT count(*) FROM pg_temp.definer_functions()), '>=', 30::bigint,
              'the definer checks above saw the functions (sql/ is applied)');

-- Function privileges ----------------------------------------------------------------------------------------------

SELECT is_empty($$SELECT f::text FROM pg_temp.our_functions() AS f
                   WHERE has_function_privilege('public', f, 'EXECUTE')$$,
                'PUBLIC may execute no function in api, admin or internal');

-- The server: exactly what src/models/*.rs calls (tests/it/roles.rs compares this list with the source).
SELECT function_privs_are('api', 'get_cinemas', '{}'::name[], 'marquee_app', ARRAY['EXECUTE']);
SELECT function_privs_are('api', 'get_screenings', ARRAY['bigint', 'timestamp with time zone', 'timestamp with time zone'],
                          'marquee_app', ARRAY['EXECUTE']);
SELECT function_privs_are('api', 'screening_hall', ARRAY['bigint'], 'marquee_app', ARRAY['EXECUTE']);
SELECT function_privs_are('api', 'hall_snapshot', ARRAY['bigint'], 'marquee_app', ARRAY['EXECUTE']);
SELECT function_privs_are('api', 'hold_seats', ARRAY['bigint', 'bigint', 'bigint[]'], 'marquee_app', ARRAY['EXECUTE']);
SELECT function_privs_are('api', 'release_seats', ARRAY['bigint', 'bigint', 'bigint[]'], 'marquee_app', ARRAY['EXECUTE']);
SELECT function_privs_are('api', 'book_seats', ARRAY['bigint', 'bigint', 'bigint[]'], 'marquee_app', ARRAY['EXECUTE']);
SELECT function_privs_are('api', 'cancel_booking', ARRAY['bigint', 'bigint'], 'marquee_app', ARRAY['EXECUTE']);
SELECT function_privs_are('api', 'get_bookings', ARRAY['bigint'], 'marquee_app', ARRAY['EXECUTE']);
SELECT function_privs_are('api', 'sweep_expired_holds', '{}'::name[], 'marquee_app', ARRAY['EXECUTE']);
SELECT function_privs_are('api', 'auth_user', ARRAY['text'], 'marquee_app', ARRAY['EXECUTE']);
SELECT function_privs_are('api', 'auth_login', ARRAY['text', 'bigint', 'integer', 'inet'], 'marquee_app', ARRAY['EXECUTE']);
SELECT function_privs_are('api', 'auth_register', ARRAY['text', 'bytea', 'bigint', 'integer', 'inet'], 'marquee_app',
                          ARRAY['EXECUTE']);
SELECT function_privs_are('api', 'session_user', ARRAY['uuid'], 'marquee_app', ARRAY['EXECUTE']);
SELECT function_privs_are('api', 'revoke_session', ARRAY['uuid'], 'marquee_app', ARRAY['EXECUTE']);
SELECT function_privs_are('api', 'dead_sessions', ARRAY['uuid[]'], 'marquee_app', ARRAY['EXECUTE']);
SELECT function_privs_are('api', 'prune_auth', '{}'::name[], 'marquee_app', ARRAY['EXECUTE']);
SELECT set_eq($$SELECT p.proname::text FROM pg_proc AS p
                 WHERE p.pronamespace IN ('api'::regnamespace, 'admin'::regnamespace, 'internal'::regnamespace)
                   AND has_function_privilege('marquee_app', p.oid, 'EXECUTE')$$,
              ARRAY['get_cinemas', 'get_screenings', 'screening_hall', 'hall_snapshot', 'hold_seats', 'release_seats',
                    'book_seats', 'cancel_booking', 'get_bookings', 'sweep_expired_holds', 'auth_user', 'auth_login',
                    'auth_register', 'registration_retry_after', 'session_user', 'revoke_session', 'dead_sessions',
                    'prune_auth', 'hold_best_available', 'screening_prices', 'seat_batch'],
              'marquee_app may execute exactly these functions, no admin or internal one');
SELECT function_privs_are('admin', 'block_seats', ARRAY['bigint', 'bigint[]'], 'marquee_app', '{}'::name[]);
SELECT function_privs_are('admin', 'seed_demo', '{}'::name[], 'marquee_app', '{}'::name[]);
SELECT function_privs_are('internal', 'setting', ARRAY['text'], 'marquee_app', '{}'::name[]);

-- DBAs.
SELECT function_privs_are('admin', 'block_seats', ARRAY['bigint', 'bigint[]'], 'marquee_admin', ARRAY['EXECUTE']);
SELECT function_privs_are('admin', 'set_hold_ttl', ARRAY['integer'], 'marquee_admin', ARRAY['EXECUTE']);
SELECT function_privs_are('api', 'cancel_booking', ARRAY['bigint', 'bigint'], 'marquee_admin', ARRAY['EXECUTE']);
SELECT is_empty($$SELECT p.oid::regprocedure::text FROM pg_proc AS p
                   WHERE p.pronamespace IN ('api'::regnamespace, 'admin'::regnamespace)
                     AND NOT has_function_privilege('marquee_admin', p.oid, 'EXECUTE')$$,
                'marquee_admin may execute every api and admin function');
SELECT is_empty($$SELECT p.oid::regprocedure::text FROM pg_proc AS p
                   WHERE p.pronamespace = 'internal'::regnamespace
                     AND has_function_privilege('marquee_admin', p.oid, 'EXECUTE')$$,
                'marquee_admin may execute no internal function');

-- Schema privileges ------------------------------------------------------------------------------------------------

SELECT schema_privs_are('api', 'marquee_app', ARRAY['USAGE']);
SELECT schema_privs_are('admin', 'marquee_app', '{}'::name[]);
SELECT schema_privs_are('internal', 'marquee_app', '{}'::name[]);
SELECT schema_privs_are('api', 'marquee_admin', ARRAY['USAGE']);
SELECT schema_privs_are('admin', 'marquee_admin', ARRAY['USAGE']);
SELECT schema_privs_are('internal', 'marquee_admin', '{}'::name[]);
SELECT schema_privs_are('internal', 'public', '{}'::name[]);

-- Table privileges -------------------------------------------------------------------------------------------------

SELECT table_privs_are('public', t.name, 'marquee_app', '{}'::name[]) FROM app_tables AS t ORDER BY t.name;
SELECT is_empty($$SELECT c.oid::regclass::text
                    FROM pg_class AS c
                   WHERE c.relnamespace = 'public'::regnamespace
                     AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
                     AND NOT EXISTS (SELECT FROM pg_depend AS d  -- pgTAP's own views are readable by all
                                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
                     AND (has_table_privilege('marquee_app', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
                          OR has_any_column_privilege('marquee_app', c.oid, 'SELECT, INSERT, UPDATE, REFERENCES'))$$,
                'marquee_app has no privilege on any table or column in public (migration bookkeeping included)');
SELECT is_empty($$SELECT c.oid::regclass::text FROM pg_class AS c
                   WHERE c.relnamespace = 'public'::regnamespace
                     AND CASE WHEN c.relkind = 'S' THEN has_sequence_privilege('marquee_app', c.oid, 'USAGE, SELECT, UPDATE')
                              ELSE false END$$,
                'marquee_app may use no sequence');
SELECT table_privs_are('public', t.name, 'marquee_admin',
                       CASE t.name WHEN 'seat_states' THEN ARRAY['SELECT', 'UPDATE', 'DELETE']::name[]
                                   ELSE ARRAY['SELECT']::name[] END)
  FROM app_tables AS t ORDER BY t.name;
SELECT column_privs_are('public', 'seats', 'kind', 'marquee_admin', ARRAY['SELECT', 'UPDATE']);
SELECT column_privs_are('public', 'seats', 'x', 'marquee_admin', ARRAY['SELECT', 'UPDATE']);
SELECT column_privs_are('public', 'seats', 'hall_id', 'marquee_admin', ARRAY['SELECT']);

-- What marquee_app can really do -----------------------------------------------------------------------------------

SELECT pg_temp.make_screening(2, 3) AS s \gset
SELECT pg_temp.make_user('roles_alice') AS alice \gset

SELECT is(pg_temp.as_role('marquee_app', 'SELECT count(*) FROM seat_states'), '42501', 'marquee_app cannot SELECT a table');
SELECT is(pg_temp.as_role('marquee_app', 'SELECT count(*) FROM users'), '42501', 'marquee_app cannot read users');
SELECT is(pg_temp.as_role('marquee_app', $$INSERT INTO users (username, totp_secret, last_step) VALUES ('mallory', '\x00', 0)$$),
          '42501', 'marquee_app cannot INSERT');
SELECT is(pg_temp.as_role('marquee_app', format('UPDATE seat_states SET status = %L WHERE screening_id = %s', 'blocked', :s)),
          '42501', 'marquee_app cannot UPDATE');
SELECT is(pg_temp.as_role('marquee_app', 'DELETE FROM sessions'), '42501', 'marquee_app cannot DELETE');
SELECT is(pg_temp.as_role('marquee_app', 'TRUNCATE bookings'), '42501', 'marquee_app cannot TRUNCATE');
SELECT is(pg_temp.as_role('marquee_app', 'SELECT internal.setting(''seat_limit'')'), '42501',
          'marquee_app cannot call internal helpers');
SELECT is(pg_temp.as_role('marquee_app', format('SELECT admin.block_seats(%s, %L)', :s, pg_temp.seats(:s, 'A1'))),
          '42501', 'marquee_app cannot call admin functions');
SELECT is(pg_temp.as_role('marquee_app', 'SELECT admin.set_seat_limit(1000)'), '42501',
          'marquee_app cannot change settings');
SELECT is(pg_temp.as_role('marquee_app', format('SELECT * FROM api.hold_seats(%s, %s, %L)', :alice, :s,
                                                pg_temp.seats(:s, 'A1', 'A2'))),
          'ok', 'marquee_app holds seats through api.hold_seats');
SELECT is(pg_temp.state(:s, 'A1') || ' ' || pg_temp.state(:s, 'A2'), format('held:%s held:%s', :alice, :alice),
          'the hold made as marquee_app is there');
SELECT is(pg_temp.version(:s), 1::bigint, 'and bumped the version (the trigger ran with the owner''s rights)');
SELECT is(pg_temp.as_role('marquee_app', format('SELECT * FROM api.hall_snapshot(%s)', :s)), 'ok',
          'marquee_app reads a hall through api.hall_snapshot');
SELECT is(pg_temp.as_role('marquee_app', 'SELECT * FROM api.get_screenings(NULL, NULL, NULL)'), 'ok',
          'marquee_app lists screenings');
SELECT is(pg_temp.as_role('marquee_app', format('SELECT * FROM api.book_seats(%s, %s, %L)', :alice, :s,
                                                pg_temp.seats(:s, 'A1'))),
          'ok', 'marquee_app books through api.book_seats');
SELECT is(pg_temp.as_role('marquee_app', 'SELECT * FROM api.auth_login(''roles_alice'', NULL, 60)'), 'ok',
          'marquee_app records a login attempt through api.auth_login');
SELECT is((SELECT count(*)::int FROM auth_failures WHERE username = 'roles_alice'), 1,
          'the failed attempt made as marquee_app was recorded');
SELECT is(pg_temp.as_role('marquee_app', 'SELECT api.sweep_expired_holds()'), 'ok', 'marquee_app runs the sweep');

-- A temporary table cannot stand in for a real one inside the definer functions (pg_temp is searched last).
CREATE TEMP TABLE screenings (id bigint, hall_id bigint);
INSERT INTO pg_temp.screenings VALUES (:s, -1);
SELECT is(api.screening_hall(:s), (SELECT sc.hall_id FROM public.screenings AS sc WHERE sc.id = :s),
          'a temporary table named like a real one does not shadow it in api functions');
DROP TABLE pg_temp.screenings;

-- What a DBA (marquee_admin) can do --------------------------------------------------------------------------------

SELECT pg_temp.forget_notify();
SELECT is(pg_temp.as_role('marquee_admin',
                          format('UPDATE seat_states SET status = %L, user_id = NULL, hold_expires_at = NULL
                                   WHERE screening_id = %s AND seat_id = %s', 'blocked', :s, pg_temp.seat(:s, 'B1'))),
          'ok', 'marquee_admin blocks a seat with a plain UPDATE');
SELECT is(pg_temp.state(:s, 'B1'), 'blocked', 'the seat is blocked');
SELECT is(pg_temp.version(:s), 3::bigint, 'the DBA''s UPDATE bumped the version');
SELECT matches(pg_temp.last_notify(), format('^hall_\d+ \{"s":%s,"v":3,"c":\[\[%s,"blocked",null\]\]\}$', :s,
                                             pg_temp.seat(:s, 'B1')),
               'and notified the hall');
SELECT is(pg_temp.as_role('marquee_admin', format('SELECT admin.block_seats(%s, %L)', :s, pg_temp.seats(:s, 'B2'))),
          'ok', 'marquee_admin blocks a seat with admin.block_seats');
SELECT is(pg_temp.state(:s, 'B2'), 'blocked', 'that seat is blocked too');
SELECT is(pg_temp.as_role('marquee_admin', format('UPDATE seats SET kind = %L WHERE id = %s', 'vip', pg_temp.seat(:s, 'B3'))),
          'ok', 'marquee_admin edits the layout of seats');
SELECT is(pg_temp.as_role('marquee_admin', format('UPDATE seats SET hall_id = hall_id WHERE id = %s', pg_temp.seat(:s, 'B3'))),
          '42501', 'but cannot move a seat to another hall');
SELECT is(pg_temp.as_role('marquee_admin', 'SELECT count(*) FROM users'), 'ok', 'marquee_admin reads every table');
SELECT is(pg_temp.as_role('marquee_admin', format('UPDATE screening_versions SET version = 0 WHERE screening_id = %s', :s)), '42501',
          'marquee_admin cannot rewrite versions');
SELECT is(pg_temp.as_role('marquee_admin', 'UPDATE settings SET value = 1'), '42501',
          'marquee_admin changes settings only through admin.set_*');
SELECT is(pg_temp.as_role('marquee_admin', $$INSERT INTO cinemas (name, city, address, timezone) VALUES ('x', 'y', 'z', 'UTC')$$),
          '42501', 'marquee_admin creates cinemas only through admin.create_cinema');
SELECT is(pg_temp.as_role('marquee_admin', 'SELECT admin.set_seat_limit(12)'), 'ok',
          'marquee_admin changes a setting through admin.set_seat_limit');
SELECT is(pg_temp.as_role('marquee_admin', 'SELECT internal.setting(''seat_limit'')'), '42501',
          'marquee_admin cannot call internal helpers');

SELECT * FROM finish();
ROLLBACK;
