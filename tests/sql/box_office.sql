-- The box office (PROTOCOL.md "Box office (version 1.1)"): layouts, prices per kind, the no-orphan rule, companion
-- seats, best available, the cancellation cut-off and the DBA functions. sql/45_box_office.sql.
BEGIN;
\ir fixtures.psql
SELECT plan(71);

UPDATE settings SET value = 1 WHERE key = 'orphan_rule';  -- the shipped default (fixtures switch it off)
SELECT admin.set_user_hold_limit(1000);  -- these rules, not the abuse limit, are under test here

SELECT pg_temp.make_user('tap_alice') AS alice \gset
SELECT pg_temp.make_user('tap_bob') AS bob \gset
SELECT admin.create_cinema('Box cinema', 'Testville', '1 Test Street', 'Europe/Berlin') AS cinema \gset
SELECT admin.create_film('Box film', 100, '12') AS film \gset

-- A screening, a day ahead, in a new hall of the given layout.
CREATE FUNCTION pg_temp.layout_screening(p_layout text[], p_starts_in interval DEFAULT '1 day')
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    v_hall bigint;
BEGIN
    v_hall := admin.create_hall_layout((SELECT max(id) FROM cinemas WHERE name = 'Box cinema'),
                                       'Hall ' || (SELECT count(*) FROM halls), p_layout);
    RETURN admin.create_screening(v_hall, (SELECT max(id) FROM films WHERE title = 'Box film'),
                                  now() + p_starts_in, 1000, 'EUR');
END;
$$;

-- Holds labels of a screening for a user: 'ok' or 'SQLSTATE DETAIL' (the hold stays when it succeeded).
CREATE FUNCTION pg_temp.hold(p_user bigint, p_screening bigint, VARIADIC p_labels text[])
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    v_state  text;
    v_detail text;
BEGIN
    PERFORM api.hold_seats(p_user, p_screening, pg_temp.seats(p_screening, VARIADIC p_labels));
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_detail = PG_EXCEPTION_DETAIL;
    RETURN v_state || ' ' || coalesce(v_detail, '');
END;
$$;

-- The SEAT_RULE detail for a rule and labels.
CREATE FUNCTION pg_temp.rule(p_rule text, p_screening bigint, VARIADIC p_labels text[])
RETURNS text
LANGUAGE sql
AS $$
    SELECT 'MQ422 {"rule":"' || p_rule || '","seat_ids":' || pg_temp.ids(pg_temp.seats(p_screening, VARIADIC p_labels)) || '}'
$$;

-- Labels of seat ids, e.g. 'B3 B4'.
CREATE FUNCTION pg_temp.labels(p_ids bigint[])
RETURNS text
LANGUAGE sql
AS $$
    SELECT string_agg(s.row_label || s.number, ' ' ORDER BY s.y, s.x) FROM seats AS s WHERE s.id = ANY (p_ids)
$$;

-- Layouts ------------------------------------------------------------------------------------------------------

SELECT pg_temp.layout_screening(ARRAY['wc.ssss.cw', 'ssssssssss', 'vvvv..vvvv']) AS hall1 \gset
SELECT is((SELECT string_agg(s.row_label || s.number || ':' || s.x || ',' || s.y || ':' || left(s.kind, 1), ' '
                             ORDER BY s.y, s.x)
             FROM seats AS s JOIN screenings AS sc ON sc.hall_id = s.hall_id WHERE sc.id = :hall1 AND s.y = 0),
          'A1:0,0:w A2:1,0:c A3:3,0:s A4:4,0:s A5:5,0:s A6:6,0:s A7:8,0:c A8:9,0:w',
          'create_hall_layout: x is the character''s index, y the row''s, seats numbered left to right skipping gaps');
SELECT is((SELECT count(*)::int FROM seat_states WHERE screening_id = :hall1), 26,
          'every seat of a layout is a free seat of its screenings');
SELECT is(pg_temp.err(format($$SELECT admin.create_hall_layout(%s, 'Bad', ARRAY['ss', 'sx'])$$, :cinema)),
          'MQ400', 'a layout character other than s v w c . is BAD_REQUEST');
