-- Abuse limits (sql/50_auth.sql, sql/30_catalogue.sql, migrations/V10): registrations per client address,
-- wrong-code limits per name and address, per name and per address, and the get_screenings window.
BEGIN;
\ir fixtures.psql
SELECT plan(35);

-- Settings -----------------------------------------------------------------------------------------------------------

SELECT results_eq($$SELECT s.key, s.value FROM settings AS s
                    WHERE s.key IN ('registrations_per_hour', 'login_failures_per_name_address',
                                    'login_failures_per_name', 'login_failures_per_address')
                    ORDER BY s.key$$,
                  $$VALUES ('login_failures_per_address', 50), ('login_failures_per_name', 20),
                           ('login_failures_per_name_address', 5), ('registrations_per_hour', 20)$$,
                  'the limits ship with the contract''s defaults: 20 registrations an hour, 5, 20 and 50 wrong codes');
SELECT is(pg_temp.err($$SELECT admin.set_registration_limit(0)$$), 'no error',
          'registrations_per_hour may be 0 (off)');
SELECT is(pg_temp.err($$SELECT admin.set_registration_limit(-1)$$), 'MQ400',
          'a negative registration limit is BAD_REQUEST');
SELECT is(left(pg_temp.err($$UPDATE settings SET value = 0 WHERE key = 'seat_limit'$$), 5), '23514',
          'every other setting must still be positive, even for a DBA''s UPDATE');
SELECT is(left(pg_temp.err($$UPDATE settings SET value = -1 WHERE key = 'registrations_per_hour'$$), 5), '23514',
          'registrations_per_hour is never negative');
SELECT is(pg_temp.err($$SELECT admin.set_login_limits(5, 0, 50)$$), 'MQ400',
          'a wrong-code limit of 0 is BAD_REQUEST');

-- Registrations per address -------------------------------------------------------------------------------------------

SELECT admin.set_registration_limit(2);
SELECT is(api.registration_retry_after('10.0.0.1'), NULL, 'an address that registered nobody may register');
SELECT is((SELECT r.outcome FROM api.auth_register('tap_reg1', '\xbeef'::bytea, 5, 60, '10.0.0.1') AS r), 'ok',
          'the first registration from an address succeeds');
SELECT is((SELECT row(r.address, r.user_id = u.id)::text FROM registrations AS r JOIN users AS u ON u.username = 'tap_reg1'),
          row('10.0.0.1'::inet, true)::text, 'the registration is recorded with its user and address');
SELECT is((SELECT r.outcome FROM api.auth_register('tap_reg2', '\xbeef'::bytea, 5, 60, '10.0.0.1') AS r), 'ok',
          'the second as well');
SELECT is(api.registration_retry_after('10.0.0.1'), 3600,
          'with the limit reached, auth_start for a new name waits until the oldest registration is an hour old');
SELECT is((SELECT row(r.outcome, r.retry_after_s, r.user_id)::text
             FROM api.auth_register('tap_reg3', '\xbeef'::bytea, 5, 60, '10.0.0.1') AS r),
          row('registration_limited', 3600, NULL::bigint)::text,
          'a candidate handed out before the limit was reached cannot register past it');
SELECT is((SELECT count(*)::int FROM users WHERE username = 'tap_reg3'), 0, 'and no user is created');
SELECT is(api.registration_retry_after('10.0.0.2'), NULL, 'another address is not limited');
SELECT is(api.registration_retry_after('::ffff:10.0.0.9'), NULL, 'nor is an IPv6 one');
UPDATE registrations SET registered_at = now() - interval '59 minutes 30.2 seconds'
 WHERE user_id = (SELECT id FROM users WHERE username = 'tap_reg1');
SELECT is(api.registration_retry_after('10.0.0.1'), 30,
          'retry_after_s is the whole seconds until the oldest counted registration is an hour old, rounded up');
UPDATE registrations SET registered_at = now() - interval '1 hour'
 WHERE user_id = (SELECT id FROM users WHERE username = 'tap_reg1');
SELECT is(api.registration_retry_after('10.0.0.1'), NULL, 'the hour slides');
SELECT admin.set_registration_limit(1);
SELECT is(api.registration_retry_after('10.0.0.1'), 3600, 'a lower limit applies at once');
SELECT admin.set_registration_limit(0);
SELECT is((SELECT r.outcome FROM api.auth_register('tap_reg3', '\xbeef'::bytea, 5, 60, '10.0.0.1') AS r), 'ok',
          'with the limit 0 (off) the address registers again');
