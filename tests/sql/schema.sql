-- The contract with the server (function signatures) and the constraints that keep seat rows consistent.
BEGIN;
\ir fixtures.psql
SELECT plan(39);

-- Signatures the Rust side is written against ---------------------------------------------------------------------

SELECT has_function('api', 'hold_seats', ARRAY['bigint', 'bigint', 'bigint[]'], 'api.hold_seats(user, screening, seats)');
SELECT has_function('api', 'release_seats', ARRAY['bigint', 'bigint', 'bigint[]'], 'api.release_seats(user, screening, seats)');
SELECT has_function('api', 'book_seats', ARRAY['bigint', 'bigint', 'bigint[]'], 'api.book_seats(user, screening, seats)');
SELECT has_function('api', 'cancel_booking', ARRAY['bigint', 'bigint'], 'api.cancel_booking(user, booking)');
SELECT has_function('api', 'get_bookings', ARRAY['bigint'], 'api.get_bookings(user)');
SELECT has_function('api', 'sweep_expired_holds', '{}'::name[], 'api.sweep_expired_holds()');
SELECT has_function('api', 'hall_snapshot', ARRAY['bigint'], 'api.hall_snapshot(screening)');
SELECT has_function('api', 'screening_hall', ARRAY['bigint'], 'api.screening_hall(screening)');
SELECT has_function('api', 'get_cinemas', '{}'::name[], 'api.get_cinemas()');
SELECT has_function('api', 'get_screenings', ARRAY['bigint', 'timestamp with time zone', 'timestamp with time zone'],
                    'api.get_screenings(cinema, from, to)');
SELECT has_function('api', 'auth_user', ARRAY['text'], 'api.auth_user(username)');
SELECT has_function('api', 'auth_login', ARRAY['text', 'bigint', 'integer', 'inet'], 'api.auth_login(username, step, ttl, address)');
SELECT has_function('api', 'auth_register', ARRAY['text', 'bytea', 'bigint', 'integer', 'inet'],
                    'api.auth_register(username, secret, step, ttl, address)');
SELECT has_function('api', 'session_user', ARRAY['uuid'], 'api.session_user(session)');
SELECT has_function('api', 'revoke_session', ARRAY['uuid'], 'api.revoke_session(session)');
SELECT has_function('api', 'dead_sessions', ARRAY['uuid[]'], 'api.dead_sessions(sessions)');
SELECT has_function('api', 'prune_auth', '{}'::name[], 'api.prune_auth()');
SELECT function_returns('api', 'sweep_expired_holds', '{}'::name[], 'integer', 'the sweep returns how many seats it freed');
SELECT function_returns('api', 'revoke_session', ARRAY['uuid'], 'boolean', 'revoke_session returns a boolean');
SELECT function_returns('api', 'dead_sessions', ARRAY['uuid[]'], 'setof uuid', 'dead_sessions returns a set of uuids');

-- Result columns, by name and type, as the server reads them.
CREATE FUNCTION pg_temp.result_columns(p_fn regprocedure)
RETURNS text
LANGUAGE sql
AS $$
    SELECT string_agg(a.name || ' ' || format_type(a.type, NULL), ', ' ORDER BY a.ord)
      FROM pg_proc AS p,
           unnest(p.proargnames, p.proallargtypes::oid[], p.proargmodes::text[]) WITH ORDINALITY AS a(name, type, mode, ord)
     WHERE p.oid = p_fn AND a.mode = 't'
$$;
SELECT is(pg_temp.result_columns('api.hold_seats(bigint, bigint, bigint[])'),
          'expires_at timestamp with time zone, version bigint', 'hold_seats result columns');
SELECT is(pg_temp.result_columns('api.release_seats(bigint, bigint, bigint[])'),
          'seat_ids bigint[], version bigint', 'release_seats result columns');
SELECT is(pg_temp.result_columns('api.book_seats(bigint, bigint, bigint[])'),
          'booking_id bigint, screening_id bigint, seat_ids bigint[], total integer, currency text, status text, '
          'created_at timestamp with time zone, version bigint', 'book_seats result columns');
SELECT is(pg_temp.result_columns('api.cancel_booking(bigint, bigint)'),
          pg_temp.result_columns('api.book_seats(bigint, bigint, bigint[])'),
          'cancel_booking answers the same columns as book_seats');
