-- Run-time settings that DBAs change without a restart.
--
-- Every api function reads the values it needs on every call, so
-- admin.set_hold_ttl / admin.set_seat_limit take effect on the next request
-- on every replica.

CREATE TABLE settings (
    key   text PRIMARY KEY,
    value int  NOT NULL,
    CONSTRAINT settings_value_positive CHECK (value > 0)
);

COMMENT ON TABLE settings IS
    'Business settings read on every call (no caching), so a change applies to the next request everywhere.';
COMMENT ON COLUMN settings.key IS
    'Setting name, e.g. hold_ttl_seconds or seat_limit. Change values through admin.set_* which validate them.';
COMMENT ON COLUMN settings.value IS
    'Integer value; every current setting is a positive count (seconds or seats), hence the check.';

INSERT INTO settings (key, value) VALUES
    ('hold_ttl_seconds', 600),  -- a hold lasts 10 minutes (PROTOCOL.md)
    ('seat_limit', 10);         -- seats one user may hold or have booked per screening
