-- What sql/ was last applied, and by which release.
--
-- marquee migrate (and serve, at start) records the digest of the sql/ files it applied and the release
-- (the server's version) that carried them. A restart with the same digest skips re-applying; a release older
-- than the recorded one refuses to put its older functions back over the newer ones (a rolling deploy restarts
-- old replicas while new ones already run).
--
-- Releases before this migration created the table from the server's code; this one owns it now.

CREATE TABLE IF NOT EXISTS marquee_sql_state (
    id         boolean     PRIMARY KEY DEFAULT true CHECK (id),
    digest     text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE marquee_sql_state ADD COLUMN IF NOT EXISTS release text;

COMMENT ON TABLE marquee_sql_state IS
    'One row: the sql/ files last applied by marquee (digest), when, and by which release, so a restart can skip '
    're-applying them and an older release never overwrites a newer one''s functions.';
COMMENT ON COLUMN marquee_sql_state.release IS
    'The version of the marquee release that applied sql/ (Cargo package version); null before release 0.2.0.';
