-- Workflows, the create_run rate limit (docs/sql-contract.md, "Workflows"): 10 calls per project
-- per minute of runhub's clock (runhub._now()), counted in the project's row of
-- runhub.create_run_counts, which goes with its project; a call is counted when it commits, so a
-- refused one is not. Projects from before migration 0018 counted in a sequence of their own: their
-- first call retires it, keeping the minute's count. Every rate-limit and create_run counter test
-- is in this file; the other files only reset a project's count (pg_temp.reset_rate, helpers.psql)
-- before a run of calls. The calls below set runhub's clock (pg_temp.set_clock) to a known second
-- of a fresh minute, and across a minute's end, instead of waiting for one.
BEGIN;
\ir helpers.psql
SELECT * FROM no_plan();

\set owner2   '''ffffffff-0000-4000-8000-000000000004'''
\set pp '{"subject": "Spring sale", "content": "Up to 30% off"}'

-- ---------------------------------------------------------------------------------------------
-- A project is rows: creating one makes no relation, and its count goes with it.
SELECT count(*) AS relations_before FROM pg_class \gset
SELECT runhub.create_project('Other shop', :owner2, 'UTC', 'EUR') AS other \gset
SELECT is((SELECT count(*) FROM pg_class), :'relations_before'::bigint, 'creating a project adds no relation to pg_class');
SELECT is(create_run_counter, NULL, 'a new project has no counter sequence') FROM runhub.projects WHERE id = :'other';
INSERT INTO runhub.create_run_counts (project_id, minute, calls) VALUES (:'other', 1, 1);
DELETE FROM runhub.projects WHERE id = :'other';
SELECT is_empty(format('SELECT 1 FROM runhub.create_run_counts WHERE project_id = %L', :'other'),
                'deleting the project deletes its count');

-- ---------------------------------------------------------------------------------------------
-- Another project, whose member's onboard_users call is refused for having no recipients (the
-- onboarding shop with sam, vic and wes suppressed too: the member's preview counts none).
SELECT pg_temp.onboard_shop(:owner, :member) AS onb \gset
SELECT runhub.suppress(:'onb', :owner, e) FROM unnest(ARRAY['sam@example.com', 'vic@example.com', 'wes@example.com']) e \g /dev/null
SELECT runhub.preview(:'onb', :member, 'onboard_users') \g /dev/null

-- The rate limit: 10 create_run calls per project per clock minute that return (a run created, or
-- the run an idempotency key made); the 11th gets PT429. A refused call rolls back whole, its count
-- with it. Membership and role come first.
SELECT runhub.create_project('Rate shop', :owner, 'UTC', 'EUR') AS rl \gset
SELECT runhub.add_member(:'rl', :owner, :member, 'member') \g /dev/null
SELECT runhub.update_project_settings(:'rl', :owner, '{"integrations": ["email"], "holdoutPercent": 0}') \g /dev/null
SELECT pg_temp.ev(:'rl', 'user_signed_up', 'rl1', '1 day', '{"email": "rl1@example.com"}') \g /dev/null
SELECT runhub.preview(:'rl', :owner, 'onboard_users') ->> 'previewId' AS rl_preview \gset
-- The calls below must fall in one minute of runhub's clock: set it to second 0 of a fresh one.
SELECT pg_temp.set_clock(0) AS rl_minute \gset
SELECT is(pg_temp.clock_minute(), :'rl_minute'::bigint, 'runhub''s clock reads the minute it was set to');
SELECT ok(extract(epoch FROM runhub._now()) - :'rl_minute'::bigint * 60 BETWEEN 0 AND 5,
          'runhub''s clock reads the second it was set to (0, plus the time since)');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rl', :owner, 'onboard_users', 'rl-0', '{"x": 1}')), 'PT400 workflows.unknownParam x', 'refused (unknown param)');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rl', :owner, 'onboard_users', '')), 'PT400 workflows.invalidParams idempotencyKey', 'refused (empty key)');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rl', :owner, 'send_promo', 'rl-0')), 'PT400 workflows.invalidParams subject', 'refused (no subject)');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rl', :owner, 'recover_abandoned', 'rl-0')), 'PT422 workflows.requires.integration', 'refused (prerequisite)');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rl', :owner, 'send_promo', 'rl-0', :'pp')), 'PT422 workflows.policy.previewRequired', 'refused (no preview)');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rl', :owner, 'onboard_users', 'rl-3', '[1]')), 'PT400 workflows.invalidParams params', 'refused (params)');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rl', :owner, 'onboard_users', 'rl-4', jsonb_build_object('x', repeat('a', 32768)))),
          'PT413 workflows.paramsTooLarge', 'refused (too large)');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rl', :member, 'send_promo', 'rl-5', :'pp')), 'PT403 workflows.policy.ownerRequired',
          'a member''s send_promo: the role refusal comes before the limit');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rl', :stranger, 'onboard_users', 'rl-5')), 'PT404 projects.notFound',
          'a non-member: PT404 before the limit');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rl', :owner, 'onboard_everyone', 'rl-5')), 'PT404 workflows.actionNotFound',
          'an unknown action: PT404 before the limit');
