-- Authentication bookkeeping.
--
-- The server does the TOTP maths and the encryption of secrets; SQL does what
-- must be atomic across replicas. Every per-username function first takes
-- the transaction-scoped advisory lock hashtextextended('marquee.auth:' ||
-- username, 0), so two replicas cannot both accept the same code, and
-- counting failures cannot race.
--
-- Rate limit (docs/protocol.md, Auth): 5 refused codes for a username within a
-- sliding 15 minutes; then every attempt, right or wrong, is 'rate_limited'
-- until enough failures are 15 minutes old. Rate-limited attempts are not
-- recorded (they would extend the lock-out forever); a success clears the
-- count. Login and register return an outcome instead of raising: raising
-- would roll back the failure just recorded.

CREATE OR REPLACE FUNCTION internal.auth_begin(p_username text, p_ttl_seconds int)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    v_name text := lower(p_username);
BEGIN
    IF v_name IS NULL OR v_name !~ '^[a-z0-9_.-]{3,32}$' THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400',
            MESSAGE = 'A username is 3 to 32 characters of a-z, 0-9, _, . and -.';
    END IF;
    IF p_ttl_seconds IS NULL OR p_ttl_seconds <= 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'The session lifetime must be positive.';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('marquee.auth:' || v_name, 0));
    RETURN v_name;
END;
$$;

COMMENT ON FUNCTION internal.auth_begin(text, int) IS
    'Validates a username (BAD_REQUEST, before anything is recorded) and the session TTL, takes the per-username '
    'advisory lock for the rest of the transaction, and returns the lower-cased name.';

CREATE OR REPLACE FUNCTION internal.auth_retry_after(p_username text)
RETURNS int
LANGUAGE sql
STABLE
AS $$
    -- The 5th most recent failure within the window: once it is 15 minutes old fewer than 5 remain.
    -- No such row (fewer than 5 failures) gives null: not limited.
    SELECT greatest(1, ceil(extract(epoch FROM f.failed_at + interval '15 minutes' - now())))::int
      FROM auth_failures AS f
     WHERE f.username = p_username
       AND f.failed_at > now() - interval '15 minutes'
     ORDER BY f.failed_at DESC
    OFFSET 4
     LIMIT 1
$$;

COMMENT ON FUNCTION internal.auth_retry_after(text) IS
    'Seconds (rounded up, at least 1) until the username may try again, or null when it has fewer than 5 failures '
    'in the last 15 minutes.';

CREATE OR REPLACE FUNCTION internal.auth_start_session(p_user bigint, p_ttl_seconds int,
                                                       OUT session_id uuid, OUT expires_at timestamptz)
LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO sessions AS s (user_id, expires_at)
    VALUES (p_user, now() + make_interval(secs => p_ttl_seconds))
    RETURNING s.id, s.expires_at INTO session_id, expires_at;
END;
$$;

COMMENT ON FUNCTION internal.auth_start_session(bigint, int) IS
    'Creates a session expiring after the token TTL; shared by login and registration.';

CREATE OR REPLACE FUNCTION api.auth_user(p_username text)
RETURNS TABLE (user_id bigint, totp_secret bytea, last_step bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_name text := lower(p_username);
BEGIN
    IF v_name IS NULL THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('marquee.auth:' || v_name, 0));
    RETURN QUERY SELECT u.id, u.totp_secret, u.last_step FROM users AS u WHERE u.username = v_name;
END;
$$;

COMMENT ON FUNCTION api.auth_user(text) IS
    'The encrypted TOTP secret and last accepted step the server needs to check a login code; zero rows when no '
    'such user. Takes the per-username lock like the other auth functions (so it waits for a login in flight).';

CREATE OR REPLACE FUNCTION api.auth_login(p_username text, p_step bigint, p_ttl_seconds int)
RETURNS TABLE (outcome text, retry_after_s int, user_id bigint, session_id uuid, expires_at timestamptz)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_name    text;
    v_retry   int;
    v_user    bigint;
    v_last    bigint;
    v_session record;
BEGIN
    v_name := internal.auth_begin(p_username, p_ttl_seconds);

    v_retry := internal.auth_retry_after(v_name);
    IF v_retry IS NOT NULL THEN
        RETURN QUERY SELECT 'rate_limited'::text, v_retry, NULL::bigint, NULL::uuid, NULL::timestamptz;
        RETURN;
    END IF;

    -- NO KEY UPDATE: enough to change last_step, and it does not wait for the user's seat changes in flight
    -- (their foreign keys hold KEY SHARE locks on this row).
    SELECT u.id, u.last_step INTO v_user, v_last FROM users AS u WHERE u.username = v_name FOR NO KEY UPDATE;

    -- No such user, no code matched, or a replay of an accepted step (or an older one): a failure.
    IF v_user IS NULL OR p_step IS NULL OR p_step <= v_last THEN
        INSERT INTO auth_failures (username) VALUES (v_name);
        RETURN QUERY SELECT 'invalid'::text, NULL::int, NULL::bigint, NULL::uuid, NULL::timestamptz;
        RETURN;
    END IF;

    UPDATE users AS u SET last_step = p_step WHERE u.id = v_user;
    DELETE FROM auth_failures AS f WHERE f.username = v_name;
    SELECT * INTO v_session FROM internal.auth_start_session(v_user, p_ttl_seconds);
    RETURN QUERY SELECT 'ok'::text, NULL::int, v_user, v_session.session_id, v_session.expires_at;
END;
$$;

