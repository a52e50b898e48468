-- internal.best_block's cost per call with plans made per call (plan_cache_mode auto) and with its plan kept
-- (force_generic_plan, what the function declares). A superuser session on a benchmark database:
--   psql -v screening=<id> -f bench/experiments/best-plans.sql
-- Inside the transactions the function's own SET clause is reset, so the session's mode is the one used.
SELECT set_config('bench.screening', :'screening', false);

CREATE FUNCTION pg_temp.time_best(p_label text)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
    n  int := 300;
BEGIN
    FOR i IN 1..n LOOP
        PERFORM internal.best_block(current_setting('bench.screening')::bigint, 2, ARRAY['standard', 'vip'], true);
    END LOOP;
    RETURN p_label || ': ' || round(extract(epoch FROM clock_timestamp() - t0) * 1e6 / n) || ' µs a search';
END;
$$;

BEGIN;
ALTER FUNCTION internal.best_block(bigint, int, text[], boolean) RESET plan_cache_mode;
SET LOCAL plan_cache_mode = auto;
SELECT pg_temp.time_best('plans made per call');
SET LOCAL plan_cache_mode = force_generic_plan;
SELECT pg_temp.time_best('plan kept');
ROLLBACK;