SELECT is_empty(format('SELECT 1 FROM runhub.create_run_counts WHERE project_id = %L', :'rl'), 'none of the refused calls was counted');
SELECT is(runhub.create_run(:'rl', :owner, 'onboard_users', 'rl-1') - 'runId', '{"status": "queued", "deduplicated": false}'::jsonb, 'call 1: a run');
SELECT results_eq(format('SELECT minute, calls FROM runhub.create_run_counts WHERE project_id = %L', :'rl'),
                  format('VALUES (%s::bigint, 1)', :'rl_minute'), 'it is counted in the project''s row, for this minute');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rl', :owner, 'onboard_users', 'rl-2')), 'PT409 workflows.policy.alreadyQueued',
          'refused (cooldown: rl-1 is still queued), not counted');
SELECT is(array_agg(x), array_fill('{"status": "queued", "deduplicated": true}'::jsonb, ARRAY[9]), 'calls 2-10: replays, answered')
  FROM (SELECT runhub.create_run(:'rl', :owner, 'onboard_users', 'rl-1') - 'runId' AS x FROM generate_series(2, 10) i) c;
SELECT is((SELECT calls FROM runhub.create_run_counts WHERE project_id = :'rl'), 10, 'ten calls counted');
SELECT runhub.preview(:'rl', :owner, 'send_promo', :'pp') ->> 'previewId' AS rl_promo_preview \gset
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rl', :owner, 'send_promo', 'rl-5', :'pp', :'rl_promo_preview')), 'PT429 workflows.policy.rateLimited',
          'call 11, valid in every other way: PT429 workflows.policy.rateLimited');
SELECT pg_temp.detail(pg_temp.create_sql(:'rl', :owner, 'send_promo', 'rl-5', :'pp', :'rl_promo_preview')) AS rl_detail \gset
SELECT is((:'rl_detail'::jsonb) - 'retryAfterSeconds', '{"limit": 10, "windowSeconds": 60}'::jsonb, 'rateLimited names the limit and its window');
SELECT ok(((:'rl_detail'::jsonb) ->> 'retryAfterSeconds')::int BETWEEN 1 AND 60, 'retryAfterSeconds is within the minute');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rl', :owner, 'onboard_users', 'rl-1')), 'PT429 workflows.policy.rateLimited',
          'even a replay is limited (the limit comes before idempotency)');
