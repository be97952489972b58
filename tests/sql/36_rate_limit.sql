-- Workflows, the create_run rate limit (docs/sql-contract.md, "Workflows"): 10 calls per project
-- per minute of runhub's clock (runhub._now()), counted in the project's own sequence
-- (projects.create_run_counter), which goes with its project. Every rate-limit and create_run
-- counter test is in this file; the other files only reset a project's counter (pg_temp.reset_rate,
-- helpers.psql) before a run of calls. The calls below set runhub's clock (pg_temp.set_clock) to a
-- known second of a fresh minute, and across a minute's end, instead of waiting for one.
BEGIN;
\ir helpers.psql
SELECT * FROM no_plan();

\set owner2   '''ffffffff-0000-4000-8000-000000000004'''
\set pp '{"subject": "Spring sale", "content": "Up to 30% off"}'

-- ---------------------------------------------------------------------------------------------
SELECT runhub.create_project('Other shop', :owner2, 'UTC', 'EUR') AS other \gset
-- A deleted project takes its create_run counter (a sequence) with it.
SELECT create_run_counter::text AS other_counter FROM runhub.projects WHERE id = :'other' \gset
SELECT matches(:'other_counter'::text, '^runhub\.create_run_counter_[0-9a-f]{32}$', 'the counter is named after what it counts and its project');
SELECT isnt(to_regclass(:'other_counter'), NULL, 'a project has its own counter sequence');
DELETE FROM runhub.projects WHERE id = :'other';
SELECT is(to_regclass(:'other_counter'), NULL, 'deleting the project drops its counter');

-- ---------------------------------------------------------------------------------------------
-- Another project, whose member's onboard_users call is refused for having no recipients (the
-- onboarding shop with sam, vic and wes suppressed too: the member's preview counts none).
SELECT pg_temp.onboard_shop(:owner, :member) AS onb \gset
SELECT runhub.suppress(:'onb', :owner, e) FROM unnest(ARRAY['sam@example.com', 'vic@example.com', 'wes@example.com']) e \g /dev/null
SELECT runhub.preview(:'onb', :member, 'onboard_users') \g /dev/null

-- The rate limit: 10 create_run calls per project per clock minute, whatever their outcome; the
-- 11th gets PT429. Membership and role come first and are not counted.
SELECT runhub.create_project('Rate shop', :owner, 'UTC', 'EUR') AS rl \gset
SELECT runhub.add_member(:'rl', :owner, :member, 'member') \g /dev/null
SELECT runhub.update_project_settings(:'rl', :owner, '{"integrations": ["email"]}') \g /dev/null
SELECT pg_temp.ev(:'rl', 'user_signed_up', 'rl1', '1 day', '{"email": "rl1@example.com"}') \g /dev/null
SELECT runhub.preview(:'rl', :owner, 'onboard_users') ->> 'previewId' AS rl_preview \gset
-- The eleven calls below must fall in one minute of runhub's clock: set it to second 0 of a fresh one.
SELECT pg_temp.set_clock(0) AS rl_minute \gset
SELECT is(pg_temp.clock_minute(), :'rl_minute'::bigint, 'runhub''s clock reads the minute it was set to');
SELECT ok(extract(epoch FROM runhub._now()) - :'rl_minute'::bigint * 60 BETWEEN 0 AND 5,
          'runhub''s clock reads the second it was set to (0, plus the time since)');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rl', :owner, 'onboard_users', 'rl-0', '{"x": 1}')), 'PT400 workflows.unknownParam x', 'call 1: refused (unknown param)');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rl', :owner, 'onboard_users', '')), 'PT400 workflows.invalidParams idempotencyKey', 'call 2: refused (empty key)');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rl', :owner, 'send_promo', 'rl-0')), 'PT400 workflows.invalidParams subject', 'call 3: refused (no subject)');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rl', :owner, 'recover_abandoned', 'rl-0')), 'PT422 workflows.requires.integration', 'call 4: refused (prerequisite)');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rl', :owner, 'send_promo', 'rl-0', :'pp')), 'PT422 workflows.policy.previewRequired', 'call 5: refused (no preview)');