SELECT is(pg_temp.err(format($$SELECT admin.create_hall_layout(%s, 'Empty', ARRAY['...'])$$, :cinema)),
          'MQ400', 'a layout without a seat is BAD_REQUEST');
SELECT is(pg_temp.err($$SELECT admin.create_hall_layout(-1, 'Nowhere', ARRAY['ss'])$$),
          'MQ404', 'a layout for an unknown cinema is NOT_FOUND');

-- Prices -------------------------------------------------------------------------------------------------------

SELECT is(api.screening_prices(:hall1), '{"standard":1000,"vip":1000,"wheelchair":1000,"companion":1000}'::jsonb,
          'a new screening prices every kind at its price');
SELECT admin.set_price(:hall1, 'vip', 1550);
SELECT admin.set_price(:hall1, 'standard', 1150);
SELECT is(api.screening_prices(:hall1), '{"standard":1150,"vip":1550,"wheelchair":1000,"companion":1000}'::jsonb,
          'set_price changes one kind''s price');
SELECT is((SELECT price FROM screenings WHERE id = :hall1), 1150,
          'the standard price is the screening''s price (the wire''s price)');
SELECT is((SELECT g.prices FROM api.get_screenings(NULL, now(), now() + interval '2 days') AS g WHERE g.id = :hall1),
          api.screening_prices(:hall1), 'get_screenings carries the prices per kind');
SELECT is(pg_temp.err(format($$SELECT admin.set_price(%s, 'balcony', 5)$$, :hall1)), 'MQ400',
          'set_price of an unknown kind is BAD_REQUEST');
SELECT is(pg_temp.err(format($$SELECT admin.set_price(%s, 'vip', -1)$$, :hall1)), 'MQ400',
          'a negative price is BAD_REQUEST');
SELECT is(pg_temp.err($$SELECT admin.set_price(-1, 'vip', 5)$$), 'MQ404', 'set_price of an unknown screening is NOT_FOUND');

SELECT pg_temp.hold(:alice, :hall1, 'C1', 'C2', 'C3', 'C4') AS ignored \gset
SELECT pg_temp.hold(:alice, :hall1, 'B1', 'B2') AS ignored \gset
SELECT is((SELECT b.total FROM api.book_seats(:alice, :hall1, pg_temp.seats(:hall1, 'C1', 'C2', 'B1')) AS b),
          1550 + 1550 + 1150, 'a booking''s total is the sum of its seats'' prices by kind');
DELETE FROM screening_prices WHERE screening_id = :hall1 AND kind = 'vip';
SELECT is((SELECT b.total FROM api.book_seats(:alice, :hall1, pg_temp.seats(:hall1, 'C3', 'B2')) AS b),
          1150 + 1150, 'a seat whose kind lost its price row costs the screening''s price, not nothing');

-- No orphan seat: row ends and aisles ---------------------------------------------------------------------------

SELECT pg_temp.layout_screening(ARRAY['ssssss', 'sss.sss']) AS o1 \gset
SELECT is(pg_temp.hold(:bob, :o1, 'A2'), pg_temp.rule('orphan', :o1, 'A1'),
          'a hold that leaves the row''s end seat alone is SEAT_RULE orphan, naming the seat left alone');
SELECT is(pg_temp.state(:o1, 'A2'), 'free', 'a refused hold changes nothing');
SELECT is(pg_temp.hold(:bob, :o1, 'B2', 'B3'), pg_temp.rule('orphan', :o1, 'B1'),
          'leaving the seat at the wall alone is refused');
SELECT is(pg_temp.hold(:bob, :o1, 'B1', 'B2'), pg_temp.rule('orphan', :o1, 'B3'),
          'leaving the seat at the aisle alone is refused (a gap in x is not a neighbour)');
SELECT is(pg_temp.hold(:bob, :o1, 'B4', 'B5', 'B6'), 'ok',
          'a block from the aisle to the wall leaves nobody alone: accepted');
