-- Authentication bookkeeping.
--
-- The server does the TOTP maths and the encryption of secrets; SQL does what
-- must be atomic across replicas. Every per-username function first takes
-- the transaction-scoped advisory lock hashtextextended('marquee.auth:' ||
-- username, 0), so two replicas cannot both accept the same code, and
-- counting failures cannot race.
--
-- Wrong-code limits (docs/protocol.md, Auth and "Abuse limits"): refused codes
-- are counted in a sliding 15 minutes per username and client address
-- (login_failures_per_name_address, default 5), per username from all
-- addresses (login_failures_per_name, 20) and per address over all usernames
-- (login_failures_per_address, 50). Once any count is reached, every attempt
-- it covers, right or wrong, is 'rate_limited' until enough failures are 15
-- minutes old. Rate-limited attempts are not recorded (they would extend the
-- lock-out forever); a success clears the failures of that name from that
-- address (a stranger's failures elsewhere keep counting). The per-username
-- count covers only failures since the user registered, and registering
-- ignores it, so strangers cannot lock a name before its owner takes it.
-- Login and register return an outcome instead of raising: raising would
-- roll back the failure just recorded.
--
-- Registrations (registrations_per_hour, default 20, 0 = off): an address
-- that registered that many users in the last hour gets 'rate_limited' for
-- new names. Per-address counting takes a second advisory lock,
-- 'marquee.addr:' || address, always after the username's, so concurrent
-- attempts from one address cannot both slip under a limit.
--
-- A null address (a DBA calling from psql, rows from before version 1.1)
-- counts as one address of its own.

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

CREATE OR REPLACE FUNCTION internal.auth_lock_address(p_address inet)
RETURNS void
LANGUAGE sql
AS $$
    SELECT pg_advisory_xact_lock(hashtextextended('marquee.addr:' || coalesce(host(p_address), ''), 0))
$$;

COMMENT ON FUNCTION internal.auth_lock_address(inet) IS
    'Takes the per-address advisory lock for the rest of the transaction (after any per-username lock, never '
    'before, so the two cannot deadlock).';

CREATE OR REPLACE FUNCTION internal.window_retry_after(p_times timestamptz[], p_limit int, p_window interval)
RETURNS int
LANGUAGE sql
STABLE
AS $$
    -- Limited while p_limit events lie in the window: until the p_limit-th most recent one leaves it.
    -- Fewer events (no such element) give null: not limited.
    SELECT greatest(1, ceil(extract(epoch FROM t.at + p_window - now())))::int
      FROM (SELECT u.at FROM unnest(p_times) AS u(at) ORDER BY u.at DESC OFFSET p_limit - 1 LIMIT 1) AS t
$$;

COMMENT ON FUNCTION internal.window_retry_after(timestamptz[], int, interval) IS
    'Sliding-window limit: seconds (rounded up, at least 1) until fewer than p_limit of p_times lie within '
    'p_window of now, or null when fewer than p_limit do already. p_times must hold only the window''s events.';

CREATE OR REPLACE FUNCTION internal.auth_retry_after(p_username text, p_address inet, p_user_since timestamptz)
RETURNS int
LANGUAGE plpgsql
STABLE
AS $$
DECLARE
    v_since      timestamptz := now() - interval '15 minutes';
    v_name_addr  timestamptz[];
    v_name       timestamptz[];
    v_addr       timestamptz[];
BEGIN
    SELECT coalesce(array_agg(f.failed_at) FILTER (WHERE f.address IS NOT DISTINCT FROM p_address), '{}'),
           coalesce(array_agg(f.failed_at) FILTER (WHERE f.failed_at >= p_user_since), '{}')
      INTO v_name_addr, v_name
      FROM auth_failures AS f
     WHERE f.username = p_username
       AND f.failed_at > v_since;
    -- Two branches rather than IS NOT DISTINCT FROM, which no index serves.
    IF p_address IS NULL THEN
        SELECT coalesce(array_agg(f.failed_at), '{}') INTO v_addr
          FROM auth_failures AS f
         WHERE f.address IS NULL AND f.failed_at > v_since;
    ELSE
        SELECT coalesce(array_agg(f.failed_at), '{}') INTO v_addr
          FROM auth_failures AS f
         WHERE f.address = p_address AND f.failed_at > v_since;
    END IF;
    -- Every limit that binds must have passed: the latest of their ends.
    RETURN (SELECT max(r)
              FROM unnest(ARRAY[
                       internal.window_retry_after(v_name_addr, internal.setting('login_failures_per_name_address'),
                                                   interval '15 minutes'),
                       CASE WHEN p_user_since IS NOT NULL THEN
                           internal.window_retry_after(v_name, internal.setting('login_failures_per_name'),
                                                       interval '15 minutes')
                       END,
                       internal.window_retry_after(v_addr, internal.setting('login_failures_per_address'),
                                                   interval '15 minutes')]) AS r);
END;
$$;

COMMENT ON FUNCTION internal.auth_retry_after(text, inet, timestamptz) IS
    'Seconds (rounded up, at least 1) until a code for p_username from p_address may be tried again, or null when '
    'no wrong-code limit binds: per name and address, per address, and (when p_user_since is not null: the user''s '
    'registration time) per name, counting only failures since then.';

CREATE OR REPLACE FUNCTION internal.registration_retry_after(p_address inet)
RETURNS int
LANGUAGE plpgsql
STABLE
AS $$
DECLARE
    v_limit int := internal.setting('registrations_per_hour');
BEGIN
    IF v_limit = 0 THEN
        RETURN NULL;
    END IF;
    -- Two branches rather than IS NOT DISTINCT FROM, which no index serves.
    IF p_address IS NULL THEN
        RETURN internal.window_retry_after(
            ARRAY(SELECT r.registered_at FROM registrations AS r
                   WHERE r.address IS NULL AND r.registered_at > now() - interval '1 hour'),
            v_limit, interval '1 hour');
    END IF;
    RETURN internal.window_retry_after(
        ARRAY(SELECT r.registered_at FROM registrations AS r
               WHERE r.address = p_address AND r.registered_at > now() - interval '1 hour'),
        v_limit, interval '1 hour');
END;
$$;

COMMENT ON FUNCTION internal.registration_retry_after(inet) IS
    'Seconds (rounded up, at least 1) until p_address may register another user, or null when it registered fewer '
    'than registrations_per_hour users in the last hour (or the setting is 0: off).';

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

CREATE OR REPLACE FUNCTION api.auth_login(p_username text, p_step bigint, p_ttl_seconds int,
                                          p_address inet DEFAULT NULL)
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
    v_since   timestamptz;
    v_session record;
BEGIN
    v_name := internal.auth_begin(p_username, p_ttl_seconds);
    PERFORM internal.auth_lock_address(p_address);

    -- NO KEY UPDATE: enough to change last_step, and it does not wait for the user's seat changes in flight
    -- (their foreign keys hold KEY SHARE locks on this row).
    SELECT u.id, u.last_step, u.created_at INTO v_user, v_last, v_since
      FROM users AS u WHERE u.username = v_name FOR NO KEY UPDATE;

    v_retry := internal.auth_retry_after(v_name, p_address, v_since);
    IF v_retry IS NOT NULL THEN
        RETURN QUERY SELECT 'rate_limited'::text, v_retry, NULL::bigint, NULL::uuid, NULL::timestamptz;
        RETURN;
    END IF;

    -- No such user, no code matched, or a replay of an accepted step (or an older one): a failure.
    IF v_user IS NULL OR p_step IS NULL OR p_step <= v_last THEN
        INSERT INTO auth_failures (username, address) VALUES (v_name, p_address);
        RETURN QUERY SELECT 'invalid'::text, NULL::int, NULL::bigint, NULL::uuid, NULL::timestamptz;
        RETURN;
    END IF;

    UPDATE users AS u SET last_step = p_step WHERE u.id = v_user;
    DELETE FROM auth_failures AS f WHERE f.username = v_name AND f.address IS NOT DISTINCT FROM p_address;
    SELECT * INTO v_session FROM internal.auth_start_session(v_user, p_ttl_seconds);
    RETURN QUERY SELECT 'ok'::text, NULL::int, v_user, v_session.session_id, v_session.expires_at;
END;
$$;

COMMENT ON FUNCTION api.auth_login(text, bigint, int, inet) IS
    'Records the outcome of a login code the server checked, sent from client address p_address. p_step is the '
    'TOTP time step the code matched (null: none). Outcomes: rate_limited (with retry_after_s; checked first, even '
    'for a right code, against the limits per name and address, per name and per address), invalid (no such user, '
    'no match, or step <= last_step; recorded as a failure), ok (last_step = p_step, this address''s failures for '
    'the name cleared, new session of p_ttl_seconds).';

CREATE OR REPLACE FUNCTION api.auth_register(p_username text, p_secret bytea, p_step bigint, p_ttl_seconds int,
                                             p_address inet DEFAULT NULL)
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
    PERFORM internal.auth_lock_address(p_address);

    -- Not the per-name count: failures for a name nobody owns yet must not keep its owner from taking it.
    v_retry := internal.auth_retry_after(v_name, p_address, NULL);
    IF v_retry IS NOT NULL THEN
        RETURN QUERY SELECT 'rate_limited'::text, v_retry, NULL::bigint, NULL::uuid, NULL::timestamptz;
        RETURN;
    END IF;

    -- No candidate on this connection: the protocol counts it like a wrong code.
    IF p_secret IS NULL THEN
        INSERT INTO auth_failures (username, address) VALUES (v_name, p_address);
        RETURN QUERY SELECT 'invalid'::text, NULL::int, NULL::bigint, NULL::uuid, NULL::timestamptz;
        RETURN;
    END IF;

    -- The address registered its quota this hour (checked again here: candidates handed out before it was
    -- reached, on several connections, must not all turn into users).
    v_retry := internal.registration_retry_after(p_address);
    IF v_retry IS NOT NULL THEN
        RETURN QUERY SELECT 'registration_limited'::text, v_retry, NULL::bigint, NULL::uuid, NULL::timestamptz;
        RETURN;
    END IF;

    -- Somebody registered the name since this candidate was issued: the first to verify won. Not a failure.
    IF EXISTS (SELECT 1 FROM users AS u WHERE u.username = v_name) THEN
        RETURN QUERY SELECT 'taken'::text, NULL::int, NULL::bigint, NULL::uuid, NULL::timestamptz;
        RETURN;
    END IF;

    IF p_step IS NULL THEN
        INSERT INTO auth_failures (username, address) VALUES (v_name, p_address);
        RETURN QUERY SELECT 'invalid'::text, NULL::int, NULL::bigint, NULL::uuid, NULL::timestamptz;
        RETURN;
    END IF;

    INSERT INTO users AS u (username, totp_secret, last_step)
    VALUES (v_name, p_secret, p_step)
    RETURNING u.id INTO v_user;
    INSERT INTO registrations (user_id, address) VALUES (v_user, p_address);
    DELETE FROM auth_failures AS f WHERE f.username = v_name AND f.address IS NOT DISTINCT FROM p_address;
    SELECT * INTO v_session FROM internal.auth_start_session(v_user, p_ttl_seconds);
    RETURN QUERY SELECT 'ok'::text, NULL::int, v_user, v_session.session_id, v_session.expires_at;
END;
$$;

COMMENT ON FUNCTION api.auth_register(text, bytea, bigint, int, inet) IS
    'Records the outcome of a registration code checked against this connection''s candidate secret (p_secret, '
    'encrypted; null when the connection has none), sent from client address p_address. Outcomes in order: '
    'rate_limited (wrong codes per name and address or per address); invalid when p_secret is null (recorded); '
    'registration_limited (with retry_after_s: registrations_per_hour reached by the address); taken when the username exists by now (not '
    'recorded); invalid when p_step is null (recorded); ok (user created with last_step = p_step, so the '
    'registration code cannot log in again, the registration recorded with its address, plus a session).';

CREATE OR REPLACE FUNCTION api.registration_retry_after(p_address inet)
RETURNS int
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT internal.registration_retry_after(p_address)
$$;

COMMENT ON FUNCTION api.registration_retry_after(inet) IS
    'auth_start for a name with no user: null when p_address may register another user, else the seconds until '
    'it may (RATE_LIMITED with retry_after_s). api.auth_register checks the same limit again, under a lock.';

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
    DELETE FROM registrations AS r WHERE r.registered_at <= now() - interval '1 hour';
    DELETE FROM sessions AS s WHERE s.expires_at < now() - interval '1 day';
END;
$$;

COMMENT ON FUNCTION api.prune_auth() IS
    'Housekeeping: deletes failures and registrations that no longer count (older than 15 minutes, an hour) and '
    'sessions expired more than a day ago (a missing session reads as dead, so nothing depends on them).';
