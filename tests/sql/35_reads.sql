-- Workflows, reading runs (docs/sql-contract.md, "Workflows"): get_run and list_runs (order,
-- filters, their refusals, the documented WorkflowRun keys), stale runs. get_run of a queued and
-- of a delivering run: 32_create_run.sql and 33_execution_leases.sql.
-- Fixtures pg_temp.ops_shop, recover_queued_run: helpers.psql.
BEGIN;
\ir helpers.psql
SELECT * FROM no_plan();

-- ---------------------------------------------------------------------------------------------
-- The ops shop's five onboard_users runs, all by the member: ops-1 cancelled while queued; ops-2
-- executed (running, delivering to ops1 and ops2); ops-3 cancelled while a worker held it; ops-4
-- failed (its actor had left the project); ops-5 failed (another run 10 minutes before it).
SELECT pg_temp.ops_shop(:owner, :member) AS ops \gset
SELECT pg_temp.reset_rate(:'ops') \g /dev/null
SELECT runhub.preview(:'ops', :member, 'onboard_users') ->> 'previewId' AS ops_pv \gset
SELECT runhub.create_run(:'ops', :member, 'onboard_users', 'ops-1', '{}', NULL, :'ops_pv') ->> 'runId' AS ops1 \gset
SELECT runhub.cancel_run(:'ops', :member, :'ops1') \g /dev/null
SELECT runhub.create_run(:'ops', :member, 'onboard_users', 'ops-2', '{}', NULL, :'ops_pv') ->> 'runId' AS ops2 \gset
SELECT runhub.process_runs() \g /dev/null
UPDATE runhub.workflow_runs SET requested_at = now() - interval '2 hours' WHERE id = :'ops2';

SELECT pg_temp.ev(:'ops', 'user_signed_up', 'ops3', '1 day', '{"email": "ops3@example.com"}') \g /dev/null
SELECT runhub.preview(:'ops', :member, 'onboard_users') ->> 'previewId' AS ops_pv \gset
SELECT runhub.create_run(:'ops', :member, 'onboard_users', 'ops-3', '{}', NULL, :'ops_pv') ->> 'runId' AS ops3 \gset
SELECT runhub.claim_runs('worker-3') \g /dev/null
SELECT runhub.cancel_run(:'ops', :owner, :'ops3') \g /dev/null

SELECT runhub.create_run(:'ops', :member, 'onboard_users', 'ops-4', '{}', NULL, :'ops_pv') ->> 'runId' AS ops4 \gset
DELETE FROM runhub.project_members WHERE project_id = :'ops' AND user_id = :member;
SELECT runhub.process_runs() \g /dev/null
SELECT runhub.add_member(:'ops', :owner, :member, 'member') \g /dev/null

SELECT runhub.create_run(:'ops', :member, 'onboard_users', 'ops-5', '{}', NULL, :'ops_pv') ->> 'runId' AS ops5 \gset
UPDATE runhub.workflow_runs SET requested_at = now() - interval '10 minutes' WHERE id = :'ops2';
SELECT runhub.process_runs() \g /dev/null
SELECT is((SELECT jsonb_object_agg(idempotency_key, status) FROM runhub.workflow_runs WHERE project_id = :'ops'),
          '{"ops-1": "cancelled", "ops-2": "running", "ops-3": "cancelled", "ops-4": "failed", "ops-5": "failed"}'::jsonb,
          'fixture: the ops shop''s runs are in the states this file reads');

-- Another project of the owner's, with its run rec-1 (queued, never processed).
SELECT pg_temp.recover_queued_run(:owner, :admin, :member) AS rec1 \gset

-- Stale runs: running for over 30 minutes.
UPDATE runhub.workflow_runs SET started_at = now() - interval '31 minutes' WHERE id = :'ops2';
SELECT is(runhub.get_run(:'ops', :owner, :'ops2') -> 'stale', 'true'::jsonb, 'a run running for 31 minutes is stale');
SELECT results_eq($$SELECT id, action_id, running_for FROM runhub.stale_runs$$,
                  format($$VALUES (%L::uuid, 'onboard_users', interval '31 minutes')$$, :'ops2'),
                  'runhub.stale_runs lists it, and only it');
UPDATE runhub.workflow_runs SET started_at = now() - interval '29 minutes' WHERE id = :'ops2';
SELECT is(jsonb_build_array(runhub.get_run(:'ops', :owner, :'ops2') -> 'stale', (SELECT count(*) FROM runhub.stale_runs)), '[false, 0]'::jsonb,
          'at 29 minutes it is not stale');
UPDATE runhub.workflow_runs SET started_at = now() - interval '30 minutes' WHERE id = :'ops2';
SELECT is(jsonb_build_array(runhub.get_run(:'ops', :owner, :'ops2') -> 'stale', (SELECT count(*) FROM runhub.stale_runs)), '[false, 0]'::jsonb,
          'at exactly 30 minutes (staleRunMinutes) it is not stale yet: over 30 is');
UPDATE runhub.workflow_runs SET started_at = now() - interval '30 minutes 1 microsecond' WHERE id = :'ops2';
SELECT is(jsonb_build_array(runhub.get_run(:'ops', :owner, :'ops2') -> 'stale', (SELECT count(*) FROM runhub.stale_runs)), '[true, 1]'::jsonb,
          'a microsecond over 30 minutes: stale, and in runhub.stale_runs');
UPDATE runhub.workflow_runs SET started_at = now() - interval '29 minutes' WHERE id = :'ops2';