SELECT is(pg_temp.hold(:bob, :o1, 'A2', 'A5'), pg_temp.rule('orphan', :o1, 'A1', 'A6'),
          'every orphan the hold makes is listed, ascending');
SELECT is(pg_temp.hold(:bob, :o1, 'A3', 'A4'), 'ok', 'leaving two seats on each side is fine');
SELECT is(pg_temp.hold(:alice, :o1, 'A1'), pg_temp.rule('orphan', :o1, 'A2'),
          'the seat between a new hold and someone else''s hold counts as left alone');
SELECT is(pg_temp.hold(:alice, :o1, 'A1', 'A2'), 'ok', 'taking the gap whole is fine');

-- Orphans that existed before, lapsed holds, the rule switched off ----------------------------------------------

SELECT pg_temp.layout_screening(ARRAY['sssssss']) AS o2 \gset
SELECT admin.set_orphan_rule(false);
SELECT is(pg_temp.hold(:bob, :o2, 'A2'), 'ok', 'with the rule off, a hold that leaves a seat alone is accepted');
SELECT admin.set_orphan_rule(true);
SELECT is(pg_temp.hold(:alice, :o2, 'A4', 'A5'), pg_temp.rule('orphan', :o2, 'A3'),
          'with the rule on again (next request), leaving A3 alone is refused');
SELECT is(pg_temp.hold(:alice, :o2, 'A5', 'A6', 'A7'), 'ok',
          'an orphan that existed before (A1) is not made by this hold: accepted');
SELECT is(pg_temp.hold(:alice, :o2, 'A3', 'A4'), 'ok',
          'filling the gap between two holds is accepted while the old orphan A1 stays alone');
UPDATE seat_states SET hold_expires_at = now() - interval '1 second'
 WHERE screening_id = :o2 AND seat_id = ANY (pg_temp.seats(:o2, 'A6', 'A7'));
SELECT is(pg_temp.hold(:bob, :o2, 'A6'), pg_temp.rule('orphan', :o2, 'A7'),
          'lapsed holds are open: holding one of two lapsed seats leaves the other alone (and the run A1 has L = n)');

-- The "no alternative" exception: L = n or L >= n + 2 -----------------------------------------------------------

SELECT pg_temp.layout_screening(ARRAY['sss']) AS x1 \gset
SELECT is(pg_temp.hold(:bob, :x1, 'A1', 'A2'), 'ok',
          'only a run of 3 and n = 2: no way to seat 2 without leaving one alone, so it is allowed');
SELECT pg_temp.layout_screening(ARRAY['sss', 'ss']) AS x2 \gset
SELECT is(pg_temp.hold(:bob, :x2, 'A1', 'A2'), pg_temp.rule('orphan', :x2, 'A3'),
          'a run of exactly n (row B) exists, so leaving a seat alone is refused (L = n)');
SELECT pg_temp.layout_screening(ARRAY['ssss']) AS x3 \gset
SELECT is(pg_temp.hold(:bob, :x3, 'A2', 'A3'), pg_temp.rule('orphan', :x3, 'A1', 'A4'),
          'a run of n + 2 allows 2 without an orphan, so the middle two are refused (L >= n + 2)');
SELECT pg_temp.layout_screening(ARRAY['sssss']) AS x4 \gset
SELECT is(pg_temp.hold(:bob, :x4, 'A2', 'A3', 'A4'), pg_temp.rule('orphan', :x4, 'A1', 'A5'),
          'n = 3 in a run of 5 = n + 2 (A1-A3 would leave two together) is refused');

-- Renewals count as no new seats --------------------------------------------------------------------------------

SELECT pg_temp.layout_screening(ARRAY['sssss']) AS r1 \gset
SELECT is(pg_temp.hold(:alice, :r1, 'A1', 'A2'), 'ok', 'A1 A2 leave three together');
SELECT is(pg_temp.hold(:alice, :r1, 'A2'), 'ok', 'renewing one''s own hold changes nothing: never an orphan');
SELECT is(pg_temp.hold(:alice, :r1, 'A2', 'A3', 'A4'), 'ok',
          'extending a hold by A3 A4 leaves A5 alone, but n = 2 new seats and the only run (A3-A5) has L = 3: allowed');
