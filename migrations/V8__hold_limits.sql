-- Hold limits across screenings and hold lifetime (abuse limits, docs/protocol.md "Abuse limits").
--
--   user_hold_limit   a user's live holds over all screenings together (bookings do not count); default 20.
--   max_hold_seconds  renewing never moves a seat's expiry past the moment its holder took it plus this; 1800.
--
-- held_at is that moment: set when a seat becomes held by a user (free, lapsed, or another user's), kept when the
-- same user renews a live hold. Only read while the row is held (the api clears it otherwise); null on a hold a
-- DBA wrote by hand, whose cap then counts from its next renewal.

INSERT INTO settings (key, value) VALUES
    ('user_hold_limit', 20),
    ('max_hold_seconds', 1800);

ALTER TABLE seat_states ADD COLUMN held_at timestamptz;

COMMENT ON COLUMN seat_states.held_at IS
    'When the current holder took this held seat (renewals keep it): hold_expires_at never passes it plus '
    'setting max_hold_seconds. Read only while held.';

-- api.hold_seats counts a user's live holds over all screenings on every hold; partial, so bookings and free
-- rows (the bulk of the table) are not in it.
CREATE INDEX seat_states_user_holds_idx ON seat_states (user_id) WHERE status = 'held';

COMMENT ON INDEX seat_states_user_holds_idx IS
    'user_hold_limit in api.hold_seats: a user''s held seats over all screenings.';
