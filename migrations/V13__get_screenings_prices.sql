-- api.get_screenings gains the result column prices (box office, version 1.1). CREATE OR REPLACE cannot change a
-- function's result columns, so the old signature goes here and sql/30_catalogue.sql, applied right after
-- migrations, creates the new one (and sql/90_grants.sql grants it again). No trigger uses it.
DROP FUNCTION IF EXISTS api.get_screenings(bigint, timestamptz, timestamptz);