SELECT is((SELECT calls FROM runhub.create_run_counts WHERE project_id = :'rl'), 10, 'the limited calls left the count at ten');
SELECT is(pg_temp.clock_minute(), :'rl_minute'::bigint, 'all the calls above fell in one minute of runhub''s clock');
SELECT is((SELECT array_agg(idempotency_key) FROM runhub.workflow_runs WHERE project_id = :'rl'), '{rl-1}', 'the limited calls wrote no run');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'onb', :member, 'onboard_users', 'onb-4')), 'PT422 workflows.policy.noRecipients',
          'another project''s calls are counted separately');

-- Across a minute's end: the count starts again in the next minute of runhub's clock, not before.
-- 'rl' has used its 10 calls; at second 50 of the next minute the limit counts afresh, the 11th call
-- of that minute is refused with 10 s to wait, and at the minute after it the count starts again.
SELECT pg_temp.set_clock(50) AS rl_minute2 \gset
SELECT is(:'rl_minute2'::bigint, :'rl_minute'::bigint + 1, 'the clock moved to the next minute');
SELECT is(array_agg(x), array_fill('{"status": "queued", "deduplicated": true}'::jsonb, ARRAY[10]),
          'the next minute: the count starts again (ten replays of rl-1 are answered)')
  FROM (SELECT runhub.create_run(:'rl', :owner, 'onboard_users', 'rl-1') - 'runId' AS x FROM generate_series(1, 10) i) c;
SELECT pg_temp.detail(pg_temp.create_sql(:'rl', :owner, 'onboard_users', 'rl-b11')) AS rl_detail2 \gset
SELECT is(:'rl_detail2'::jsonb - 'retryAfterSeconds', '{"limit": 10, "windowSeconds": 60}'::jsonb, 'call 11 of that minute is limited');
SELECT ok(((:'rl_detail2'::jsonb) ->> 'retryAfterSeconds')::int BETWEEN 1 AND 10,
          'at second 50 (and a little), retryAfterSeconds is what is left of the minute: at most 10');
SELECT is(pg_temp.clock_minute(), :'rl_minute2'::bigint, 'those calls fell in one minute of runhub''s clock');
SELECT is(pg_temp.set_clock(0), :'rl_minute2'::bigint + 1, 'the clock moved across the minute''s end');
SELECT is(runhub.create_run(:'rl', :owner, 'onboard_users', 'rl-1') - 'runId', '{"status": "queued", "deduplicated": true}'::jsonb,
          'once the minute is over, the project may call again');
SELECT results_eq(format('SELECT minute, calls FROM runhub.create_run_counts WHERE project_id = %L', :'rl'),
                  format('VALUES (%s::bigint, 1)', :'rl_minute2'::bigint + 1), 'its row counts the new minute from one');
SELECT is((SELECT array_agg(idempotency_key) FROM runhub.workflow_runs WHERE project_id = :'rl'), '{rl-1}', 'still the one run');

-- ---------------------------------------------------------------------------------------------
-- A project from before migration 0018, still counting in a sequence of its own
-- (projects.create_run_counter; `runhub deploy` retires them in batches after an upgrade:
-- tests/db/test_scale.py): its first call retires it, keeping the minute's count; a batch retires
-- the others; deleting a project not yet retired drops its sequence.
SELECT pg_temp.set_clock(0) AS old_minute \gset
SELECT runhub.create_project('Old shop', :owner, 'UTC', 'EUR') AS old1 \gset
SELECT runhub.update_project_settings(:'old1', :owner, '{"integrations": ["email"], "holdoutPercent": 0}') \g /dev/null
SELECT pg_temp.ev(:'old1', 'user_signed_up', 'o1', '1 day', '{"email": "o1@example.com"}') \g /dev/null
SELECT runhub.preview(:'old1', :owner, 'onboard_users') \g /dev/null
SELECT runhub.create_run(:'old1', :owner, 'onboard_users', 'o-1') \g /dev/null
DELETE FROM runhub.create_run_counts WHERE project_id = :'old1';  -- its count is in the sequence below
SELECT runhub.create_project('Old shop 2', :owner, 'UTC', 'EUR') AS old2 \gset
SELECT runhub.create_project('Old shop 3', :owner, 'UTC', 'EUR') AS old3 \gset
-- The sequence a project had before 0018: value = minute since the epoch * 2^20 + calls in it.
CREATE FUNCTION pg_temp.legacy_counter(p_project uuid, p_minute bigint, p_calls int) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_name text := 'create_run_counter_' || replace(p_project::text, '-', '');
BEGIN
    EXECUTE format('CREATE SEQUENCE runhub.%I', v_name);
    EXECUTE format('ALTER SEQUENCE runhub.%I OWNER TO runhub_owner', v_name);  -- create_project made it as the owner
    PERFORM setval(format('runhub.%I', v_name)::regclass, (p_minute << 20) + p_calls);
    UPDATE runhub.projects SET create_run_counter = format('runhub.%I', v_name)::regclass WHERE id = p_project;
    RETURN format('runhub.%I', v_name);
