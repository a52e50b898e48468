-- Bookings and the seats they own.
--
-- booking_seats keeps every seat a booking ever had (cancelled ones become
-- inactive), and its partial unique index guarantees that a seat of a
-- screening is in at most one live booking, whatever the interleaving of
-- transactions: the last line of defence behind the row locks in
-- api.book_seats.

CREATE TABLE bookings (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      bigint      NOT NULL REFERENCES users (id),
    screening_id bigint      NOT NULL REFERENCES screenings (id),
    total        int         NOT NULL CHECK (total >= 0),
    currency     text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status       text        NOT NULL DEFAULT 'confirmed' CHECK (status IN ('confirmed', 'cancelled')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    cancelled_at timestamptz,
    CONSTRAINT bookings_cancelled_at_iff_cancelled CHECK ((status = 'cancelled') = (cancelled_at IS NOT NULL)),
    CONSTRAINT bookings_id_screening_key UNIQUE (id, screening_id)
);

COMMENT ON TABLE bookings IS 'A confirmed (or later cancelled) purchase of seats of one screening.';
COMMENT ON COLUMN bookings.id IS 'Surrogate key; the booking id on the wire.';
COMMENT ON COLUMN bookings.user_id IS 'Who booked; only they may see or cancel it.';
COMMENT ON COLUMN bookings.screening_id IS 'The screening booked.';
COMMENT ON COLUMN bookings.total IS 'Price paid in minor units: the screening''s price at booking time times the seats.';
COMMENT ON COLUMN bookings.currency IS 'ISO 4217 code of total, copied from the screening at booking time.';
COMMENT ON COLUMN bookings.status IS 'confirmed, or cancelled by the user before the screening started.';
COMMENT ON COLUMN bookings.created_at IS 'Booking time; get_bookings lists newest first.';
COMMENT ON COLUMN bookings.cancelled_at IS 'When it was cancelled; set exactly when status is cancelled.';
COMMENT ON CONSTRAINT bookings_id_screening_key ON bookings IS
    'Target of booking_seats'' composite foreign key, so a booking''s seats are always of its own screening.';

CREATE INDEX bookings_user_created_idx ON bookings (user_id, created_at DESC, id DESC);
COMMENT ON INDEX bookings_user_created_idx IS 'api.get_bookings: a user''s bookings newest first.';
CREATE INDEX bookings_screening_id_idx ON bookings (screening_id);
COMMENT ON INDEX bookings_screening_id_idx IS 'Foreign key lookups and per-screening reports.';

CREATE TABLE booking_seats (
    booking_id   bigint  NOT NULL,
    screening_id bigint  NOT NULL,
    seat_id      bigint  NOT NULL,
    active       boolean NOT NULL DEFAULT true,
    PRIMARY KEY (booking_id, seat_id),
    FOREIGN KEY (booking_id, screening_id) REFERENCES bookings (id, screening_id),
    FOREIGN KEY (screening_id, seat_id) REFERENCES seat_states (screening_id, seat_id)
);

COMMENT ON TABLE booking_seats IS 'The seats of each booking, kept after cancellation (inactive) for the record.';
COMMENT ON COLUMN booking_seats.booking_id IS 'The booking.';
COMMENT ON COLUMN booking_seats.screening_id IS
    'Copy of the booking''s screening (enforced by the composite foreign key) so the unique index below can see it.';
COMMENT ON COLUMN booking_seats.seat_id IS 'A seat of that screening''s hall.';
COMMENT ON COLUMN booking_seats.active IS 'True while the booking holds the seat; false once cancelled.';

CREATE UNIQUE INDEX booking_seats_live_seat_key ON booking_seats (screening_id, seat_id) WHERE active;
COMMENT ON INDEX booking_seats_live_seat_key IS
    'No seat can be in two live bookings, under any interleaving of transactions.';

-- seat_states.booking_id was created before bookings existed (V5).
ALTER TABLE seat_states
    ADD CONSTRAINT seat_states_booking_id_fkey FOREIGN KEY (booking_id) REFERENCES bookings (id);
CREATE INDEX seat_states_booking_id_idx ON seat_states (booking_id) WHERE booking_id IS NOT NULL;
COMMENT ON INDEX seat_states_booking_id_idx IS 'api.cancel_booking finds the seats a booking owns.';
