-- The per-screening version moves out of screenings into a table of its own (issue 10: the seat-change hot path).
--
-- Every seat change bumps its screening's version and holds that row until commit. On screenings the bump paid for
-- the table's width and its neighbours: two CHECK constraints read back and evaluated, four indexes opened, the
-- foreign keys that reference it consulted, a trigger's column list checked, on every change; and a booking's
-- foreign-key check (FOR KEY SHARE on the screening row) met the uncommitted bumps of other changes there, which
-- makes PostgreSQL record both lockers as a MultiXact. A narrow table with only the key and the version is what
-- the design costs (docs/benchmarks.md, session 5: 6 % of a hold and release's instructions).
--
-- The row is made with the screening (internal.screenings_create_seat_states, sql/30_catalogue.sql) and goes with
-- it. No CHECK on version on purpose: it would be evaluated on every bump; only the seat functions and the
-- notify trigger write it, always version + 1 from 0.
CREATE TABLE screening_versions (
    screening_id bigint PRIMARY KEY REFERENCES screenings (id) ON DELETE CASCADE,
    version      bigint NOT NULL DEFAULT 0
);

COMMENT ON TABLE screening_versions IS
    'One row per screening: its seat-state version, +1 per change set (sql/20_notify.sql). Apart from screenings so '
    'that the bump, on every seat change, touches a two-column row and nothing else.';
COMMENT ON COLUMN screening_versions.version IS
    'Bumped by exactly 1 by every statement that changes a seat of the screening; carried by every notification '
    'and hall snapshot, so listeners apply changes in order and see gaps.';

INSERT INTO screening_versions (screening_id, version)
SELECT sc.id, sc.version FROM screenings AS sc;

ALTER TABLE screenings DROP COLUMN version;
