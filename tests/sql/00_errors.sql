-- The error contract (docs/sql-contract.md, "Errors"): every refusal is raised through runhub._raise with a key
-- of runhub.error_catalog(); SQLSTATE is the catalog's PTxyz, MESSAGE the key, DETAIL the params as
-- JSON and HINT the catalog's English text with the params filled in.
BEGIN;
\ir helpers.psql
SELECT * FROM no_plan();

-- ---------------------------------------------------------------------------------------------
-- Structure: the three functions of the contract exist with their signatures.
SELECT has_function('runhub', 'error_catalog', '{}'::name[], 'runhub.error_catalog() exists');
SELECT has_function('runhub', '_raise', ARRAY['text', 'jsonb'], 'runhub._raise(text, jsonb) exists');
SELECT has_function('runhub', '_invalid', ARRAY['text', 'text', 'text'], 'runhub._invalid(text, text, text) exists');

-- ---------------------------------------------------------------------------------------------
-- The catalog itself: unique keys, only the documented SQLSTATEs, a hint for every key.
SELECT cmp_ok((SELECT count(*) FROM runhub.error_catalog())::int, '>=', 15,
              'the catalog has at least the 15 keys of the events milestone');
SELECT is_empty($$SELECT key FROM runhub.error_catalog() GROUP BY key HAVING count(*) > 1$$,
                'error_catalog() keys are unique');
SELECT is_empty($$SELECT key, sqlstate FROM runhub.error_catalog()
                   WHERE sqlstate IS NULL OR sqlstate !~ '^PT(400|403|404|409|413|422|429)$'$$,
                'every sqlstate is one of PT400 PT403 PT404 PT409 PT413 PT422 PT429');
SELECT is_empty($$SELECT key FROM runhub.error_catalog()
                   WHERE key IS NULL OR key !~ '^[a-z]+(\.[a-z][A-Za-z]*)+$'$$,
                'every key is an i18n key such as workflows.policy.cooldownActive');
SELECT is_empty($$SELECT key FROM runhub.error_catalog() WHERE coalesce(btrim(hint), '') = ''$$,
                'every key has an English hint');
-- The SQLSTATEs docs/sql-contract.md gives by name.
SELECT set_has($$SELECT key, sqlstate FROM runhub.error_catalog()$$,
               $$VALUES ('common.invalidInput', 'PT400'), ('projects.notFound', 'PT404'),
                        ('auth.roleRequired', 'PT403'), ('projects.lastOwner', 'PT409'),
                        ('events.appendOnly', 'PT409'), ('events.payloadTooLarge', 'PT413'),
                        ('events.invalid', 'PT400'), ('events.invalidCursor', 'PT400')$$,
               'the documented keys carry their documented SQLSTATE');

-- ---------------------------------------------------------------------------------------------
-- _raise: code + message through throws_ok, then DETAIL and HINT through GET STACKED DIAGNOSTICS.
SELECT throws_ok($$SELECT runhub._raise('projects.notFound', '{"projectId": "p-1"}')$$,
                 'PT404', 'projects.notFound', '_raise raises the catalog SQLSTATE with MESSAGE = key');
SELECT is(pg_temp.caught($$SELECT runhub._raise('projects.notFound', '{"projectId": "p-1"}')$$),
          jsonb_build_object('sqlstate', 'PT404', 'message', 'projects.notFound',
                             'detail', '{"projectId": "p-1"}',
                             'hint', 'No project p-1 exists, or you are not a member of it'),
          '_raise: DETAIL is the params JSON, HINT is filled from params');
SELECT is(pg_temp.caught($$SELECT runhub._raise('auth.roleRequired', '{"required": "owner", "role": "member"}')$$) ->> 'hint',
          'This needs the owner role; you are member',
          '_raise fills every placeholder of a hint');
SELECT is(pg_temp.caught($$SELECT runhub._raise('events.payloadTooLarge', '{"bytes": 40000, "maxBytes": 32768}')$$) ->> 'hint',
          'The event payload is 40000 bytes; the limit is 32768',
          '_raise writes numeric params as plain numbers in the hint');
SELECT is((pg_temp.caught($$SELECT runhub._raise('events.payloadTooLarge', '{"bytes": 40000, "maxBytes": 32768}')$$) ->> 'detail')::jsonb,
          '{"bytes": 40000, "maxBytes": 32768}'::jsonb,
          '_raise keeps numeric params as JSON numbers in DETAIL');
