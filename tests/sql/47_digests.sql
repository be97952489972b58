-- Daily digests (sql/47_digests.sql, sql/12_clock.sql): the tables that make a day go once, the
-- job's pieces and who may call them, the cron job, and the settings' contract. The clock is
-- checked against Python's zoneinfo in tests/db/test_clock.py, the job's behaviour (batches, kills,
-- concurrency) in tests/db/test_digests.py.
BEGIN;
\ir helpers.psql
SELECT * FROM no_plan();

\set owner '''bbbbbbbb-0000-4000-8000-0000000000a1'''

SELECT has_table('runhub', 'digests', 'table runhub.digests exists');
SELECT col_is_pk('runhub', 'digests', ARRAY['project_id', 'day'], 'one digest per project and local day');
SELECT has_table('runhub', 'job_runs', 'table runhub.job_runs exists (the job''s timing)');
SELECT policies_are('runhub', 'digests', ARRAY['digests_member_read'], 'digests: the member-read policy');
SELECT is((SELECT prokind::text FROM pg_proc WHERE oid = 'runhub.run_due_digests(integer)'::regprocedure), 'p',
          'run_due_digests is a procedure (it commits between batches)');
SELECT is((SELECT prosecdef OR proconfig IS NOT NULL FROM pg_proc WHERE oid = 'runhub.run_due_digests(integer)'::regprocedure),
          false, 'a procedure that commits has neither definer rights nor a SET clause');
SELECT is_definer('runhub', 'digest_batch', ARRAY['integer', 'bigint'], 'digest_batch runs with the owner''s rights');
SELECT isnt_definer('runhub', 'generate_digest', ARRAY['uuid', 'date'], 'generate_digest is not SECURITY DEFINER');
SELECT is_empty($$SELECT r FROM unnest(ARRAY['runhub_app', 'runhub_ingest', 'runhub_sender', 'runhub_reader']) r
                   WHERE has_function_privilege(r, 'runhub.generate_digest(uuid,date)', 'EXECUTE')$$,
                'generate_digest is for the job and operators: no runhub role may call it');
SELECT results_eq($$SELECT r FROM unnest(ARRAY['runhub_app', 'runhub_ingest', 'runhub_sender', 'runhub_reader']) r
                    WHERE has_function_privilege(r, 'runhub.run_due_digests(integer)', 'EXECUTE')
                      AND has_function_privilege(r, 'runhub.digest_batch(integer,bigint)', 'EXECUTE')$$,
                  $$VALUES ('runhub_sender')$$, 'only runhub_sender runs the job (its catch-up)');
SELECT results_eq($$SELECT schedule, command FROM runhub.cron_jobs() WHERE name = 'run-due-digests'$$,
                  $$VALUES ('5 * * * *', 'CALL runhub.run_due_digests()')$$, 'pg_cron runs the job hourly at minute 5');

-- The job's batch bounds, written as digits where the caller's rights run them, are the constants'.
SELECT matches(pg_get_function_arguments('runhub.digest_batch(integer,bigint)'::regprocedure),
               format('max integer DEFAULT %s\M', runhub._constant('digestBatch')), 'digest_batch''s default batch is digestBatch');
SELECT matches(pg_get_functiondef('runhub.run_due_digests(integer)'::regprocedure),
               format('1\), %s\) ELSE %s END', runhub._constant('maxDigestBatch'), runhub._constant('digestBatch')),
               'the job''s batch: runhub.digest_batch_size up to maxDigestBatch, else digestBatch');

-- Settings: turning digests on needs a recipient; the next time is set in the same transaction.
SELECT runhub.create_project('Digest shop', :owner, 'Europe/Berlin', 'EUR') AS p \gset
SELECT throws_ok(format($$SELECT runhub.update_project_settings(%L, %L, '{"dailyDigestEnabled": true}')$$, :'p', :owner),
                 'PT422', 'projects.digestRecipientRequired', 'no recipient: PT422');
SELECT is((runhub.update_project_settings(:'p', :owner,
              '{"dailyDigestEnabled": true, "dailyDigestHour": 7, "dailyDigestRecipient": "Boss@Shop.example"}')
           - 'dailyDigestNextAt'),
          '{"timezone": "Europe/Berlin", "dailyDigestEnabled": true, "dailyDigestHour": 7, "dailyDigestRecipient": "boss@shop.example"}'::jsonb,
          'turned on, with the recipient normalized');
