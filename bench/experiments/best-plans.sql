-- internal.best_block's cost per call with plans made per call (plan_cache_mode auto, as before it declared
-- force_generic_plan) and with its plan kept (force_generic_plan, what it declares now). A superuser session on
-- a benchmark database:
--   psql -v screening=<id> -f bench/experiments/best-plans.sql
-- The function's own SET clause wins over the session's, so the first block resets it for this transaction.
BEGIN;
SELECT set_config('bench.screening', :'screening', false);
ALTER FUNCTION internal.best_block(bigint, int, text[], boolean) RESET plan_cache_mode;
SET LOCAL plan_cache_mode = auto;
DO $$
DECLARE
    t0 timestamptz := clock_timestamp();
    n  int := 300;
BEGIN
    FOR i IN 1..n LOOP
        PERFORM internal.best_block(current_setting('bench.screening')::bigint, 2, ARRAY['standard', 'vip'], true);
    END LOOP;
    RAISE NOTICE 'plans made per call: % µs a search', round(extract(epoch FROM clock_timestamp() - t0) * 1e6 / n);
END;
$$;
ROLLBACK;
BEGIN;
SELECT set_config('bench.screening', :'screening', false);
SET LOCAL plan_cache_mode = force_generic_plan;
DO $$
DECLARE
    t0 timestamptz := clock_timestamp();
    n  int := 300;
BEGIN
    FOR i IN 1..n LOOP
        PERFORM internal.best_block(current_setting('bench.screening')::bigint, 2, ARRAY['standard', 'vip'], true);
    END LOOP;
    RAISE NOTICE 'plan kept: % µs a search', round(extract(epoch FROM clock_timestamp() - t0) * 1e6 / n);
END;
$$;
ROLLBACK;
