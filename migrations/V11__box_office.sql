-- Box office (PROTOCOL.md "Box office (version 1.1)"): companion seats, one price per seat kind per screening,
-- and the settings orphan_rule and cancel_cutoff_minutes. The rules themselves are functions in
-- sql/45_box_office.sql.

-- Seat kind companion: a seat that goes with a wheelchair space. The kind check was declared inline in V3, so
-- PostgreSQL named it seats_kind_check.
ALTER TABLE seats DROP CONSTRAINT IF EXISTS seats_kind_check;
ALTER TABLE seats ADD CONSTRAINT seats_kind_check
    CHECK (kind IN ('standard', 'vip', 'wheelchair', 'companion'));
COMMENT ON COLUMN seats.kind IS
    'standard, vip, wheelchair or companion (goes with a wheelchair space: only a user who holds or booked a '
    'wheelchair seat of the screening may hold one); each kind has its own price per screening (screening_prices).';

-- The seat-rule checks read the seats of the affected rows, neighbours by x.
CREATE INDEX seats_hall_row_x_idx ON seats (hall_id, row_label, x);
COMMENT ON INDEX seats_hall_row_x_idx IS
    'The no-orphan check and best available read the seats of one row of a hall in x order.';

CREATE TABLE screening_prices (
    screening_id bigint NOT NULL REFERENCES screenings (id) ON DELETE CASCADE,
    kind         text   NOT NULL CHECK (kind IN ('standard', 'vip', 'wheelchair', 'companion')),
    price        int    NOT NULL CHECK (price >= 0),
    PRIMARY KEY (screening_id, kind)
);

COMMENT ON TABLE screening_prices IS
    'One price per seat kind per screening; a booking''s total is the sum of its seats'' prices. A new screening '
    'gets every kind at its screenings.price (trigger in sql/45_box_office.sql); change one with admin.set_price.';
COMMENT ON COLUMN screening_prices.screening_id IS 'The screening; its prices go when it is deleted.';
COMMENT ON COLUMN screening_prices.kind IS 'The seat kind priced (the four kinds of seats.kind).';
COMMENT ON COLUMN screening_prices.price IS
    'Price of one seat of this kind in minor units of the screening''s currency; the standard price is kept equal '
    'to screenings.price (the wire''s price).';

-- Screenings created before this migration: every kind costs the screening's price.
INSERT INTO screening_prices (screening_id, kind, price)
SELECT sc.id, k.kind, sc.price
  FROM screenings AS sc
 CROSS JOIN (VALUES ('standard'), ('vip'), ('wheelchair'), ('companion')) AS k(kind)
ON CONFLICT DO NOTHING;

-- orphan_rule is a switch (1 on, 0 off) and cancel_cutoff_minutes may be 0, so values of 0 must pass. Every check
-- constraint on settings.value is replaced by one allowing 0, whatever an earlier migration named it (V2 calls it
-- settings_value_positive); which keys may be 0 is decided by the admin.set_* functions that validate each value.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT c.conname
          FROM pg_constraint AS c
         WHERE c.conrelid = 'public.settings'::regclass AND c.contype = 'c'
         ORDER BY c.conname
    LOOP
        EXECUTE format('ALTER TABLE settings DROP CONSTRAINT %I', r.conname);
    END LOOP;
END;
$$;
ALTER TABLE settings ADD CONSTRAINT settings_value_not_negative CHECK (value >= 0);
COMMENT ON CONSTRAINT settings_value_not_negative ON settings IS
    'Every setting is a count, a duration or a 0/1 switch; admin.set_* check each key''s own range.';
COMMENT ON COLUMN settings.value IS
    'Integer value: a count (seats), a duration (seconds, minutes) or a switch (orphan_rule: 1 on, 0 off).';

INSERT INTO settings (key, value) VALUES
    ('orphan_rule', 1),            -- holds may not leave a single seat alone (PROTOCOL.md "No orphan seat")
    ('cancel_cutoff_minutes', 0)   -- cancel_booking is refused from starts_at minus this on
ON CONFLICT (key) DO NOTHING;