SELECT is((SELECT digest_next_at FROM runhub.projects WHERE id = :'p'), runhub.next_digest_at('Europe/Berlin', 7, now()),
          'digest_next_at is the next 07:00 in Berlin');
SELECT is(runhub.update_project_settings(:'p', :owner, '{"dailyDigestEnabled": false}') -> 'dailyDigestNextAt', 'null'::jsonb,
          'turned off: no next time');
SELECT is((SELECT digest_next_at FROM runhub.projects WHERE id = :'p'), NULL, 'digest_next_at cleared');
SELECT throws_ok(format($$SELECT runhub.update_project_settings(%L, %L, '{"timezone": "EST"}')$$, :'p', :owner),
                 'PT400', 'projects.invalidTimezone', 'a timezone as create_project takes them');
-- The digest settings' edges, both sides: an hour 0-23 (null: 9 again), a boolean, a deliverable address.
SELECT is(pg_temp.bad_values(:'p', :owner, 'dailyDigestHour', ARRAY['24', '-1', '7.5', '"7"', 'true', '100']::jsonb[]), '{}'::text[],
          'dailyDigestHour 24, -1, 7.5, a string, a boolean, 100: PT400 common.invalidInput (dailyDigestHour)');
SELECT is(pg_temp.bad_values(:'p', :owner, 'dailyDigestEnabled', ARRAY['"true"', '1']::jsonb[]), '{}'::text[],
          'dailyDigestEnabled as a string or a number: PT400 common.invalidInput (dailyDigestEnabled)');
SELECT is(pg_temp.bad_values(:'p', :owner, 'dailyDigestRecipient', ARRAY['"boss"', '42', to_jsonb(repeat('b', 243) || '@example.com')]::jsonb[]),
          '{}'::text[], 'a dailyDigestRecipient that is no deliverable address (or 255 characters): PT400 common.invalidInput (dailyDigestRecipient)');
SELECT is(runhub.update_project_settings(:'p', :owner, '{"dailyDigestHour": 0}') -> 'dailyDigestHour', '0'::jsonb, 'dailyDigestHour 0 is accepted');
SELECT is(runhub.update_project_settings(:'p', :owner, '{"dailyDigestHour": 23}') -> 'dailyDigestHour', '23'::jsonb, 'dailyDigestHour 23 is accepted');
SELECT is(runhub.update_project_settings(:'p', :owner, '{"dailyDigestHour": null}') -> 'dailyDigestHour', '9'::jsonb, 'null restores the default, 9');
SELECT runhub.update_project_settings(:'p', :owner, '{"dailyDigestHour": 7}') \g /dev/null

