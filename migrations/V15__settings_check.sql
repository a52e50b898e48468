-- One CHECK for every setting again.
--
-- V10 (registrations_per_hour may be 0) and V11 (orphan_rule and cancel_cutoff_minutes may be 0) were written
-- side by side; V11 replaced every check on settings with value >= 0, which let a DBA's UPDATE set a seat limit
-- or a hold TTL to 0. The settings that may be 0 say so by name; every other one stays positive.

DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT c.conname
          FROM pg_constraint AS c
         WHERE c.conrelid = 'settings'::regclass AND c.contype = 'c'
    LOOP
        EXECUTE format('ALTER TABLE settings DROP CONSTRAINT %I', r.conname);
    END LOOP;
END;
$$;

ALTER TABLE settings ADD CONSTRAINT settings_value_valid CHECK (
    CASE key
        WHEN 'orphan_rule'            THEN value IN (0, 1)
        WHEN 'registrations_per_hour' THEN value >= 0
        WHEN 'cancel_cutoff_minutes'  THEN value >= 0
        ELSE value > 0
    END);

COMMENT ON CONSTRAINT settings_value_valid ON settings IS
    'orphan_rule is 0 (off) or 1 (on); registrations_per_hour (0 = off) and cancel_cutoff_minutes may be 0; every '
    'other setting is a positive count of seconds, seats or attempts.';