COMMENT ON FUNCTION api.auth_login(text, bigint, int) IS
    'Records the outcome of a login code the server checked. p_step is the TOTP time step the code matched (null: '
    'none). Outcomes: rate_limited (with retry_after_s; checked first, even for a right code), invalid (no such '
    'user, no match, or step <= last_step; recorded as a failure), ok (last_step = p_step, failures cleared, new '
    'session of p_ttl_seconds).';

CREATE OR REPLACE FUNCTION api.auth_register(p_username text, p_secret bytea, p_step bigint, p_ttl_seconds int)
RETURNS TABLE (outcome text, retry_after_s int, user_id bigint, session_id uuid, expires_at timestamptz)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_name    text;
    v_retry   int;
    v_user    bigint;
    v_session record;
BEGIN
    v_name := internal.auth_begin(p_username, p_ttl_seconds);

    v_retry := internal.auth_retry_after(v_name);
    IF v_retry IS NOT NULL THEN
        RETURN QUERY SELECT 'rate_limited'::text, v_retry, NULL::bigint, NULL::uuid, NULL::timestamptz;
        RETURN;
    END IF;

    -- No candidate on this connection: the protocol counts it like a wrong code.
    IF p_secret IS NULL THEN
        INSERT INTO auth_failures (username) VALUES (v_name);
        RETURN QUERY SELECT 'invalid'::text, NULL::int, NULL::bigint, NULL::uuid, NULL::timestamptz;
        RETURN;
    END IF;

    -- Somebody registered the name since this candidate was issued: the first to verify won. Not a failure.
    IF EXISTS (SELECT 1 FROM users AS u WHERE u.username = v_name) THEN
        RETURN QUERY SELECT 'taken'::text, NULL::int, NULL::bigint, NULL::uuid, NULL::timestamptz;
        RETURN;
    END IF;

    IF p_step IS NULL THEN
        INSERT INTO auth_failures (username) VALUES (v_name);
        RETURN QUERY SELECT 'invalid'::text, NULL::int, NULL::bigint, NULL::uuid, NULL::timestamptz;
        RETURN;
    END IF;

    INSERT INTO users AS u (username, totp_secret, last_step)
    VALUES (v_name, p_secret, p_step)
    RETURNING u.id INTO v_user;
    DELETE FROM auth_failures AS f WHERE f.username = v_name;
    SELECT * INTO v_session FROM internal.auth_start_session(v_user, p_ttl_seconds);
    RETURN QUERY SELECT 'ok'::text, NULL::int, v_user, v_session.session_id, v_session.expires_at;
END;
$$;

COMMENT ON FUNCTION api.auth_register(text, bytea, bigint, int) IS
    'Records the outcome of a registration code checked against this connection''s candidate secret (p_secret, '
    'encrypted; null when the connection has none). Outcomes in order: rate_limited; invalid when p_secret is null '
    '(recorded); taken when the username exists by now (not recorded); invalid when p_step is null (recorded); ok '
    '(user created with last_step = p_step, so the registration code cannot log in again, plus a session).';

CREATE OR REPLACE FUNCTION api.session_user(p_session uuid)
RETURNS TABLE (user_id bigint, username text, expires_at timestamptz)
LANGUAGE plpgsql
STABLE
SET plan_cache_mode = force_generic_plan
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    -- PL/pgSQL, not SQL: a SECURITY DEFINER SQL function is never inlined, so PostgreSQL would parse and plan its
    -- body on every call; here the plan is made once per session. Every logged-in connect runs this.
    RETURN QUERY
    SELECT u.id, u.username, s.expires_at
      FROM sessions AS s
      JOIN users AS u ON u.id = s.user_id
     WHERE s.id = p_session
       AND s.revoked_at IS NULL
       AND s.expires_at > now();
END;
$$;

COMMENT ON FUNCTION api.session_user(uuid) IS
    'The user of a live session (token check at connect, me); zero rows when it is missing, revoked or expired.';

CREATE OR REPLACE FUNCTION api.revoke_session(p_session uuid)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    UPDATE sessions AS s SET revoked_at = now() WHERE s.id = p_session AND s.revoked_at IS NULL;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- Delivered at commit to every replica's listener, which drops the session from its open connections.
    PERFORM pg_notify('marquee_sessions', p_session::text);
    RETURN true;
END;
$$;

COMMENT ON FUNCTION api.revoke_session(uuid) IS
    'logout: revokes a session and notifies channel marquee_sessions (payload: the session uuid) so every replica '
    'logs out its open connections at once. True when this call revoked it; false when missing or already revoked.';

CREATE OR REPLACE FUNCTION api.dead_sessions(p_sessions uuid[])
RETURNS SETOF uuid
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT DISTINCT q.id
      FROM unnest(p_sessions) AS q(id)
     WHERE q.id IS NOT NULL
       AND NOT EXISTS (SELECT 1
                         FROM sessions AS s
                        WHERE s.id = q.id AND s.revoked_at IS NULL AND s.expires_at > now())
$$;

COMMENT ON FUNCTION api.dead_sessions(uuid[]) IS
    'Of the given session ids, those revoked, expired or missing: the replicas'' periodic backstop in case a '
    'marquee_sessions notification was missed.';

CREATE OR REPLACE FUNCTION api.prune_auth()
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    DELETE FROM auth_failures AS f WHERE f.failed_at <= now() - interval '15 minutes';
    DELETE FROM sessions AS s WHERE s.expires_at < now() - interval '1 day';
END;
$$;

COMMENT ON FUNCTION api.prune_auth() IS
    'Housekeeping: deletes failures that no longer count (older than 15 minutes) and sessions expired more than a '
    'day ago (a missing session reads as dead, so nothing depends on them).';