SELECT is(pg_temp.caught($$SELECT runhub._raise('projects.invalidTimezone', '{"timezone": null}')$$) ->> 'hint',
          'null is not an IANA time zone name known to this server',
          '_raise writes a JSON null param as null in the hint');
SELECT is(pg_temp.caught($$SELECT runhub._raise('projects.lastOwner', NULL)$$),
          jsonb_build_object('sqlstate', 'PT409', 'message', 'projects.lastOwner', 'detail', '{}',
                             'hint', 'A project must keep at least one owner'),
          '_raise with null params: DETAIL is {}');
SELECT is(pg_temp.caught($$SELECT runhub._raise('projects.lastOwner')$$) ->> 'detail', '{}',
          '_raise params default to {}');

-- Every key raises its own SQLSTATE and, given every placeholder of its hint, leaves none unfilled.
SELECT is_empty($$
    WITH params AS (
        SELECT c.key, c.sqlstate,
               coalesce((SELECT jsonb_object_agg(m[1], 'v') FROM regexp_matches(c.hint, '\{(\w+)\}', 'g') m), '{}') AS p
          FROM runhub.error_catalog() c)
    SELECT key, e
      FROM params, pg_temp.caught(format('SELECT runhub._raise(%L, %L)', key, p)) e
     WHERE e ->> 'sqlstate' IS DISTINCT FROM sqlstate
        OR e ->> 'message' IS DISTINCT FROM key
        OR (e ->> 'detail')::jsonb IS DISTINCT FROM p
        OR e ->> 'hint' ~ '\{\w+\}'
$$, 'every catalog key raises its SQLSTATE, MESSAGE, DETAIL and a fully filled HINT');

-- DETAIL and HINT echo each parameter cut to 200 characters, marked with what was left out: 200 are
-- echoed whole, 201 are cut (strings and other JSON values alike).
SELECT is((pg_temp.caught(format('SELECT runhub._raise(%L, %L)', 'events.invalidSort', jsonb_build_object('sort', repeat('s', 200)))) ->> 'detail')::jsonb,
          jsonb_build_object('sort', repeat('s', 200)), 'a parameter of 200 characters is echoed whole');
SELECT is(pg_temp.caught(format('SELECT runhub._raise(%L, %L)', 'events.invalidSort', jsonb_build_object('sort', repeat('s', 201)))) - 'sqlstate' - 'message',
          jsonb_build_object('detail', jsonb_build_object('sort', repeat('s', 200) || '… (1 more characters)')::text,
                             'hint', 'sort must be timeline or ingestion, not ' || repeat('s', 200) || '… (1 more characters)'),
          'one of 201 is cut to 200 in DETAIL and HINT, marked … (1 more characters)');
SELECT is((pg_temp.caught(format('SELECT runhub._raise(%L, %L)', 'events.invalidCursor',
                                 jsonb_build_object('sort', 'timeline', 'reason', jsonb_build_array(repeat('r', 300))))) ->> 'detail')::jsonb -> 'reason',
          to_jsonb(left(jsonb_build_array(repeat('r', 300))::text, 200) || '… (104 more characters)'), 'a JSON value is cut as its text');

-- _invalid: the shorthand for one bad field.
SELECT throws_ok($$SELECT runhub._invalid('events.invalid', 'type', 'must be a string')$$,
                 'PT400', 'events.invalid', '_invalid raises the key''s SQLSTATE and MESSAGE');
SELECT is(pg_temp.caught($$SELECT runhub._invalid('events.invalid', 'type', 'must be a string')$$),
          jsonb_build_object('sqlstate', 'PT400', 'message', 'events.invalid',
                             'detail', '{"field": "type", "reason": "must be a string"}',
                             'hint', 'Event field type is invalid: must be a string'),
          '_invalid: DETAIL is {field, reason}, HINT names both');

-- An unknown key is a programming error: XX000, loudly, never a PTxyz that looks like bad input.
SELECT throws_ok($$SELECT runhub._raise('no.such.key')$$, 'XX000', NULL, '_raise with an unknown key raises XX000');
SELECT throws_ok($$SELECT runhub._invalid('no.such.key', 'f', 'r')$$, 'XX000', NULL, '_invalid with an unknown key raises XX000');
SELECT throws_ok($$SELECT runhub._raise(NULL)$$, 'XX000', NULL, '_raise with a null key raises XX000');
SELECT matches(pg_temp.caught($$SELECT runhub._raise('no.such.key')$$) ->> 'message', 'no\.such\.key',
               'the XX000 message names the unknown key');