SELECT pg_temp.layout_screening(ARRAY['sssss', 'ss']) AS r2 \gset
SELECT is(pg_temp.hold(:alice, :r2, 'A1', 'A2'), 'ok', 'setup: A1 A2 held');
SELECT is(pg_temp.hold(:alice, :r2, 'A2', 'A3', 'A4'), pg_temp.rule('orphan', :r2, 'A5'),
          'the same extension is refused when a run of n = 2 (row B) exists');

-- Companion seats -----------------------------------------------------------------------------------------------

SELECT pg_temp.layout_screening(ARRAY['wc.ssss.cw', 'ssssccssss']) AS c1 \gset
SELECT is(pg_temp.hold(:bob, :c1, 'A7'), pg_temp.rule('companion', :c1, 'A7'),
          'a companion seat without a wheelchair space is SEAT_RULE companion');
SELECT is(pg_temp.hold(:bob, :c1, 'A2'), pg_temp.rule('companion', :c1, 'A2'),
          'when both rules refuse (A1 would be left alone too), companion is reported');
SELECT is(pg_temp.hold(:bob, :c1, 'A1', 'A2'), 'ok', 'a wheelchair space with its companion seat is accepted');
SELECT is(pg_temp.hold(:bob, :c1, 'B5', 'B6'), 'ok',
          'companion seats are accepted while the user holds a wheelchair space of the screening');
PREPARE bob_books_companion AS SELECT * FROM api.book_seats(:bob, :c1, pg_temp.seats(:c1, 'B5'));
SELECT is(pg_temp.err('bob_books_companion'), pg_temp.rule('companion', :c1, 'B5'),
          'booking a companion seat alone is refused: a held wheelchair space does not count for a booking');
SELECT is((SELECT cardinality(b.seat_ids) FROM api.book_seats(:bob, :c1, pg_temp.seats(:c1, 'A1', 'A2')) AS b), 2,
          'booking the wheelchair space with its companion seat is accepted');
SELECT is((SELECT cardinality(b.seat_ids) FROM api.book_seats(:bob, :c1, pg_temp.seats(:c1, 'B5', 'B6')) AS b), 2,
          'once the wheelchair space is booked, a companion seat may be booked on its own');
SELECT pg_temp.layout_screening(ARRAY['css']) AS c2 \gset
SELECT admin.set_orphan_rule(false);
SELECT is(pg_temp.hold(:alice, :c2, 'A1', 'A2'), pg_temp.rule('companion', :c2, 'A1'),
          'the companion rule is no setting: it holds with the orphan rule off');
SELECT admin.set_orphan_rule(true);

-- Best available ------------------------------------------------------------------------------------------------

SELECT pg_temp.layout_screening(ARRAY['ssssss', 'ssssss', 'ssssss']) AS b1 \gset
SELECT is((SELECT pg_temp.labels(h.seat_ids) FROM api.hold_best_available(:alice, :b1, 2, NULL) AS h), 'B3 B4',
          'best available: the block nearest the middle (cx = 2.5) of row py = floor(2 * 2 / 3) = 1');
SELECT is((SELECT pg_temp.labels(h.seat_ids) FROM api.hold_best_available(:bob, :b1, 2, NULL) AS h), 'A3 A4',
          'the next request: A3 A4 (score 1.5) beats B1 B2 and B5 B6 (2 each); rows A and C tie, the lower y wins');
SELECT is((SELECT pg_temp.labels(h.seat_ids) FROM api.hold_best_available(:bob, :b1, 3, NULL) AS h), 'C1 C2 C3',
          'three seats: C2-C4 and C3-C5 score best but leave a seat alone; C1-C3 and C4-C6 tie, the lower x wins');
