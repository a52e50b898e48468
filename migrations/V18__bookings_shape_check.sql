-- One CHECK for the shape of a booking, instead of four (as V12 did for seat_states).
--
-- PostgreSQL reads every CHECK constraint of a table back from its stored text and prepares it again for each
-- statement that writes the table, and every booking and cancellation writes bookings: its four CHECKs cost about
-- 5 % of the instructions of a hold, booking and cancellation (docs/benchmarks.md, session 5). One call of a small
-- PL/pgSQL function is a shorter text and runs from PL/pgSQL's per-session cache. The rules are the same:
--
--   total     not negative (minor units)
--   currency  three capital letters
--   status    confirmed or cancelled, and cancelled_at is set exactly when it is cancelled
CREATE FUNCTION public.booking_valid(p_total int, p_currency text, p_status text, p_cancelled_at timestamptz)
RETURNS boolean
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
AS $$
BEGIN
    RETURN p_total >= 0
       AND p_currency ~ '^[A-Z]{3}$'
       AND CASE p_status
               WHEN 'confirmed' THEN p_cancelled_at IS NULL
               WHEN 'cancelled' THEN p_cancelled_at IS NOT NULL
               ELSE false
           END;
END;
$$;

COMMENT ON FUNCTION public.booking_valid(int, text, text, timestamptz) IS
    'The CHECK of bookings: total >= 0, currency three capital letters, status confirmed (no cancelled_at) or '
    'cancelled (with cancelled_at).';

ALTER TABLE bookings
    DROP CONSTRAINT bookings_total_check,
    DROP CONSTRAINT bookings_currency_check,
    DROP CONSTRAINT bookings_status_check,
    DROP CONSTRAINT bookings_cancelled_at_iff_cancelled,
    ADD CONSTRAINT bookings_shape CHECK (public.booking_valid(total, currency, status, cancelled_at));

COMMENT ON CONSTRAINT bookings_shape ON bookings IS
    'total >= 0; currency three capital letters; status confirmed, or cancelled with cancelled_at. '
    'See public.booking_valid.';