-- ---------------------------------------------------------------------------------------------
-- No drift between code and catalog: every key literal passed to runhub._raise('...') or
-- runhub._invalid('...') in any function of schema runhub is in the catalog.
CREATE TEMP VIEW raised_keys AS
    SELECT DISTINCT p.oid::regprocedure::text AS fn, m[1] AS key
      FROM pg_proc p, regexp_matches(p.prosrc, 'runhub\._(?:raise|invalid)\(\s*''([^'']*)''', 'g') m
     WHERE p.pronamespace = 'runhub'::regnamespace;
SELECT set_has($$SELECT key FROM raised_keys$$,
               $$VALUES ('projects.notFound'), ('projects.lastOwner'), ('auth.roleRequired'), ('common.invalidInput'),
                        ('events.invalid'), ('events.appendOnly'), ('events.payloadTooLarge'), ('events.invalidCursor')$$,
               'the prosrc scan finds the keys known to be raised (the regexp works)');
SELECT is_empty($$SELECT fn, key FROM raised_keys WHERE key NOT IN (SELECT key FROM runhub.error_catalog())$$,
                'every key literal raised in schema runhub is in error_catalog()');
-- And no API refusal bypasses the catalog with a bare RAISE EXCEPTION USING ERRCODE = 'PT...'.
SELECT is_empty($$SELECT p.oid::regprocedure FROM pg_proc p
                   WHERE p.pronamespace = 'runhub'::regnamespace AND p.proname <> '_raise'
                     AND p.prosrc ~* 'errcode\s*=\s*''PT'$$,
                'only _raise raises PTxyz SQLSTATEs directly');

-- ---------------------------------------------------------------------------------------------
-- End to end through an API function: a refusal carries the whole contract.
SELECT is(pg_temp.caught($$SELECT runhub.create_project('Shop', '00000000-0000-4000-8000-000000000001', 'UTC', 'usd')$$),
          jsonb_build_object('sqlstate', 'PT400', 'message', 'projects.invalidCurrency',
                             'detail', '{"currency": "usd"}',
                             'hint', 'usd is not an ISO 4217 currency code'),
          'create_project refuses a bad currency with the full error contract');
SELECT is(pg_temp.caught($$SELECT runhub.list_events('00000000-0000-4000-8000-00000000dead', '00000000-0000-4000-8000-000000000001')$$),
          jsonb_build_object('sqlstate', 'PT404', 'message', 'projects.notFound',
                             'detail', '{"projectId": "00000000-0000-4000-8000-00000000dead"}',
                             'hint', 'No project 00000000-0000-4000-8000-00000000dead exists, or you are not a member of it'),
          'list_events refuses an unknown project with the full error contract');

-- Error fields survive being caught and re-read by a PL/pgSQL client (what PostgREST maps to HTTP).
DO $$
DECLARE
    v_state text; v_msg text; v_detail text; v_hint text;
BEGIN
    PERFORM runhub._raise('events.invalidPageSize', jsonb_build_object('pageSize', 0, 'max', 500));
EXCEPTION WHEN SQLSTATE 'PT400' THEN
    GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT,
                            v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
    CREATE TEMP TABLE do_caught AS SELECT v_state AS state, v_msg AS msg, v_detail AS detail, v_hint AS hint;
END
$$;
SELECT results_eq($$SELECT state, msg, detail::jsonb, hint FROM do_caught$$,
                  $$VALUES ('PT400', 'events.invalidPageSize', '{"pageSize": 0, "max": 500}'::jsonb,
                            'page_size must be between 1 and 500, not 0')$$,
                  'WHEN SQLSTATE ''PT400'' catches it; GET STACKED DIAGNOSTICS reads key, params and hint');

-- error_catalog() is callable by the application (to translate keys) and is a plain table function.
SELECT function_returns('runhub', 'error_catalog', '{}'::name[], 'setof record', 'error_catalog() returns a set of rows');
SELECT volatility_is('runhub', 'error_catalog', '{}'::name[], 'immutable', 'error_catalog() is immutable');
SELECT volatility_is('runhub', '_raise', ARRAY['text', 'jsonb'], 'volatile', '_raise is volatile (never folded away)');

SELECT * FROM finish();
ROLLBACK;
