-- The settings every hold reads, as one row (issue 10: the seat-change hot path).
--
-- settings stays the one place settings are written (admin.set_*, or a DBA's UPDATE); a trigger on it
-- (internal.settings_mirror, sql/10_errors.sql) copies the five a hold needs into this row. Reading them from
-- settings took an aggregate with five filters over the table on every hold, about 3 % of a hold and release's
-- instructions (docs/benchmarks.md, session 5); reading one row of a one-row table costs almost nothing.
-- The columns may be null: a hold setting deleted from settings stays a deployment error the hold reports.
CREATE TABLE hold_settings (
    one              boolean PRIMARY KEY DEFAULT true CHECK (one),
    seat_limit       int,
    hold_ttl_seconds int,
    user_hold_limit  int,
    max_hold_seconds int,
    orphan_rule      int
);

COMMENT ON TABLE hold_settings IS
    'Copy of the settings api.hold_seats reads, kept by a trigger on settings; one row. Write settings, not this.';

INSERT INTO hold_settings (one) VALUES (true);