SELECT api.prune_auth();
SELECT is((SELECT count(*)::int FROM registrations AS r JOIN users AS u ON u.id = r.user_id
            WHERE u.username LIKE 'tap\_reg%'), 2,
          'prune_auth deletes registrations older than an hour and keeps recent ones');

-- Wrong codes ---------------------------------------------------------------------------------------------------------

SELECT admin.set_registration_limit(20);
SELECT admin.set_login_limits(2, 4, 5);
SELECT is((SELECT r.outcome FROM api.auth_register('tap_owner', '\xbeef'::bytea, 5, 60, '10.1.0.1') AS r), 'ok',
          'the owner registers from her address');
SELECT is((SELECT array_agg(l.outcome ORDER BY n)::text
             FROM generate_series(1, 3) AS n, api.auth_login('tap_owner', nullif(n, n)::bigint, 60, '10.9.0.1') AS l),
          '{invalid,invalid,rate_limited}', 'a stranger''s address is locked for the name after per_name_address failures');
SELECT is((SELECT l.outcome FROM api.auth_login('tap_owner', 6, 60, '10.1.0.1') AS l), 'ok',
          'the owner''s right code from her own address still logs in');
SELECT is((SELECT count(*)::int FROM auth_failures WHERE username = 'tap_owner'), 2,
          'her success does not clear the stranger''s failures from another address');
SELECT is((SELECT array_agg(l.outcome ORDER BY n)::text
             FROM generate_series(1, 2) AS n, api.auth_login('tap_owner', nullif(n, n)::bigint, 60, '10.9.0.2') AS l),
          '{invalid,invalid}', 'a second address fails twice');
SELECT is((SELECT row(l.outcome, l.retry_after_s)::text FROM api.auth_login('tap_owner', 7, 60, '10.1.0.1') AS l),
          row('rate_limited', 900)::text, 'per_name failures from all addresses together lock the name everywhere');

-- Failures for a name before anybody owns it: three addresses, two each, five minutes ago.
INSERT INTO auth_failures (username, address, failed_at)
SELECT 'tap_fresh', a, now() - interval '5 minutes'
  FROM unnest(ARRAY['10.8.0.1', '10.8.0.2', '10.8.0.3']::inet[]) AS a, generate_series(1, 2);
SELECT is((SELECT r.outcome FROM api.auth_register('tap_fresh', '\xbeef'::bytea, 5, 60, '10.2.0.1') AS r), 'ok',
          'strangers'' failures for a name nobody owns do not stop its owner from registering it');
SELECT is((SELECT l.outcome FROM api.auth_login('tap_fresh', 6, 60, '10.2.0.2') AS l), 'ok',
          'nor lock it afterwards: the per-name count starts at registration');
SELECT is((SELECT r.outcome FROM api.auth_register('tap_fresh2', NULL, 5, 60, '10.8.0.1') AS r), 'invalid',
          'a name with no user still counts against the address that tried it');

SELECT is((SELECT array_agg(l.outcome ORDER BY n)::text
             FROM generate_series(1, 5) AS n, api.auth_login('tap_guess' || n, NULL, 60, '10.7.0.1') AS l),
          '{invalid,invalid,invalid,invalid,invalid}', 'five names guessed from one address, once each');
SELECT is((SELECT l.outcome FROM api.auth_login('tap_fresh', 7, 60, '10.7.0.1') AS l), 'rate_limited',
          'then the address is locked for every name, even a right code for a name it never tried');
SELECT is((SELECT r.outcome FROM api.auth_register('tap_newname', '\xbeef'::bytea, 5, 60, '10.7.0.1') AS r),
          'rate_limited', 'and for registering');
SELECT is((SELECT l.outcome FROM api.auth_login('tap_fresh', 7, 60, '10.2.0.2') AS l), 'ok',
          'other addresses are not locked');

-- get_screenings window ------------------------------------------------------------------------------------------------

SELECT is(pg_temp.err($$SELECT * FROM api.get_screenings(NULL, now(), now() + interval '31 days')$$), 'no error',
          'get_screenings answers a 31-day window');
SELECT is(pg_temp.err($$SELECT * FROM api.get_screenings(NULL, now(), now() + interval '31 days 1 second')$$), 'MQ400',
          'a longer window is BAD_REQUEST, so one answer stays small');

SELECT * FROM finish();
ROLLBACK;
