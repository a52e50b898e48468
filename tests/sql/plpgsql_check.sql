-- Static checks of every PL/pgSQL function in api, admin and internal with plpgsql_check: zero findings allowed.
--
-- Trigger functions are checked against the table of (one of) their triggers, with its transition table names,
-- preferring the trigger that declares the most transition tables. Performance warnings are on; a function may
-- switch one off for itself with an in-comment option, saying why (internal.ensure_trigger does).
-- Skipped when the plpgsql_check extension is not installed on the server.
BEGIN;
\ir fixtures.psql
SELECT plan(1);

SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'plpgsql_check')
            THEN 'CREATE EXTENSION IF NOT EXISTS plpgsql_check'
            ELSE 'SELECT 1'
       END AS load_check \gset
:load_check;

CREATE TEMP TABLE findings (functionid regproc, lineno int, level text, message text, detail text);

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'plpgsql_check') THEN
        RETURN;
    END IF;
    -- Dynamic SQL, so this file still parses where the extension is missing.
    EXECUTE $q$
        INSERT INTO findings
        WITH fns AS (
            SELECT p.oid, tr.tgrelid, tr.tgoldtable, tr.tgnewtable
              FROM pg_proc AS p
              LEFT JOIN LATERAL (
                    SELECT t.tgrelid, t.tgoldtable, t.tgnewtable
                      FROM pg_trigger AS t
                     WHERE t.tgfoid = p.oid AND NOT t.tgisinternal
                     ORDER BY (t.tgoldtable IS NOT NULL)::int + (t.tgnewtable IS NOT NULL)::int DESC, t.tgname
                     LIMIT 1) AS tr ON true
             WHERE p.pronamespace IN ('api'::regnamespace, 'admin'::regnamespace, 'internal'::regnamespace)
               AND p.prolang = (SELECT l.oid FROM pg_language AS l WHERE l.lanname = 'plpgsql')
        )
        SELECT c.functionid, c.lineno, c.level, c.message, c.detail
          FROM fns AS f
         CROSS JOIN LATERAL plpgsql_check_function_tb(
                   f.oid,
                   relid => coalesce(f.tgrelid, 0),
                   oldtable => f.tgoldtable,
                   newtable => f.tgnewtable,
                   performance_warnings => true,
                   extra_warnings => true) AS c
    $q$;
END;
$$;

SELECT diag(format('%s line %s: %s: %s %s', functionid, lineno, level, message, coalesce(detail, '')))
  FROM findings;

SELECT CASE
           WHEN NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'plpgsql_check')
               THEN skip('plpgsql_check is not installed on this server', 1)
           ELSE is((SELECT count(*)::int FROM findings), 0, 'plpgsql_check finds nothing in any PL/pgSQL function')
       END;

SELECT * FROM finish();
ROLLBACK;
