-- The live state of every seat of every screening.
--
-- One row per (screening, seat), created free when the screening is created
-- (trigger in sql/30_catalogue.sql). Every change to a row's (status, user_id)
-- bumps screenings.version and notifies channel hall_<hall_id>
-- (sql/20_notify.sql), whether it comes from the api, the sweep, an admin
-- function or a DBA's plain UPDATE.
--
-- The CHECK constraints tie the columns to the status, so no code path (nor a
-- DBA) can leave a half-changed seat behind.

CREATE TABLE seat_states (
    screening_id    bigint      NOT NULL REFERENCES screenings (id) ON DELETE CASCADE,
    seat_id         bigint      NOT NULL REFERENCES seats (id),
    status          text        NOT NULL DEFAULT 'free'
                    CHECK (status IN ('free', 'held', 'booked', 'blocked')),
    user_id         bigint      REFERENCES users (id),
    hold_expires_at timestamptz,
    booking_id      bigint,
    expired_holder  bigint      REFERENCES users (id),
    PRIMARY KEY (screening_id, seat_id),

    CONSTRAINT seat_states_held_shape CHECK (
        status <> 'held'
        OR (user_id IS NOT NULL AND hold_expires_at IS NOT NULL AND booking_id IS NULL)),
    CONSTRAINT seat_states_booked_shape CHECK (
        status <> 'booked'
        OR (user_id IS NOT NULL AND booking_id IS NOT NULL AND hold_expires_at IS NULL)),
    CONSTRAINT seat_states_free_blocked_shape CHECK (
        status NOT IN ('free', 'blocked')
        OR (user_id IS NULL AND hold_expires_at IS NULL AND booking_id IS NULL)),
    CONSTRAINT seat_states_expired_holder_only_free CHECK (
        status = 'free' OR expired_holder IS NULL)
);

COMMENT ON TABLE seat_states IS
    'Live seat state per screening. DBAs may UPDATE it directly; every change notifies subscribers like an api call.';
COMMENT ON COLUMN seat_states.screening_id IS 'The screening; its rows go when the screening is deleted.';
COMMENT ON COLUMN seat_states.seat_id IS 'A seat of the screening''s hall.';
COMMENT ON COLUMN seat_states.status IS
    'free, held, booked or blocked (the wire statuses). A held row whose hold_expires_at has passed counts as free '
    'everywhere, even before api.sweep_expired_holds rewrites it.';
COMMENT ON COLUMN seat_states.user_id IS 'The holder (held) or booker (booked); null when free or blocked.';
COMMENT ON COLUMN seat_states.hold_expires_at IS 'When a hold lapses (held only); renewing a hold moves it.';
COMMENT ON COLUMN seat_states.booking_id IS 'The live booking that owns the seat (booked only).';
COMMENT ON COLUMN seat_states.expired_holder IS
    'On a free seat: the user whose hold expired into it, so book_seats can answer HOLD_EXPIRED rather than '
    'SEAT_UNAVAILABLE; cleared when anyone takes the seat.';

CREATE INDEX seat_states_hold_expiry_idx ON seat_states (hold_expires_at) WHERE status = 'held';
COMMENT ON INDEX seat_states_hold_expiry_idx IS 'api.sweep_expired_holds finds lapsed holds without scanning every seat.';

CREATE INDEX seat_states_screening_user_idx ON seat_states (screening_id, user_id) WHERE user_id IS NOT NULL;
COMMENT ON INDEX seat_states_screening_user_idx IS
    'The per-user seat limit in api.hold_seats counts a user''s held and booked seats of one screening.';

CREATE INDEX seat_states_seat_id_idx ON seat_states (seat_id);
COMMENT ON INDEX seat_states_seat_id_idx IS 'Foreign key checks when seats are deleted; adding seats to halls with screenings.';
