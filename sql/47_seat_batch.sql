-- Several seat changes in one transaction: what the server's seat writer (src/models/writer.rs) sends when
-- requests arrive while the previous ones are still running.
--
-- Why: every transaction that sends a NOTIFY holds PostgreSQL's instance-wide notify lock from just before its
-- commit until the commit is done, a booking's WAL flush included. In a rush most waits were for that lock
-- (docs/benchmarks.md, session 5: 58 % of the sampled waits), so changes of every screening queued behind each
-- durable commit. One transaction for the requests that arrived together pays that lock, the commit and the
-- round trip once.
--
-- What stays as it was: each request is still one call of its api function, in a subtransaction of its own, so
-- its checks, its error (with its SQLSTATE, message and detail), its one UPDATE, its version bump and its
-- notification are exactly those of the call on its own. A request that fails leaves nothing behind (its
-- subtransaction is rolled back, its NOTIFY with it); the others commit. The notifications are delivered at the
-- commit in the order they were sent, so each screening's versions still arrive in order, one per change set.
--
-- Lock order. Every change of a screening first takes the screening's advisory lock (sql/40_seats.sql, header),
-- and a batch runs its changes in screening order (a cancellation at its booking's screening), arrival order
-- within a screening. So a batch that holds a screening's version row never waits for that screening's row
-- locks (whoever holds them holds the advisory lock, which the batch has), and two batches take screenings'
-- advisory locks in one order. What is left, and what the caller does about it (src/models/writer.rs):
--   * api.hold_seats also takes a lock per user (user_hold_limit spans screenings), after the screening's. Two
--     batches in which two users each change two screenings in crossing orders can close a cycle through it,
--     and so can a DBA's plain UPDATE of seat_states, which takes no advisory lock. PostgreSQL breaks such a
--     cycle after deadlock_timeout by failing one change with deadlock_detected (40P01): its row says so, and
--     the caller runs it again alone.
--   * At most 64 changes (PGPROC_MAX_CACHED_SUBXIDS): each successful change gets a subtransaction id, and a
--     transaction with more than 64 of them makes every other session's snapshot look them up in pg_subtrans.
--   * A change that waits for a lock holds up its whole batch, and every screening the batch has changed stays
--     locked meanwhile. So the batch runs with lock_timeout = 100ms (a SET clause: it ends with the call, before
--     the commit, whose wait for the notify lock must never time out): a change that waits longer, say for a
--     DBA's open transaction, fails with lock_not_available (55P03), the others commit, and the caller runs it
--     again alone, where it waits as long as it must.
--
-- Holds and releases commit asynchronously; a batch that booked or cancelled anything commits with the
-- setting it started with (synchronous by default), because a hold's set_config(..., true) lasts for the
-- whole transaction.

CREATE OR REPLACE FUNCTION api.seat_batch(
    p_ops     text[],    -- 'hold', 'release', 'book' or 'cancel', one per request
    p_users   bigint[],  -- the requesting user
    p_targets bigint[],  -- the screening ('cancel': the booking)
    p_counts  int[],     -- how many of p_seats are this request's (0 for 'cancel')
    p_seats   bigint[]   -- every request's seat ids, one after the other
)
RETURNS TABLE (
    ord          int,          -- the request's index in p_ops
    code         text,         -- SQLSTATE of its error, null when it succeeded
    message      text,
    detail       text,
    expires_at   timestamptz,  -- hold
    version      bigint,       -- every kind
    seat_ids     bigint[],     -- release, book, cancel
    booking_id   bigint,       -- book, cancel
    screening_id bigint,
    total        int,
    currency     text,
    status       text,
    created_at   timestamptz
)
LANGUAGE plpgsql
SET lock_timeout = '100ms'
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_commit  text := current_setting('synchronous_commit');
    v_durable boolean := false;
    v_first   int[];  -- where each request's seats start in p_seats
    v_seats   bigint[];
    v_n       int := coalesce(cardinality(p_ops), 0);
    k         int;
BEGIN
    IF v_n > 64 THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'At most 64 changes in one batch.';
    END IF;
    IF coalesce(cardinality(p_users), 0) <> v_n OR coalesce(cardinality(p_targets), 0) <> v_n
       OR coalesce(cardinality(p_counts), 0) <> v_n THEN
        RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = 'The batch''s arrays differ in length.';
    END IF;

    SELECT array_agg(u.first ORDER BY u.k)
      INTO v_first
      FROM (SELECT c.k, (sum(c.n) OVER (ORDER BY c.k) - c.n + 1)::int AS first
              FROM unnest(p_counts) WITH ORDINALITY AS c(n, k)) AS u;

    -- Screening order (see the lock order above); a cancellation's screening is its booking's.
    FOR k IN
        SELECT o.k::int
          FROM unnest(p_ops, p_targets) WITH ORDINALITY AS o(op, target, k)
          LEFT JOIN bookings AS b ON o.op = 'cancel' AND b.id = o.target
         ORDER BY CASE WHEN o.op = 'cancel' THEN b.screening_id ELSE o.target END, o.k
    LOOP
        ord := k;
        code := NULL; message := NULL; detail := NULL; expires_at := NULL; version := NULL; seat_ids := NULL;
        booking_id := NULL; screening_id := NULL; total := NULL; currency := NULL; status := NULL; created_at := NULL;
        v_seats := p_seats[v_first[k] : v_first[k] + p_counts[k] - 1];
        BEGIN
            CASE p_ops[k]
                WHEN 'hold' THEN
                    SELECT h.expires_at, h.version INTO expires_at, version
                      FROM api.hold_seats(p_users[k], p_targets[k], v_seats) AS h;
                WHEN 'release' THEN
                    SELECT r.seat_ids, r.version INTO seat_ids, version
                      FROM api.release_seats(p_users[k], p_targets[k], v_seats) AS r;
                WHEN 'book' THEN
                    SELECT b.booking_id, b.screening_id, b.seat_ids, b.total, b.currency, b.status, b.created_at,
                           b.version
                      INTO booking_id, screening_id, seat_ids, total, currency, status, created_at, version
                      FROM api.book_seats(p_users[k], p_targets[k], v_seats) AS b;
                    v_durable := true;
                WHEN 'cancel' THEN
                    SELECT c.booking_id, c.screening_id, c.seat_ids, c.total, c.currency, c.status, c.created_at,
                           c.version
                      INTO booking_id, screening_id, seat_ids, total, currency, status, created_at, version
                      FROM api.cancel_booking(p_users[k], p_targets[k]) AS c;
                    v_durable := true;
                ELSE
                    RAISE EXCEPTION USING ERRCODE = 'MQ400', MESSAGE = format('Unknown change %L.', p_ops[k]);
            END CASE;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
        END;
        RETURN NEXT;
    END LOOP;

    IF v_durable THEN
        PERFORM set_config('synchronous_commit', v_commit, true);
    END IF;
END;
$$;

COMMENT ON FUNCTION api.seat_batch(text[], bigint[], bigint[], int[], bigint[]) IS
    'Runs several hold_seats / release_seats / book_seats / cancel_booking calls in one transaction, each in a '
    'subtransaction of its own, in screening order, and answers one row per request (ord: its index in p_ops): its '
    'result, or the SQLSTATE, message and detail of its error. At most 64 requests (see sql/47_seat_batch.sql).';
