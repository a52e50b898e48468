-- One CHECK for the shape of a seat state, instead of five.
--
-- PostgreSQL reads every CHECK constraint of a table back from its stored text and prepares it again for each
-- statement that writes the table. seat_states is written by every hold, release and booking, and its five
-- CHECKs (migrations/V5__seat_states.sql) cost about 20 us of PostgreSQL CPU per seat change, a fifth of the
-- whole change (docs/benchmarks.md). One call of a small PL/pgSQL function is a much shorter text and runs
-- from PL/pgSQL's per-session cache. The rules are the same as before:
--
--   free     no holder, no expiry, no booking (expired_holder may remember a lapsed hold)
--   held     a holder and an expiry, no booking, no expired_holder
--   booked   a holder and a booking, no expiry, no expired_holder
--   blocked  nothing
--
-- The function lives here, not in sql/, because it defines which rows the table accepts: changing it is a
-- schema change (existing rows are not checked again), so it takes a migration. It is in public, executable by
-- everyone, because a CHECK runs with the rights of whoever writes the row (a DBA's plain UPDATE included).

CREATE FUNCTION public.seat_state_valid(
    p_status          text,
    p_user            bigint,
    p_expires         timestamptz,
    p_booking         bigint,
    p_expired_holder  bigint
) RETURNS boolean
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
AS $$
BEGIN
    RETURN CASE p_status
               WHEN 'free'    THEN p_user IS NULL AND p_expires IS NULL AND p_booking IS NULL
               WHEN 'held'    THEN p_user IS NOT NULL AND p_expires IS NOT NULL AND p_booking IS NULL
                                   AND p_expired_holder IS NULL
               WHEN 'booked'  THEN p_user IS NOT NULL AND p_booking IS NOT NULL AND p_expires IS NULL
                                   AND p_expired_holder IS NULL
               WHEN 'blocked' THEN p_user IS NULL AND p_expires IS NULL AND p_booking IS NULL
                                   AND p_expired_holder IS NULL
               ELSE false
           END;
END;
$$;

COMMENT ON FUNCTION public.seat_state_valid(text, bigint, timestamptz, bigint, bigint) IS
    'The CHECK of seat_states: status is free, held, booked or blocked, and the other columns fit it.';

ALTER TABLE seat_states
    DROP CONSTRAINT seat_states_status_check,
    DROP CONSTRAINT seat_states_held_shape,
    DROP CONSTRAINT seat_states_booked_shape,
    DROP CONSTRAINT seat_states_free_blocked_shape,
    DROP CONSTRAINT seat_states_expired_holder_only_free,
    ADD CONSTRAINT seat_states_shape
        CHECK (public.seat_state_valid(status, user_id, hold_expires_at, booking_id, expired_holder));

COMMENT ON CONSTRAINT seat_states_shape ON seat_states IS
    'free: no holder, expiry or booking; held: holder and expiry; booked: holder and booking; blocked: nothing. '
    'expired_holder only on free seats. See public.seat_state_valid.';