END $$;
SELECT pg_temp.legacy_counter(:'old1', :'old_minute', 9) AS old1_seq \gset
SELECT pg_temp.legacy_counter(:'old2', :'old_minute' - 1, 7) AS old2_seq \gset
SELECT pg_temp.legacy_counter(:'old3', :'old_minute', 4) AS old3_seq \gset
SELECT is(runhub._create_run_counters_left(), 3::bigint, 'three projects count in sequences');
SELECT is(runhub.create_run(:'old1', :owner, 'onboard_users', 'o-1') - 'runId', '{"status": "queued", "deduplicated": true}'::jsonb,
          'a project counting in a sequence: its 9 calls of this minute and this one make 10');
SELECT is(to_regclass(:'old1_seq'), NULL, 'its first call dropped its sequence');
SELECT is(create_run_counter, NULL, 'and cleared projects.create_run_counter') FROM runhub.projects WHERE id = :'old1';
SELECT is((SELECT calls FROM runhub.create_run_counts WHERE project_id = :'old1'), 10, 'its row holds the 10 calls');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'old1', :owner, 'onboard_users', 'o-1')), 'PT429 workflows.policy.rateLimited',
          'so its next call of the minute is limited: no count was lost');
SELECT results_eq($$SELECT retired, last_id IS NOT NULL FROM runhub._retire_create_run_counters(NULL, 10)$$,
                  $$VALUES (2, true)$$, 'a batch retires the other two');
SELECT results_eq($$SELECT retired, last_id FROM runhub._retire_create_run_counters(NULL, 10)$$,
                  $$VALUES (0, NULL::uuid)$$, 'and the next finds none');
SELECT is(runhub._create_run_counters_left(), 0::bigint, 'no project counts in a sequence any more');
SELECT is((SELECT count(*) FROM runhub.projects WHERE id IN (:'old2', :'old3') AND create_run_counter IS NULL), 2::bigint,
          'both are cleared');
SELECT is_empty(format('SELECT 1 FROM runhub.create_run_counts WHERE project_id = %L', :'old2'),
                'a count of an earlier minute is not carried over');
SELECT results_eq(format('SELECT minute, calls FROM runhub.create_run_counts WHERE project_id = %L', :'old3'),
                  format('VALUES (%s::bigint, 4)', :'old_minute'), 'the count of this minute is');
SELECT runhub.create_project('Old shop 4', :owner, 'UTC', 'EUR') AS old4 \gset
SELECT pg_temp.legacy_counter(:'old4', :'old_minute', 1) AS old4_seq \gset
DELETE FROM runhub.projects WHERE id = :'old4';
SELECT is(to_regclass(:'old4_seq'), NULL, 'deleting a project not yet retired drops its sequence');

SELECT pg_temp.reset_clock() \g /dev/null
SELECT is(runhub._clock_offset(), interval '0', 'runhub''s clock is back to the real time');

SELECT * FROM finish();
ROLLBACK;
