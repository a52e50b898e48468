-- The catalogue: cinemas, their halls and seats, films and screenings.
--
-- Rows here change rarely and only through admin functions (or a DBA).
-- Seat state per screening lives in seat_states (V5).

CREATE TABLE cinemas (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name     text NOT NULL CHECK (btrim(name) <> ''),
    city     text NOT NULL CHECK (btrim(city) <> ''),
    address  text NOT NULL,
    timezone text NOT NULL
);

COMMENT ON TABLE cinemas IS 'A cinema (a building with halls).';
COMMENT ON COLUMN cinemas.id IS 'Surrogate key; sent on the wire as a string.';
COMMENT ON COLUMN cinemas.name IS 'Display name; admin.seed_demo looks demo cinemas up by it.';
COMMENT ON COLUMN cinemas.city IS 'City, for grouping in the client.';
COMMENT ON COLUMN cinemas.address IS 'Street address for display; free text.';
COMMENT ON COLUMN cinemas.timezone IS
    'IANA time zone name (e.g. Europe/Berlin) so clients show local start times; '
    'admin.create_cinema checks it against pg_timezone_names (a CHECK cannot read that view).';

CREATE TABLE halls (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    cinema_id bigint NOT NULL REFERENCES cinemas (id),
    name      text   NOT NULL CHECK (btrim(name) <> ''),
    CONSTRAINT halls_cinema_name_key UNIQUE (cinema_id, name)
);

COMMENT ON TABLE halls IS 'A screening room with a fixed seat layout.';
COMMENT ON COLUMN halls.id IS 'Surrogate key; it also names the notification channel hall_<id>.';
COMMENT ON COLUMN halls.cinema_id IS 'The cinema the hall belongs to.';
COMMENT ON COLUMN halls.name IS 'Display name, unique within its cinema so DBAs and seed_demo can find a hall by name.';

CREATE TABLE seats (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hall_id   bigint NOT NULL REFERENCES halls (id),
    row_label text   NOT NULL CHECK (row_label ~ '^[A-Z0-9]{1,4}$'),
    number    int    NOT NULL CHECK (number > 0),
    x         int    NOT NULL CHECK (x >= 0),
    y         int    NOT NULL CHECK (y >= 0),
    kind      text   NOT NULL DEFAULT 'standard'
              CHECK (kind IN ('standard', 'vip', 'wheelchair')),
    CONSTRAINT seats_hall_row_number_key UNIQUE (hall_id, row_label, number)
);

COMMENT ON TABLE seats IS 'The physical seats of a hall; the same for every screening in it.';
COMMENT ON COLUMN seats.id IS 'Surrogate key; the seat id clients send in seat_ids.';
COMMENT ON COLUMN seats.hall_id IS 'The hall the seat is in; a seat id from another hall is NOT_FOUND for a screening.';
COMMENT ON COLUMN seats.row_label IS 'Row as printed on the seat (A, B, ... AA); upper case so it sorts and prints consistently.';
COMMENT ON COLUMN seats.number IS 'Seat number within its row, from 1.';
COMMENT ON COLUMN seats.x IS 'Column on the client''s seat map grid (0 = leftmost); gaps make aisles.';
COMMENT ON COLUMN seats.y IS 'Row on the client''s seat map grid (0 = nearest the screen).';
COMMENT ON COLUMN seats.kind IS 'standard, vip or wheelchair; the client draws them differently.';

CREATE TABLE films (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title        text NOT NULL CHECK (btrim(title) <> ''),
    duration_min int  NOT NULL CHECK (duration_min BETWEEN 1 AND 1440),
    age_rating   text NOT NULL
);

COMMENT ON TABLE films IS 'A film that can be screened.';
COMMENT ON COLUMN films.id IS 'Surrogate key.';
COMMENT ON COLUMN films.title IS 'Display title; admin.seed_demo looks demo films up by it.';
COMMENT ON COLUMN films.duration_min IS 'Running time in minutes, for display and planning.';
COMMENT ON COLUMN films.age_rating IS 'Rating as the local authority prints it (e.g. FSK 12, PG-13); free text because systems differ by country.';

CREATE TABLE screenings (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hall_id   bigint      NOT NULL REFERENCES halls (id),
    film_id   bigint      NOT NULL REFERENCES films (id),
    starts_at timestamptz NOT NULL,
    price     int         NOT NULL CHECK (price >= 0),
    currency  text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    version   bigint      NOT NULL DEFAULT 0,
    CONSTRAINT screenings_hall_starts_at_key UNIQUE (hall_id, starts_at)
);

COMMENT ON TABLE screenings IS 'A film shown in a hall at a time; seats are held and booked per screening.';
COMMENT ON COLUMN screenings.id IS 'Surrogate key; the screening_id of the wire protocol and of notifications.';
COMMENT ON COLUMN screenings.hall_id IS 'Where it is shown; fixed once seat_states exist (a trigger refuses a move).';
COMMENT ON COLUMN screenings.film_id IS 'What is shown.';
COMMENT ON COLUMN screenings.starts_at IS 'Start time; holds, bookings and cancellations are refused from then on (SCREENING_CLOSED).';
COMMENT ON COLUMN screenings.price IS 'Price of one seat in minor units of currency (cents); a booking costs price times seats.';
COMMENT ON COLUMN screenings.currency IS 'ISO 4217 code, three upper-case letters.';
COMMENT ON COLUMN screenings.version IS
    'Grows by exactly 1 per statement that changes a seat''s (status, user_id) in this screening '
    '(trigger in sql/20_notify.sql); subscribers use it to detect missed notifications.';

CREATE INDEX screenings_starts_at_idx ON screenings (starts_at);
COMMENT ON INDEX screenings_starts_at_idx IS 'api.get_screenings lists screenings in a time window.';
CREATE INDEX screenings_film_id_idx ON screenings (film_id);
COMMENT ON INDEX screenings_film_id_idx IS 'Foreign key lookups when a film is changed or deleted.';