-- A day without activity makes no digest; one with activity does.
SELECT is(runhub.generate_digest(:'p', '2026-11-29'), NULL, 'no activity: null');
SELECT lives_ok(format($$SELECT runhub.ingest_event(%L, '{"type": "lead_created", "occurredAt": "2026-11-29T23:30:00+01:00",
                                                           "idempotencyKey": "l1"}')$$, :'p'), 'a lead at 23:30 Berlin time');
SELECT is(runhub.generate_digest(:'p', '2026-11-29') #>> '{kpis,leads,value}', '1', 'it is in 29 November''s digest');
SELECT is(runhub.generate_digest(:'p', '2026-11-30'), NULL, 'and not in the next day''s');
SELECT throws_ok(format($$SELECT runhub.generate_digest(%L, 'infinity')$$, :'p'), 'PT400', 'common.invalidInput',
                 'an infinite day: PT400');
SELECT is(pg_temp.refusal(format($$SELECT runhub.generate_digest(%L, NULL)$$, :'p')), 'PT400 common.invalidInput day', 'a null day: PT400 (day)');
SELECT is(pg_temp.refusal($$SELECT runhub.generate_digest('bbbbbbbb-0000-4000-8000-0000000000ff', '2026-11-29')$$), 'PT404 projects.notFound',
          'an unknown project: PT404 projects.notFound');

-- digest_batch(max): 1 to maxDigestBatch (10,000) projects a batch.
SELECT is(ARRAY(SELECT m || ' -> ' || pg_temp.refusal(format('SELECT runhub.digest_batch(%s)', m))
                  FROM unnest(ARRAY['0', '10001', '-1', 'NULL']) m
                 WHERE pg_temp.refusal(format('SELECT runhub.digest_batch(%s)', m)) IS DISTINCT FROM 'PT400 common.invalidInput max'),
          '{}'::text[], 'digest_batch of 0, 10001, -1 or null projects: PT400 common.invalidInput (max)');
SELECT is(ARRAY[pg_temp.refusal('SELECT runhub.digest_batch(1)'), pg_temp.refusal('SELECT runhub.digest_batch(10000)')],
          '{no error,no error}', 'digest_batch of 1 and of 10000 projects is accepted');

-- The job reads runhub's clock (now() shifted by runhub.clock_offset, as runhub._now() is): what is
-- due, the day served and the next time all follow it. Not due yet on the real clock; due once the
-- clock is moved an hour past the next 07:00 in Berlin, whose yesterday it then serves.
SELECT is((SELECT (runhub.update_project_settings(:'p', :owner, '{"dailyDigestEnabled": true}') ->> 'dailyDigestEnabled')::boolean),
          true, 'turned on again, at 07:00 Berlin time');
SELECT digest_next_at AS next_at FROM runhub.projects WHERE id = :'p' \gset
SELECT is(runhub.digest_batch(10) ->> 'served', '0', 'on the real clock the project is not due yet');
UPDATE runhub.clock_offset SET shift = :'next_at'::timestamptz + interval '1 hour' - now();
SELECT is(runhub.digest_batch(10) - 'jobRun', '{"served": 1, "queued": 0, "skipped": 1, "failed": 0, "done": 0, "busy": false}'::jsonb,
          'an hour past it on runhub''s clock, the project is served (no activity that day: skipped)');
SELECT results_eq(format($$SELECT day, status FROM runhub.digests WHERE project_id = %L$$, :'p'),
                  format($$VALUES (%L::date, 'skipped')$$, (:'next_at'::timestamptz AT TIME ZONE 'Europe/Berlin')::date - 1),
                  'the day served is the yesterday of runhub''s clock, in Berlin');
SELECT is((SELECT digest_next_at FROM runhub.projects WHERE id = :'p'),
          runhub.next_digest_at('Europe/Berlin', 7, :'next_at'::timestamptz + interval '1 hour'),
          'the next time is the next 07:00 after runhub''s clock');
SELECT pg_temp.reset_clock() \g /dev/null

-- ---------------------------------------------------------------------------------------------
-- The recommendation order is runhub._constants()' recommendationOrder: the job's facts list the
-- candidates in it (and try each only while those before reach nobody), and the digest recommends
-- the first that can run and reaches someone — with every candidate available, the first.
SELECT runhub.create_project('Every candidate', :owner, 'UTC', 'EUR') AS ec \gset
SELECT runhub.update_project_settings(:'ec', :owner,
       '{"shopUrl": "https://shop.example", "integrations": ["payments", "email"], "holdoutPercent": 0}') IS NOT NULL AS set \gset
SELECT (now() AT TIME ZONE 'UTC')::date AS ec_day \gset
SELECT runhub.ingest_event(:'ec', jsonb_build_object('type', t, 'occurredAt', runhub._iso(now()),
           'idempotencyKey', 'every-' || t, 'customer', jsonb_build_object('email', t || '@shop.example'))
           || CASE WHEN t = 'checkout_started' THEN '{"correlationId": "cart-ec", "amountCents": 1200, "currency": "EUR"}'::jsonb
                   ELSE '{}' END)
  FROM unnest(ARRAY['checkout_started', 'user_signed_up', 'lead_created']) t;
SELECT is(ARRAY(SELECT c ->> 'id' FROM runhub._digest_facts(ARRAY[:'ec'::uuid], ARRAY[:'ec_day'::date]) f,
                       jsonb_array_elements(f.facts -> 'candidates') c),
          ARRAY(SELECT jsonb_array_elements_text(runhub._constants() -> 'recommendationOrder')),
          'the facts list the candidates in recommendationOrder');
SELECT is((SELECT (f.facts -> 'candidates' -> 0 ->> 'available')::boolean AND (f.facts -> 'candidates' -> 0 ->> 'reach')::int > 0
             FROM runhub._digest_facts(ARRAY[:'ec'::uuid], ARRAY[:'ec_day'::date]) f), true,
          'the first can run and reaches someone');
SELECT is(runhub.generate_digest(:'ec', :'ec_day') #>> '{recommendedAction,id}',
          runhub._constants() -> 'recommendationOrder' ->> 0, 'every candidate available: the digest recommends the first');
SELECT is(runhub.preview(:'ec', :owner, 'onboard_users') ->> 'count', '1', 'the second would have reached someone too');

SELECT * FROM finish();
ROLLBACK;