SELECT is(pg_temp.result_columns('api.get_bookings(bigint)'),
          'booking_id bigint, screening_id bigint, seat_ids bigint[], total integer, currency text, status text, '
          'created_at timestamp with time zone', 'get_bookings result columns');
SELECT is(pg_temp.result_columns('api.hall_snapshot(bigint)'),
          'screening_id bigint, hall_id bigint, hall_name text, version bigint, seat_id bigint, row_label text, '
          'number integer, x integer, y integer, kind text, status text, user_id bigint', 'hall_snapshot result columns');
SELECT is(pg_temp.result_columns('api.get_cinemas()'),
          'id bigint, name text, city text, address text, timezone text', 'get_cinemas result columns');
SELECT is(pg_temp.result_columns('api.get_screenings(bigint, timestamptz, timestamptz)'),
          'id bigint, cinema_id bigint, hall_id bigint, hall_name text, film_id bigint, title text, duration_min integer, '
          'age_rating text, starts_at timestamp with time zone, price integer, currency text, seats_total integer, '
          'seats_free integer, prices jsonb', 'get_screenings result columns (prices: version 1.1)');
SELECT is(pg_temp.result_columns('api.auth_user(text)'), 'user_id bigint, totp_secret bytea, last_step bigint',
          'auth_user result columns');
SELECT is(pg_temp.result_columns('api.auth_login(text, bigint, int, inet)'),
          'outcome text, retry_after_s integer, user_id bigint, session_id uuid, expires_at timestamp with time zone',
          'auth_login result columns');
SELECT is(pg_temp.result_columns('api.auth_register(text, bytea, bigint, int, inet)'),
          pg_temp.result_columns('api.auth_login(text, bigint, int, inet)'), 'auth_register answers like auth_login');
SELECT is(pg_temp.result_columns('api.session_user(uuid)'), 'user_id bigint, username text, expires_at timestamp with time zone',
          'session_user result columns');

-- Seat row consistency -------------------------------------------------------------------------------------------

SELECT pg_temp.make_user('tap_alice') AS alice \gset
SELECT pg_temp.make_screening(1, 2) AS scr \gset
SELECT pg_temp.seat(:scr, 'A1') AS a1 \gset
SELECT throws_ok(format('UPDATE seat_states SET status = ''held'' WHERE screening_id = %s AND seat_id = %s', :scr, :a1),
                 '23514', NULL, 'a held seat needs a holder and an expiry');
SELECT throws_ok(format('UPDATE seat_states SET status = ''booked'', user_id = %s WHERE screening_id = %s AND seat_id = %s',
                        :alice, :scr, :a1),
                 '23514', NULL, 'a booked seat needs a booking');
SELECT throws_ok(format('UPDATE seat_states SET user_id = %s WHERE screening_id = %s AND seat_id = %s', :alice, :scr, :a1),
                 '23514', NULL, 'a free seat has no user');
SELECT throws_ok(format('UPDATE seat_states SET status = ''sold'' WHERE screening_id = %s AND seat_id = %s', :scr, :a1),
                 '23514', NULL, 'status is one of free, held, booked, blocked');
UPDATE seat_states SET expired_holder = :alice WHERE screening_id = :scr AND seat_id = :a1;
UPDATE seat_states SET status = 'blocked', user_id = NULL, hold_expires_at = NULL
 WHERE screening_id = :scr AND seat_id = :a1;
SELECT is((SELECT expired_holder FROM seat_states WHERE screening_id = :scr AND seat_id = :a1), NULL,
          'a DBA''s plain block works on a seat whose hold had expired: expired_holder is forgotten');
SELECT throws_ok($$INSERT INTO users (username, totp_secret, last_step) VALUES ('Bad Name', '\x00', 0)$$,
                 '23514', NULL, 'usernames are 3-32 lower-case characters of a-z 0-9 _ . -');
SELECT is((SELECT count(*)::int FROM settings WHERE key IN ('hold_ttl_seconds', 'seat_limit') AND value > 0), 2,
          'the settings hold_ttl_seconds and seat_limit exist and are positive');

SELECT * FROM finish();
ROLLBACK;