-- ---------------------------------------------------------------------------------------------
-- get_run / list_runs.
UPDATE runhub.workflow_runs r SET requested_at = now() - make_interval(hours => v.h)
  FROM (VALUES ('ops-1', 4), ('ops-2', 3), ('ops-3', 2), ('ops-4', 1), ('ops-5', 5)) v(k, h)
 WHERE r.project_id = :'ops' AND r.idempotency_key = v.k;
CREATE FUNCTION pg_temp.run_keys(p_runs jsonb)
RETURNS text[] LANGUAGE sql
AS $$ SELECT coalesce(array_agg(k.idempotency_key ORDER BY n), '{}')
        FROM jsonb_array_elements(p_runs) WITH ORDINALITY AS t(r, n)
        JOIN runhub.workflow_runs k ON k.id = (r ->> 'id')::uuid $$;
SELECT is(pg_temp.run_keys(runhub.list_runs(:'ops', :member)), '{ops-4,ops-3,ops-2,ops-1,ops-5}', 'list_runs: newest first');
SELECT is(pg_temp.run_keys(runhub.list_runs(:'ops', :member, '{"status": "cancelled"}')), '{ops-3,ops-1}', 'list_runs filtered by status');
SELECT is(pg_temp.run_keys(runhub.list_runs(:'ops', :member, '{"actionId": "onboard_users", "limit": 2}')), '{ops-4,ops-3}',
          'list_runs filtered by action, limited');
SELECT is(runhub.list_runs(:'ops', :member, '{"actionId": "send_promo"}'), '[]'::jsonb, 'list_runs with no match: []');
SELECT is(pg_temp.run_keys(runhub.list_runs(:'ops', :member, '{"limit": 1}')), '{ops-4}', 'list_runs limit 1 (its lower bound): the newest');
SELECT is(pg_temp.run_keys(runhub.list_runs(:'ops', :member, '{"limit": 100}')), '{ops-4,ops-3,ops-2,ops-1,ops-5}', 'list_runs limit 100 (its upper bound): all five');
SELECT is(runhub.list_runs(:'ops', :member) -> 2, runhub.get_run(:'ops', :member, :'ops2'), 'list_runs items are get_run''s WorkflowRun');
SELECT is(ARRAY(SELECT v.f || ' -> ' || pg_temp.refusal(format('SELECT runhub.list_runs(%L, %L, %L)', :'ops', :member, v.f))
                  FROM (VALUES ('{"limit": 0}', 'PT400 common.invalidInput limit'), ('{"limit": 101}', 'PT400 common.invalidInput limit'),
                               ('{"limit": "5"}', 'PT400 common.invalidInput limit'), ('{"status": "done"}', 'PT400 common.invalidInput status'),
                               ('{"actionId": "nope"}', 'PT400 common.invalidInput actionId'), ('{"order": "asc"}', 'PT400 common.unknownField order'),
                               ('[]', 'PT400 common.invalidInput filters')) v(f, expected)
                 WHERE pg_temp.refusal(format('SELECT runhub.list_runs(%L, %L, %L)', :'ops', :member, v.f)) IS DISTINCT FROM v.expected),
          '{}'::text[], 'bad list_runs filters: PT400 with the field');
SELECT is(pg_temp.refusal(format('SELECT runhub.list_runs(%L, %L)', :'ops', :stranger)), 'PT404 projects.notFound', 'list_runs by a non-member: PT404');
SELECT is(pg_temp.refusal(format('SELECT runhub.get_run(%L, %L, %L)', :'ops', :stranger, :'ops2')), 'PT404 projects.notFound', 'get_run by a non-member: PT404');
SELECT is(pg_temp.refusal(format('SELECT runhub.get_run(%L, %L, %L)', :'ops', :owner, :'rec1')), 'PT404 workflows.runNotFound',
          'get_run of another project''s run (the actor is a member of both): PT404 workflows.runNotFound');
SELECT is(pg_temp.detail(format('SELECT runhub.get_run(%L, %L, %L)', :'ops', :owner, :'rec1')), jsonb_build_object('runId', :'rec1'),
          'runNotFound names the run');
SELECT is(pg_temp.refusal(pg_temp.cancel_sql(:'ops', :owner, :'rec1')), 'PT404 workflows.runNotFound',
          'cancel_run of another project''s run: PT404 workflows.runNotFound');
SELECT is(pg_temp.refusal(format('SELECT runhub.get_run(%L, %L, %L)', :'ops', :owner, 'ffffffff-0000-4000-8000-00000000cccc')),
          'PT404 workflows.runNotFound', 'get_run of an unknown run: PT404 workflows.runNotFound');
SELECT is_empty($$SELECT DISTINCT k FROM runhub.workflow_runs r JOIN runhub.projects p ON p.id = r.project_id,
                          jsonb_object_keys(runhub.get_run(r.project_id, p.owner_id, r.id)) k
                   WHERE k <> ALL (ARRAY['id', 'projectId', 'actionId', 'status', 'requestedAt', 'clientRequestedAt', 'startedAt',
                                         'executedAt', 'completedAt', 'cancelRequestedAt', 'params', 'recipientCountEstimate', 'attempts',
                                         'leaseExpiresAt', 'triggeredBy', 'previewId', 'result', 'stale', 'outcome'])$$,
                'no run has a key outside the documented WorkflowRun');

SELECT * FROM finish();
ROLLBACK;
