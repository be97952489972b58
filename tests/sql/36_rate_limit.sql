-- Workflows, the create_run rate limit (docs/sql-contract.md, "Workflows"): 10 calls per project
-- per clock minute, counted in the project's own sequence (projects.trigger_counter), which goes
-- with its project. Every rate-limit and trigger-counter test is in this file; the other files
-- only reset a project's counter (pg_temp.reset_rate, helpers.psql) before a run of calls.
-- The limit reads clock_timestamp(): the calls below wait for a clock minute with 5 s left.
BEGIN;
\ir helpers.psql
SELECT * FROM no_plan();

\set owner    '''ffffffff-0000-4000-8000-000000000001'''
\set member   '''ffffffff-0000-4000-8000-000000000003'''
\set owner2   '''ffffffff-0000-4000-8000-000000000004'''
\set stranger '''ffffffff-0000-4000-8000-0000000000ff'''
\set pp '{"subject": "Spring sale", "content": "Up to 30% off"}'

-- ---------------------------------------------------------------------------------------------
SELECT runhub.create_project('Other shop', :owner2, 'UTC', 'EUR') AS other \gset
-- A deleted project takes its create_run counter (a sequence) with it.
SELECT trigger_counter::text AS other_counter FROM runhub.projects WHERE id = :'other' \gset
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
-- The eleven calls below must fall in one clock minute: if fewer than 5 seconds are left in this
-- one, wait for the next to start.
SELECT pg_sleep(CASE WHEN s < 5 THEN s + 0.05 ELSE 0 END)
  FROM (SELECT (60 - mod(extract(epoch FROM clock_timestamp())::numeric, 60))::float8 AS s) x \g /dev/null
SELECT floor(extract(epoch FROM clock_timestamp()) / 60)::bigint AS rl_minute \gset
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
SELECT is(floor(extract(epoch FROM clock_timestamp()) / 60)::bigint, :'rl_minute'::bigint, 'all the calls above fell in one clock minute');
SELECT is((SELECT array_agg(idempotency_key) FROM runhub.workflow_runs WHERE project_id = :'rl'), '{rl-1}', 'the limited calls wrote no run');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'onb', :member, 'onboard_users', 'onb-4')), 'PT422 workflows.policy.noRecipients',
          'another project''s calls are counted separately');

SELECT * FROM finish();
ROLLBACK;