SELECT is(pg_temp.state(:b1, 'B3') || ' ' || pg_temp.state(:b1, 'B4'), format('held:%s held:%s', :alice, :alice),
          'best available holds the seats it answers');
PREPARE too_many AS SELECT * FROM api.hold_best_available(:bob, :b1, 11, NULL);
SELECT is(pg_temp.err('too_many'), 'MQ400', 'count above the seat limit is BAD_REQUEST');
PREPARE bad_kind AS SELECT * FROM api.hold_best_available(:bob, :b1, 2, ARRAY['balcony']);
SELECT is(pg_temp.err('bad_kind'), 'MQ400', 'an unknown kind is BAD_REQUEST');
PREPARE no_kind AS SELECT * FROM api.hold_best_available(:bob, :b1, 2, '{}'::text[]);
SELECT is(pg_temp.err('no_kind'), 'MQ400', 'an empty kinds list is BAD_REQUEST');
PREPARE no_vip AS SELECT * FROM api.hold_best_available(:bob, :b1, 2, ARRAY['vip']);
SELECT is(pg_temp.err('no_vip'), 'MQ409 []', 'no candidate of the kinds asked for is SEAT_UNAVAILABLE with no seats');
PREPARE over_limit AS SELECT * FROM api.hold_best_available(:alice, :b1, 9, NULL);
SELECT is(pg_temp.err('over_limit'), 'MQ411', 'best available counts the user''s seats for HOLD_LIMIT');
SELECT pg_temp.layout_screening(ARRAY['ssssss'], '-1 hour') AS b_started \gset
PREPARE started AS SELECT * FROM api.hold_best_available(:alice, :b_started, 2, NULL);
SELECT is(pg_temp.err('started'), 'MQ410', 'best available for a started screening is SCREENING_CLOSED');
PREPARE anon AS SELECT * FROM api.hold_best_available(NULL, :b1, 2, NULL);
SELECT is(pg_temp.err('anon'), 'MQ401', 'best available needs a user');

SELECT pg_temp.layout_screening(ARRAY['sssss', 'sss.s']) AS b2 \gset
SELECT is((SELECT pg_temp.labels(h.seat_ids) FROM api.hold_best_available(:alice, :b2, 2, NULL) AS h), 'A1 A2',
          'py = 0: row A; A2 A3 and A3 A4 would leave a seat alone, so the best block that leaves none wins');
SELECT pg_temp.layout_screening(ARRAY['sssss', 'sss.s']) AS b2off \gset
SELECT admin.set_orphan_rule(false);
SELECT is((SELECT pg_temp.labels(h.seat_ids) FROM api.hold_best_available(:alice, :b2off, 2, NULL) AS h), 'A2 A3',
          'with the rule off the nearest block wins though it leaves A1 alone (A2 A3 and A3 A4 tie; lower x)');
SELECT admin.set_orphan_rule(true);
SELECT pg_temp.layout_screening(ARRAY['sss']) AS b4 \gset
SELECT is((SELECT pg_temp.labels(h.seat_ids) FROM api.hold_best_available(:alice, :b4, 2, NULL) AS h), 'A1 A2',
          'when every candidate leaves a seat alone, the best of them is used');

SELECT pg_temp.layout_screening(ARRAY['wcs']) AS b3 \gset
PREPARE companion_best AS SELECT * FROM api.hold_best_available(:bob, :b3, 2, ARRAY['companion', 'standard']);
SELECT is(pg_temp.err('companion_best'), pg_temp.rule('companion', :b3, 'A2'),
          'a best-available block with a companion seat and no wheelchair space is SEAT_RULE companion');
SELECT is((SELECT pg_temp.labels(h.seat_ids) FROM api.hold_best_available(:bob, :b3, 2, ARRAY['wheelchair', 'companion']) AS h),
          'A1 A2', 'a wheelchair space with its companion seat is a valid block');

-- Cancellation cut-off ------------------------------------------------------------------------------------------

