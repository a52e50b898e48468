-- Users, login sessions and the failed-code log for rate limiting.
--
-- The server does the TOTP maths and encrypts the secret; SQL keeps the
-- bookkeeping that must be atomic across replicas (last accepted time step,
-- failure counting, session revocation).

CREATE TABLE users (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username    text        NOT NULL UNIQUE CHECK (username ~ '^[a-z0-9_.-]{3,32}$'),
    totp_secret bytea       NOT NULL,
    last_step   bigint      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE users IS 'A registered user; authenticates with a TOTP code only.';
COMMENT ON COLUMN users.id IS 'Surrogate key; the user id on the wire and in seat_states.user_id.';
COMMENT ON COLUMN users.username IS
    'Login name, already lower-cased by the server; the check is the protocol''s rule (3-32 of a-z 0-9 _ . -).';
COMMENT ON COLUMN users.totp_secret IS
    'TOTP secret encrypted by the server (TOTP_KEY); SQL never sees the plain secret.';
COMMENT ON COLUMN users.last_step IS
    'Last accepted TOTP time step (unix time / 30); a code for this step or an earlier one is refused, so a code works once.';
COMMENT ON COLUMN users.created_at IS 'Registration time, for support.';

CREATE TABLE sessions (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    CONSTRAINT sessions_expires_after_created CHECK (expires_at > created_at)
);

COMMENT ON TABLE sessions IS 'A login; the JWT carries its id so logout can revoke it everywhere.';
COMMENT ON COLUMN sessions.id IS 'Random id (uuid, not a sequence) because it is embedded in tokens and must not be guessable.';
COMMENT ON COLUMN sessions.user_id IS 'Who logged in.';
COMMENT ON COLUMN sessions.created_at IS 'Login time.';
COMMENT ON COLUMN sessions.expires_at IS 'The token''s expiry; after it the session is dead even if not revoked.';
COMMENT ON COLUMN sessions.revoked_at IS 'Set by logout (api.revoke_session); null while the session is live.';

CREATE INDEX sessions_user_id_idx ON sessions (user_id);
COMMENT ON INDEX sessions_user_id_idx IS 'Foreign key lookups, and listing a user''s sessions for support.';
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);
COMMENT ON INDEX sessions_expires_at_idx IS 'api.prune_auth deletes long-expired sessions by expiry.';

CREATE TABLE auth_failures (
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username  text        NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE auth_failures IS
    'One row per refused code; 5 within a sliding 15 minutes rate-limit that username (api.auth_login).';
COMMENT ON COLUMN auth_failures.id IS 'Surrogate key so rows can be addressed and replicated.';
COMMENT ON COLUMN auth_failures.username IS
    'The name tried, whether or not such a user exists (guessing unknown names is limited too); no foreign key for that reason.';
COMMENT ON COLUMN auth_failures.failed_at IS 'When the code was refused; rows older than 15 minutes no longer count.';

CREATE INDEX auth_failures_username_failed_at_idx ON auth_failures (username, failed_at);
COMMENT ON INDEX auth_failures_username_failed_at_idx IS 'Counting a username''s recent failures on every login attempt.';
CREATE INDEX auth_failures_failed_at_idx ON auth_failures (failed_at);
COMMENT ON INDEX auth_failures_failed_at_idx IS 'api.prune_auth deletes old failures by time.';
