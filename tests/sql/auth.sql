-- Authentication bookkeeping (sql/50_auth.sql): replay refusal, failure counting, sessions.
BEGIN;
\ir fixtures.psql
SELECT plan(40);

-- Registration ---------------------------------------------------------------------------------------------------

SELECT is_empty($$SELECT * FROM api.auth_user('tap_carol')$$, 'auth_user answers no rows for an unknown user');

CREATE TEMP TABLE reg AS SELECT * FROM api.auth_register('tap_carol', '\xc0ffee'::bytea, 1000, 3600);
SELECT is((SELECT r.outcome FROM reg AS r), 'ok', 'registering with a matched code succeeds');
SELECT user_id AS carol, session_id AS carol_session FROM reg \gset
SELECT is((SELECT row(u.username, u.totp_secret, u.last_step)::text FROM users AS u WHERE u.id = :carol),
          row('tap_carol', '\xc0ffee'::bytea, 1000::bigint)::text,
          'the user is stored with its encrypted secret and the registration step as last_step');
SELECT is((SELECT r.expires_at FROM reg AS r), now() + interval '3600 seconds', 'the session lasts p_ttl_seconds');
SELECT is((SELECT row(a.user_id, a.totp_secret, a.last_step)::text FROM api.auth_user('tap_carol') AS a),
          row(:carol::bigint, '\xc0ffee'::bytea, 1000::bigint)::text,
          'auth_user answers id, secret and last step');
SELECT is((SELECT row(s.user_id, s.username)::text FROM api.session_user(:'carol_session') AS s),
          row(:carol::bigint, 'tap_carol')::text, 'session_user answers the session''s user');

SELECT is((SELECT r.outcome FROM api.auth_register('tap_carol', '\xbeef'::bytea, 2000, 3600) AS r), 'taken',
          'a candidate whose name was registered meanwhile gets taken');
SELECT is((SELECT count(*)::int FROM auth_failures WHERE username = 'tap_carol'), 0, 'taken is not a failure');
SELECT is((SELECT r.outcome FROM api.auth_register('tap_dave', NULL, 2000, 3600) AS r), 'invalid',
          'no candidate on this connection is invalid');
SELECT is((SELECT r.outcome FROM api.auth_register('tap_dave', '\xbeef'::bytea, NULL, 3600) AS r), 'invalid',
          'a code that matched no step is invalid');
SELECT is((SELECT count(*)::int FROM auth_failures WHERE username = 'tap_dave'), 2,
          'both count as failures for the name');
SELECT is((SELECT count(*)::int FROM users WHERE username = 'tap_dave'), 0, 'and create no user');
SELECT is((SELECT r.outcome FROM api.auth_register('TAP_Dave', '\xbeef'::bytea, 5, 3600) AS r), 'ok',
          'usernames are lower-cased');
SELECT is((SELECT count(*)::int FROM auth_failures WHERE username = 'tap_dave'), 0, 'a success clears the failures');
SELECT is(pg_temp.err($$SELECT * FROM api.auth_register('x', '\xbeef'::bytea, 5, 3600)$$), 'MQ400',
          'a username shorter than 3 characters is BAD_REQUEST');
SELECT is(pg_temp.err($$SELECT * FROM api.auth_login('no spaces', 5, 3600)$$), 'MQ400',
          'a username with characters outside a-z 0-9 _ . - is BAD_REQUEST (not a counted failure)');
SELECT is(pg_temp.err($$SELECT * FROM api.auth_login('tap_carol', 5, 0)$$), 'MQ400',
          'a session TTL that is not positive is BAD_REQUEST');

-- Login ------------------------------------------------------------------------------------------------------------

SELECT is((SELECT row(l.outcome, l.user_id)::text FROM api.auth_login('tap_carol', 1001, 60) AS l),
          row('ok', :carol::bigint)::text, 'a code for a later step logs in');
SELECT is((SELECT last_step FROM users WHERE id = :carol), 1001::bigint, 'and becomes the last accepted step');
SELECT is((SELECT l.outcome FROM api.auth_login('tap_carol', 1001, 60) AS l), 'invalid',
          'the same step again (a replayed code) is refused');
SELECT is((SELECT l.outcome FROM api.auth_login('tap_carol', 1000, 60) AS l), 'invalid',
          'an earlier step (the registration code) is refused');
SELECT is((SELECT l.outcome FROM api.auth_login('tap_carol', NULL, 60) AS l), 'invalid', 'no matching step is refused');
SELECT is((SELECT l.outcome FROM api.auth_login('tap_nobody', 99999999, 60) AS l), 'invalid',
          'an unknown user is invalid');
