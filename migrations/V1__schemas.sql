-- Schemas that separate who may call what.
--
-- Tables stay in `public` so DBAs can read and update them directly (for
-- example `UPDATE seat_states ...`). Functions live beside them in three
-- schemas, created here once so that sql/ can always CREATE OR REPLACE into
-- them:
--   api       functions the Rust server calls; their signatures are a contract
--   admin     functions DBAs call by hand (PROTOCOL.md "SQL interface for DBAs")
--   internal  helpers and trigger functions; nobody outside sql/ calls them

CREATE SCHEMA api;
COMMENT ON SCHEMA api IS
    'Functions the Marquee server calls. Signatures are a contract with src/; change them only together.';

CREATE SCHEMA admin;
COMMENT ON SCHEMA admin IS
    'Functions for DBAs: create cinemas, halls, films, screenings; block seats; change settings; seed demo data.';

CREATE SCHEMA internal;
COMMENT ON SCHEMA internal IS
    'Helpers and trigger functions used by api and admin. Not a stable interface: do not call them from outside sql/.';