SELECT pg_temp.layout_screening(ARRAY['ssss'], '30 minutes') AS k1 \gset
SELECT pg_temp.hold(:alice, :k1, 'A1', 'A2') AS ignored \gset
SELECT b.booking_id AS kb FROM api.book_seats(:alice, :k1, pg_temp.seats(:k1, 'A1', 'A2')) AS b \gset
SELECT admin.set_cancel_cutoff(60);
PREPARE cancel_kb AS SELECT * FROM api.cancel_booking(:alice, :kb);
SELECT is(pg_temp.err('cancel_kb'), 'MQ410',
          'with a 60-minute cut-off, cancelling 30 minutes before the start is SCREENING_CLOSED');
SELECT admin.set_cancel_cutoff(29);
SELECT is((SELECT c.status FROM api.cancel_booking(:alice, :kb) AS c), 'cancelled',
          'with a 29-minute cut-off it is still allowed');
SELECT is(pg_temp.err($$SELECT admin.set_cancel_cutoff(-1)$$), 'MQ400', 'a negative cut-off is BAD_REQUEST');
SELECT admin.set_cancel_cutoff(0);

-- set_seat_kind -------------------------------------------------------------------------------------------------

SELECT pg_temp.layout_screening(ARRAY['ssss']) AS k2 \gset
SELECT sc.hall_id AS k2_hall FROM screenings AS sc WHERE sc.id = :k2 \gset
SELECT pg_temp.hold(:alice, :k2, 'A1', 'A2') AS ignored \gset
SELECT is(pg_temp.err(format($$SELECT admin.set_seat_kind(%s, %L, 'vip')$$, :k2_hall,
                             pg_temp.seats(:k2, 'A2', 'A3'))),
          'MQ409 ' || pg_temp.ids(pg_temp.seats(:k2, 'A2')),
          'set_seat_kind is refused for a seat held in a future screening, naming it');
SELECT is(admin.set_seat_kind(:k2_hall, pg_temp.seats(:k2, 'A3', 'A4'), 'companion'), 2,
          'set_seat_kind changes free seats and answers how many changed');
SELECT is((SELECT string_agg(kind, ' ' ORDER BY x) FROM seats WHERE hall_id = :k2_hall),
          'standard standard companion companion', 'the kinds changed');
SELECT is(pg_temp.err(format($$SELECT admin.set_seat_kind(%s, %L, 'throne')$$, :k2_hall, pg_temp.seats(:k2, 'A3'))),
          'MQ400', 'an unknown kind is BAD_REQUEST');
SELECT is(pg_temp.err(format($$SELECT admin.set_seat_kind(%s, %L, 'vip')$$, :k2_hall, pg_temp.seats(:o1, 'A1'))),
          'MQ404 ' || pg_temp.ids(pg_temp.seats(:o1, 'A1')), 'a seat of another hall is NOT_FOUND');

-- Demo data ----------------------------------------------------------------------------------------------------

SELECT admin.seed_demo();
SELECT ok((SELECT bool_and(EXISTS (SELECT 1 FROM seats AS c
                                    WHERE c.hall_id = w.hall_id AND c.row_label = w.row_label AND c.kind = 'companion'
                                      AND abs(c.x - w.x) = 1))
             FROM seats AS w JOIN halls AS h ON h.id = w.hall_id JOIN cinemas AS ci ON ci.id = h.cinema_id
            WHERE w.kind = 'wheelchair' AND ci.name LIKE 'Marquee %'),
          'every demo wheelchair space has a companion seat beside it');
SELECT ok((SELECT bool_and(v.price > st.price)
             FROM screenings AS sc
             JOIN halls AS h ON h.id = sc.hall_id JOIN cinemas AS ci ON ci.id = h.cinema_id
             JOIN screening_prices AS v ON v.screening_id = sc.id AND v.kind = 'vip'
             JOIN screening_prices AS st ON st.screening_id = sc.id AND st.kind = 'standard'
            WHERE ci.name LIKE 'Marquee %' AND sc.starts_at > now()),
          'demo vip seats are dearer than standard ones');

SELECT * FROM finish();
ROLLBACK;