SELECT is((SELECT count(*)::int FROM auth_failures WHERE username = 'tap_nobody'), 1,
          'and counts against that name, so guessing names is limited too');

-- Rate limit ------------------------------------------------------------------------------------------------------

-- tap_carol has 3 failures now. Two more:
SELECT is((SELECT l.outcome FROM api.auth_login('tap_carol', NULL, 60) AS l), 'invalid', 'the 4th failure is invalid');
SELECT is((SELECT l.outcome FROM api.auth_login('tap_carol', NULL, 60) AS l), 'invalid',
          'the 5th failure itself is still invalid');
SELECT is((SELECT row(l.outcome, l.retry_after_s, l.user_id, l.session_id)::text
             FROM api.auth_login('tap_carol', 2000, 60) AS l),
          row('rate_limited', 900, NULL::bigint, NULL::uuid)::text,
          'after 5 failures in 15 minutes even a right code is rate_limited, retry after the oldest is 15 minutes old');
SELECT is((SELECT last_step FROM users WHERE id = :carol), 1001::bigint, 'a rate-limited right code is not accepted');
SELECT is((SELECT count(*)::int FROM auth_failures WHERE username = 'tap_carol'), 5,
          'rate-limited attempts are not recorded (the lock-out does not extend itself)');
SELECT is((SELECT r.outcome FROM api.auth_register('tap_carol', '\xbeef'::bytea, 5, 60) AS r), 'rate_limited',
          'registration checks the rate limit first too');

UPDATE auth_failures SET failed_at = now() - interval '14 minutes 30.2 seconds'
 WHERE id = (SELECT min(id) FROM auth_failures WHERE username = 'tap_carol');
SELECT is((SELECT l.retry_after_s FROM api.auth_login('tap_carol', 2000, 60) AS l), 30,
          'retry_after_s is the whole seconds until the oldest counted failure is 15 minutes old, rounded up');
UPDATE auth_failures SET failed_at = now() - interval '15 minutes'
 WHERE id = (SELECT min(id) FROM auth_failures WHERE username = 'tap_carol');
SELECT is((SELECT row(l.outcome, l.user_id)::text FROM api.auth_login('tap_carol', 2000, 60) AS l),
          row('ok', :carol::bigint)::text,
          'the window slides: once the oldest failure is 15 minutes old, a right code logs in');

INSERT INTO auth_failures (username, failed_at)
SELECT 'tap_erin', now() - make_interval(mins => 20 + i) FROM generate_series(1, 10) AS i;
INSERT INTO auth_failures (username, failed_at)
SELECT 'tap_erin', now() - make_interval(mins => i) FROM generate_series(1, 4) AS i;
SELECT is((SELECT l.outcome FROM api.auth_login('tap_erin', NULL, 60) AS l), 'invalid',
          'failures older than 15 minutes do not count');

-- Sessions ---------------------------------------------------------------------------------------------------------

SELECT is(api.revoke_session(:'carol_session'), true, 'revoke_session revokes a live session');
SELECT is_empty(format('SELECT * FROM api.session_user(%L)', :'carol_session'),
                'a revoked session has no user');
SELECT is(api.revoke_session(:'carol_session'), false, 'revoking it again changes nothing');
SELECT session_id AS live FROM api.auth_login('tap_dave', 6, 60) \gset
SELECT session_id AS old FROM api.auth_login('tap_dave', 7, 60) \gset
UPDATE sessions SET created_at = now() - interval '3 days', expires_at = now() - interval '2 days' WHERE id = :'old';
SELECT is_empty(format('SELECT * FROM api.session_user(%L)', :'old'), 'an expired session has no user');
SELECT set_eq(format('SELECT * FROM api.dead_sessions(ARRAY[%L, %L, %L, %L]::uuid[])',
                     :'live', :'carol_session', :'old', '00000000-0000-0000-0000-000000000000'),
              format('VALUES (%L::uuid), (%L::uuid), (%L::uuid)',
                     :'carol_session', :'old', '00000000-0000-0000-0000-000000000000'),
              'dead_sessions answers the revoked, expired and missing ones, not the live one');

SELECT api.prune_auth();
SELECT is((SELECT count(*)::int FROM auth_failures WHERE username = 'tap_erin'), 5,
          'prune_auth deletes failures older than 15 minutes and keeps recent ones');
SELECT is((SELECT count(*)::int FROM sessions WHERE id IN (:'old', :'live')), 1,
          'prune_auth deletes sessions expired more than a day ago and keeps live ones');

SELECT * FROM finish();
ROLLBACK;