SELECT is(runhub.create_run(:'rl', :owner, 'onboard_users', 'rl-1') - 'runId', '{"status": "queued", "deduplicated": false}'::jsonb, 'call 6: a run');
SELECT is(runhub.create_run(:'rl', :owner, 'onboard_users', 'rl-1') - 'runId', '{"status": "queued", "deduplicated": true}'::jsonb, 'call 7: deduplicated');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rl', :owner, 'onboard_users', 'rl-2')), 'PT409 workflows.policy.cooldownActive', 'call 8: refused (cooldown)');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rl', :owner, 'onboard_users', 'rl-3', '[1]')), 'PT400 workflows.invalidParams params', 'call 9: refused (params)');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rl', :owner, 'onboard_users', 'rl-4', jsonb_build_object('x', repeat('a', 32768)))),
          'PT413 workflows.paramsTooLarge', 'call 10: refused (too large)');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rl', :member, 'send_promo', 'rl-5', :'pp')), 'PT403 workflows.policy.ownerRequired',
          'a member''s send_promo: the role refusal comes before the limit (and is not counted)');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rl', :stranger, 'onboard_users', 'rl-5')), 'PT404 projects.notFound',
          'a non-member: PT404 before the limit');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rl', :owner, 'onboard_everyone', 'rl-5')), 'PT404 workflows.actionNotFound',
          'an unknown action: PT404 before the limit');
SELECT runhub.preview(:'rl', :owner, 'send_promo', :'pp') ->> 'previewId' AS rl_promo_preview \gset
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rl', :owner, 'send_promo', 'rl-5', :'pp', :'rl_promo_preview')), 'PT429 workflows.policy.rateLimited',
          'call 11, valid in every other way: PT429 workflows.policy.rateLimited');
SELECT pg_temp.detail(pg_temp.create_sql(:'rl', :owner, 'send_promo', 'rl-5', :'pp', :'rl_promo_preview')) AS rl_detail \gset
SELECT is((:'rl_detail'::jsonb) - 'retryAfterSeconds', '{"limit": 10, "windowSeconds": 60}'::jsonb, 'rateLimited names the limit and its window');
SELECT ok(((:'rl_detail'::jsonb) ->> 'retryAfterSeconds')::int BETWEEN 1 AND 60, 'retryAfterSeconds is within the minute');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rl', :owner, 'onboard_users', 'rl-1')), 'PT429 workflows.policy.rateLimited',
          'even a replay is limited (the limit comes before idempotency)');
SELECT is(pg_temp.clock_minute(), :'rl_minute'::bigint, 'all the calls above fell in one minute of runhub''s clock');
SELECT is((SELECT array_agg(idempotency_key) FROM runhub.workflow_runs WHERE project_id = :'rl'), '{rl-1}', 'the limited calls wrote no run');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'onb', :member, 'onboard_users', 'onb-4')), 'PT422 workflows.policy.noRecipients',
          'another project''s calls are counted separately');

-- Across a minute's end: the count starts again in the next minute of runhub's clock, not before.
-- 'rl' has used its 10 calls; at second 50 of the next minute the limit counts afresh, the 11th call
-- of that minute is refused with 10 s to wait, and at the minute after it the count starts again.
SELECT pg_temp.set_clock(50) AS rl_minute2 \gset
SELECT is(:'rl_minute2'::bigint, :'rl_minute'::bigint + 1, 'the clock moved to the next minute');
SELECT is(runhub.create_run(:'rl', :owner, 'onboard_users', 'rl-1') - 'runId', '{"status": "queued", "deduplicated": true}'::jsonb,
          'the next minute: the count starts again (the replay of rl-1 is answered)');
SELECT is(array_agg(x), array_fill('PT409 workflows.policy.cooldownActive'::text, ARRAY[9]), 'calls 2-10 of that minute pass the limit')
  FROM (SELECT pg_temp.refusal(pg_temp.create_sql(:'rl', :owner, 'onboard_users', 'rl-b' || i)) AS x FROM generate_series(2, 10) i) c;
SELECT pg_temp.detail(pg_temp.create_sql(:'rl', :owner, 'onboard_users', 'rl-b11')) AS rl_detail2 \gset
SELECT is(:'rl_detail2'::jsonb - 'retryAfterSeconds', '{"limit": 10, "windowSeconds": 60}'::jsonb, 'call 11 of that minute is limited');
SELECT ok(((:'rl_detail2'::jsonb) ->> 'retryAfterSeconds')::int BETWEEN 1 AND 10,
          'at second 50 (and a little), retryAfterSeconds is what is left of the minute: at most 10');
SELECT is(pg_temp.clock_minute(), :'rl_minute2'::bigint, 'those calls fell in one minute of runhub''s clock');
SELECT is(pg_temp.set_clock(0), :'rl_minute2'::bigint + 1, 'the clock moved across the minute''s end');
SELECT is(runhub.create_run(:'rl', :owner, 'onboard_users', 'rl-1') - 'runId', '{"status": "queued", "deduplicated": true}'::jsonb,
          'once the minute is over, the project may call again');
SELECT is((SELECT array_agg(idempotency_key) FROM runhub.workflow_runs WHERE project_id = :'rl'), '{rl-1}', 'still the one run');
SELECT pg_temp.reset_clock() \g /dev/null
SELECT is(runhub._clock_offset(), interval '0', 'runhub''s clock is back to the real time');

SELECT * FROM finish();
ROLLBACK;
