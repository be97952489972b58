-- The DST-safe clock (sql/12_clock.sql): a local calendar day as UTC instants, and when a local
-- hour next comes round, at the edges the contract names — a day 23 or 25 hours long, the instant of
-- local midnight, an hour the clock skips, an hour it shows twice — and a digest's KPIs counting by
-- that day. (tests/db/test_clock.py sweeps whole years of zones against Python's zoneinfo.)
BEGIN;
\ir helpers.psql
SELECT * FROM no_plan();

-- A local day is [its first instant, the next day's first instant): 23 hours on the spring day,
-- 25 on the autumn one, 24 otherwise.
SELECT is(runhub.local_day_range('2026-03-29', 'Europe/Paris'),
          tstzrange('2026-03-28 23:00+00', '2026-03-29 22:00+00', '[)'), 'Paris''s spring day: 23 hours, from local midnight');
SELECT is(runhub.local_day_range('2026-10-25', 'Europe/Paris'),
          tstzrange('2026-10-24 22:00+00', '2026-10-25 23:00+00', '[)'), 'Paris''s autumn day: 25 hours');
SELECT is(runhub.local_day_range('2026-06-01', 'Europe/Paris'),
          tstzrange('2026-05-31 22:00+00', '2026-06-01 22:00+00', '[)'), 'a summer day: 24 hours');
SELECT is(upper(runhub.local_day_range('2026-03-08', 'America/New_York')) - lower(runhub.local_day_range('2026-03-08', 'America/New_York')),
          interval '23 hours', 'New York''s spring day: 23 hours');
SELECT is(upper(runhub.local_day_range('2026-11-01', 'America/New_York')) - lower(runhub.local_day_range('2026-11-01', 'America/New_York')),
          interval '25 hours', 'New York''s autumn day: 25 hours');

-- Local midnight belongs to the day it starts; the microsecond before, to the day before.
SELECT ok('2026-06-01 00:00:00 Europe/Paris'::timestamptz <@ runhub.local_day_range('2026-06-01', 'Europe/Paris'),
          'local midnight is in the day it starts');
SELECT ok(NOT '2026-06-01 00:00:00 Europe/Paris'::timestamptz <@ runhub.local_day_range('2026-05-31', 'Europe/Paris'),
          'and not in the day before');
SELECT ok('2026-06-01 00:00:00 Europe/Paris'::timestamptz - interval '1 microsecond' <@ runhub.local_day_range('2026-05-31', 'Europe/Paris'),
          'the microsecond before local midnight is in the day before');
SELECT is(upper(runhub.local_day_range('2026-10-25', 'Europe/Paris')), lower(runhub.local_day_range('2026-10-26', 'Europe/Paris')),
          'consecutive days neither overlap nor leave a gap, across the change too');

-- The digest hour: in the hour the clock skips, the first instant after the gap; in the hour it
-- shows twice, the first of the two, and the next one is the next day's (never the repeat).
SELECT is(runhub.next_digest_at('America/New_York', 2, '2026-03-08 00:00-05'), '2026-03-08 03:00-04'::timestamptz,
          '02:00 on New York''s spring day does not exist: 03:00 EDT, the first instant after the gap');
SELECT is(runhub.next_digest_at('America/New_York', 1, '2026-11-01 00:00-04'), '2026-11-01 01:00-04'::timestamptz,
          '01:00 on the autumn day happens twice: the first (EDT)');
SELECT is(runhub.next_digest_at('America/New_York', 1, '2026-11-01 01:00-04'), '2026-11-02 01:00-05'::timestamptz,
          'after it, the next day''s 01:00, not the repeated 01:00 EST');
SELECT is(runhub.next_digest_at('Europe/Paris', 7, '2026-03-28 07:00+01'), '2026-03-29 07:00+02'::timestamptz,
          'across the change, 07:00 local again (23 hours later)');
SELECT throws_ok($$SELECT runhub.next_digest_at('Europe/Paris', 24, now())$$, 'PT400', 'common.invalidInput', 'hour 24: PT400');
SELECT throws_ok($$SELECT runhub.local_day_range('2026-06-01', 'Mars/Olympus')$$, 'PT400', 'projects.invalidTimezone',
                 'an unknown zone: PT400');

-- The inputs' documented bounds, both sides: an hour 0-23; an instant (after) and a day finite and
-- in the years 1 to 9999; a zone of runhub.timezones.
SELECT is(runhub.next_digest_at('UTC', 0, '2026-06-01 00:00+00'), '2026-06-02 00:00+00'::timestamptz, 'hour 0 is accepted (and strictly after)');
SELECT is(runhub.next_digest_at('UTC', 23, '2026-06-01 00:00+00'), '2026-06-01 23:00+00'::timestamptz, 'hour 23 is accepted');
SELECT is(ARRAY(SELECT h || ' -> ' || pg_temp.refusal(format('SELECT runhub.next_digest_at(%L, %s, now())', 'UTC', h))
                  FROM unnest(ARRAY['-1', '24', 'NULL']) h
                 WHERE pg_temp.refusal(format('SELECT runhub.next_digest_at(%L, %s, now())', 'UTC', h)) IS DISTINCT FROM 'PT400 common.invalidInput hour'),
          '{}'::text[], 'hour -1, 24 or null: PT400 common.invalidInput (hour)');
SELECT is(runhub.next_digest_at('UTC', 0, '0001-01-01 00:00+00'), '0001-01-02 00:00+00'::timestamptz, 'after the first instant of year 1: accepted');
SELECT is(runhub.next_digest_at('UTC', 0, '9999-12-31 23:59:59.999999+00'), '10000-01-01 00:00+00'::timestamptz,
          'after the last microsecond of 9999: accepted');
SELECT is(ARRAY(SELECT a || ' -> ' || pg_temp.refusal(format('SELECT runhub.next_digest_at(%L, 7, %s)', 'UTC', a))
                  FROM unnest(ARRAY['NULL', '''infinity''', '''-infinity''', '''10000-01-01 00:00+00''', '''0001-12-31 23:59:59.999999+00 BC''']) a
                 WHERE pg_temp.refusal(format('SELECT runhub.next_digest_at(%L, 7, %s)', 'UTC', a)) IS DISTINCT FROM 'PT400 common.invalidInput after'),
          '{}'::text[], 'after null, infinite, in year 10000 or before year 1: PT400 common.invalidInput (after)');
SELECT is(pg_temp.refusal($$SELECT runhub.next_digest_at(NULL, 7, now())$$), 'PT400 projects.invalidTimezone', 'a null zone: PT400 projects.invalidTimezone');
SELECT is(runhub.local_day_range('0001-01-01', 'UTC'), tstzrange('0001-01-01 00:00+00', '0001-01-02 00:00+00', '[)'), 'day 0001-01-01 is accepted');
SELECT is(runhub.local_day_range('9999-12-31', 'UTC'), tstzrange('9999-12-31 00:00+00', '10000-01-01 00:00+00', '[)'), 'day 9999-12-31 is accepted');
SELECT is(ARRAY(SELECT d || ' -> ' || pg_temp.refusal(format('SELECT runhub.local_day_range(%s, %L)', d, 'UTC'))
                  FROM unnest(ARRAY['NULL', '''infinity''', '''-infinity''', '''10000-01-01''', '''0001-12-31 BC''']) d
                 WHERE pg_temp.refusal(format('SELECT runhub.local_day_range(%s, %L)', d, 'UTC')) IS DISTINCT FROM 'PT400 common.invalidInput day'),
          '{}'::text[], 'a day null, infinite, in year 10000 or before year 1: PT400 common.invalidInput (day)');
SELECT is(pg_temp.refusal($$SELECT runhub.local_day_range('2026-06-01', NULL)$$), 'PT400 projects.invalidTimezone', 'a null zone: PT400 projects.invalidTimezone');

-- A digest counts by that day: on the 25-hour day, 23:30 local is that day's, 00:30 the next.
SELECT runhub.create_project('Clock shop', :owner, 'Europe/Paris', 'EUR') AS p \gset
SELECT runhub.ingest_event(:'p', jsonb_build_object('type', 'lead_created', 'idempotencyKey', 'l-' || n,
                                                    'occurredAt', runhub._iso(at)))
  FROM (VALUES (1, '2026-10-25 00:00:00 Europe/Paris'::timestamptz), (2, '2026-10-25 23:30:00 Europe/Paris'),
               (3, '2026-10-26 00:00:00 Europe/Paris'), (4, '2026-10-24 23:59:59.999 Europe/Paris')) v(n, at);
SELECT is(runhub.generate_digest(:'p', '2026-10-25') #>> '{kpis,leads,value}', '2',
          'the 25-hour day counts its local midnight and its 23:30');
SELECT is(runhub.generate_digest(:'p', '2026-10-26') #>> '{kpis,leads,value}', '1', 'the next day counts its own midnight');
SELECT is(runhub.generate_digest(:'p', '2026-10-24') #>> '{kpis,leads,value}', '1',
          'the day before keeps the millisecond before midnight');

SELECT * FROM finish();
ROLLBACK;
