-- Abuse limits (PROTOCOL.md "Abuse limits", version 1.1): registrations per
-- client address and wrong-code limits per name and address, per name, per
-- address. The rules are in sql/50_auth.sql; this file holds their tables and
-- settings.

-- registrations_per_hour may be 0 (the limit is off); every other setting stays positive. The constraint is
-- replaced under the same name, so a DBA's \d settings still explains it.
ALTER TABLE settings DROP CONSTRAINT settings_value_positive;
ALTER TABLE settings ADD CONSTRAINT settings_value_positive
    CHECK (value > 0 OR (key = 'registrations_per_hour' AND value = 0));
COMMENT ON CONSTRAINT settings_value_positive ON settings IS
    'Every setting is a positive count, except registrations_per_hour, where 0 turns the limit off.';
COMMENT ON COLUMN settings.value IS
    'Integer value: a positive count (seconds, seats, attempts); only registrations_per_hour may also be 0 (off).';

INSERT INTO settings (key, value) VALUES
    ('registrations_per_hour', 20),            -- new users one client address may register per hour; 0 = off
    ('login_failures_per_name_address', 5),    -- wrong codes for one username from one address, 15 minutes
    ('login_failures_per_name', 20),           -- wrong codes for one username from all addresses, 15 minutes
    ('login_failures_per_address', 50)         -- wrong codes from one address over all usernames, 15 minutes
ON CONFLICT (key) DO NOTHING;

ALTER TABLE auth_failures ADD COLUMN address inet;
COMMENT ON COLUMN auth_failures.address IS
    'The client address the code came from (the TCP peer, or X-Forwarded-For behind a trusted proxy); null for '
    'rows from before version 1.1 and for calls that name no address, which count together as one address.';
COMMENT ON TABLE auth_failures IS
    'One row per refused code; counted in a sliding 15 minutes per username and address, per username, and per '
    'address (settings login_failures_*; api.auth_login, api.auth_register).';

CREATE INDEX auth_failures_address_failed_at_idx ON auth_failures (address, failed_at);
COMMENT ON INDEX auth_failures_address_failed_at_idx IS
    'Counting an address''s recent failures over all usernames on every login attempt.';

CREATE TABLE registrations (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       bigint      REFERENCES users (id) ON DELETE SET NULL,
    address       inet,
    registered_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE registrations IS
    'One row per user registered, with the client address it came from: registrations_per_hour limits how many '
    'users one address registers in an hour. api.prune_auth deletes rows older than an hour.';
COMMENT ON COLUMN registrations.id IS 'Surrogate key so rows can be addressed and replicated.';
COMMENT ON COLUMN registrations.user_id IS
    'The user registered; set to null when the user is deleted, so the registration still counts for its hour.';
COMMENT ON COLUMN registrations.address IS
    'The client address that registered (null when the caller named none; those count together as one address).';
COMMENT ON COLUMN registrations.registered_at IS 'When the user was created; rows older than an hour no longer count.';

CREATE INDEX registrations_address_registered_at_idx ON registrations (address, registered_at);
COMMENT ON INDEX registrations_address_registered_at_idx IS
    'Counting an address''s registrations of the last hour at every auth_start for a new name.';
CREATE INDEX registrations_registered_at_idx ON registrations (registered_at);
COMMENT ON INDEX registrations_registered_at_idx IS 'api.prune_auth deletes old rows by time.';
CREATE INDEX registrations_user_id_idx ON registrations (user_id);
COMMENT ON INDEX registrations_user_id_idx IS 'The foreign key: deleting a user finds its registration.';

-- The auth functions gain the client address (sql/50_auth.sql creates the new signatures).
DROP FUNCTION IF EXISTS api.auth_login(text, bigint, int);
DROP FUNCTION IF EXISTS api.auth_register(text, bytea, bigint, int);
DROP FUNCTION IF EXISTS internal.auth_retry_after(text);
