-- Workflows, cancel_run and suppress (docs/sql-contract.md, "Workflows"): cancelling a delivering
-- run (queued messages cancelled, one being sent runs its course), a queued run, a run a worker
-- holds; suppress (who may, its refusals, its queued messages cancelled at once) and the runs
-- after it. cancel_run of a failed run: 33_execution_leases.sql; of another project's run:
-- 35_reads.sql. Fixtures pg_temp.recover_queued_run, ops_shop, promo_update_run: helpers.psql.
BEGIN;
\ir helpers.psql
SELECT * FROM no_plan();

-- ---------------------------------------------------------------------------------------------
-- The recover shop's run rec-1, executed: 6 recipients (ann, bob, erin, ivy, kim, leo), each
-- with a queued message.
SELECT pg_temp.recover_queued_run(:owner, :admin, :member) AS rec1 \gset
SELECT project_id AS rec FROM runhub.workflow_runs WHERE id = :'rec1' \gset
SELECT runhub.process_runs() \g /dev/null

-- cancel_run on a delivering run: queued messages and their recipients are cancelled; a message
-- being sent runs its course (its recipient is not reported cancelled), a sent one stays sent.
UPDATE runhub.outbox SET status = 'sent', sent_at = now() WHERE run_id = :'rec1' AND to_email = 'ann@example.com';
UPDATE runhub.workflow_run_recipients SET status = 'sent' WHERE run_id = :'rec1' AND email = 'ann@example.com';
UPDATE runhub.outbox SET status = 'sending', lease_owner = 'sender-1', lease_expires_at = now() + interval '1 minute'
 WHERE run_id = :'rec1' AND to_email = 'bob@example.com';
SELECT is(pg_temp.refusal(pg_temp.cancel_sql(:'rec', :member, :'rec1')), 'PT403 auth.roleRequired',
          'cancel_run needs the action''s role: a member cannot cancel a recovery run');
SELECT runhub.cancel_run(:'rec', :admin, :'rec1') AS rec1_cancelled \gset
SELECT is((:'rec1_cancelled'::jsonb) ->> 'status', 'cancelled', 'cancel_run on a delivering run: cancelled');
SELECT results_eq(format($$SELECT to_email, status FROM runhub.outbox WHERE run_id = %L ORDER BY to_email$$, :'rec1'),
                  $$VALUES ('ann@example.com', 'sent'), ('bob@example.com', 'sending'), ('erin@example.com', 'cancelled'),
                           ('ivy@example.com', 'cancelled'), ('kim@example.com', 'cancelled'), ('leo@example.com', 'cancelled')$$,
                  'queued messages are cancelled; the sent one and the one being sent are left alone');
SELECT results_eq(format($$SELECT email, status FROM runhub.workflow_run_recipients WHERE run_id = %L ORDER BY email$$, :'rec1'),
                  $$VALUES ('ann@example.com', 'sent'), ('bob@example.com', 'queued'), ('erin@example.com', 'cancelled'),
                           ('ivy@example.com', 'cancelled'), ('kim@example.com', 'cancelled'), ('leo@example.com', 'cancelled')$$,
                  'only the recipients whose messages were cancelled are cancelled (bob''s message is being sent)');
SELECT is((:'rec1_cancelled'::jsonb) -> 'result',
          '{"totalRecipients": 6, "successful": 1, "failed": 0, "pending": 1, "cancelled": 4, "errorSummary": "Cancelled by admin"}'::jsonb,
          'the cancelled run''s result: the counts at cancellation and who cancelled');
SELECT is((:'rec1_cancelled'::jsonb) - ARRAY['result', 'params', 'triggeredBy', 'previewId', 'id', 'projectId', 'actionId',
                                              'recipientCountEstimate', 'clientRequestedAt', 'outcome', 'requestedAt'],
          jsonb_build_object('status', 'cancelled', 'startedAt', runhub._iso(now()), 'executedAt', runhub._iso(now()),
                             'completedAt', runhub._iso(now()), 'cancelRequestedAt', runhub._iso(now()), 'attempts', 1, 'stale', false),
          'cancel_run returns the run: completed and cancel requested now');
SELECT is(pg_temp.refusal(pg_temp.cancel_sql(:'rec', :admin, :'rec1')), 'PT409 workflows.runNotCancellable',
          'cancelling a finished run: PT409 workflows.runNotCancellable');
SELECT is(pg_temp.detail(pg_temp.cancel_sql(:'rec', :admin, :'rec1')), jsonb_build_object('runId', :'rec1', 'status', 'cancelled'),
          'runNotCancellable names the run and its status');

-- ---------------------------------------------------------------------------------------------
-- cancel_run on a queued run, and on a run a worker holds (the ops shop, previewed by the member).
SELECT pg_temp.ops_shop(:owner, :member) AS ops \gset
SELECT pg_temp.reset_rate(:'ops') \g /dev/null
SELECT runhub.preview(:'ops', :member, 'onboard_users') \g /dev/null
SELECT runhub.create_run(:'ops', :member, 'onboard_users', 'ops-1') ->> 'runId' AS ops1 \gset
SELECT runhub.cancel_run(:'ops', :member, :'ops1') AS ops1_cancelled \gset
SELECT is(jsonb_build_array((:'ops1_cancelled'::jsonb) -> 'status', (:'ops1_cancelled'::jsonb) -> 'result', (:'ops1_cancelled'::jsonb) -> 'completedAt'),
          jsonb_build_array('cancelled', '{"totalRecipients": 0, "successful": 0, "failed": 0, "pending": 0, "cancelled": 0, "errorSummary": "Cancelled by member"}'::jsonb,
                            runhub._iso(now())),
          'cancel_run on a queued run (by a member, the action''s role): cancelled outright');
SELECT is(runhub.process_runs(), 0, 'a cancelled run is not executed');
SELECT is(pg_temp.refusal(pg_temp.cancel_sql(:'ops', :member, :'ops1')), 'PT409 workflows.runNotCancellable', 'cancelling it again: PT409');

-- ops-2 mails ops1 and ops2.
SELECT runhub.create_run(:'ops', :member, 'onboard_users', 'ops-2') ->> 'runId' AS ops2 \gset
SELECT runhub.process_runs() \g /dev/null

-- Cancelling a run a worker holds but has not executed: the worker finds its lease gone.
SELECT pg_temp.ev(:'ops', 'user_signed_up', 'ops3', '1 day', '{"email": "ops3@example.com"}') \g /dev/null
UPDATE runhub.workflow_runs SET requested_at = now() - interval '2 hours' WHERE id = :'ops2';
SELECT is(runhub.preview(:'ops', :member, 'onboard_users') -> 'count', '1'::jsonb, 'ops3 is the one new sign-up');
SELECT runhub.create_run(:'ops', :member, 'onboard_users', 'ops-3') ->> 'runId' AS ops3 \gset
SELECT set_eq($$SELECT runhub.claim_runs('worker-3')$$, ARRAY[:'ops3'::uuid], 'worker-3 claims ops-3');
SELECT is(runhub.cancel_run(:'ops', :owner, :'ops3') ->> 'status', 'cancelled', 'the owner cancels it while worker-3 holds it');
SELECT results_eq(format($$SELECT status, lease_owner, lease_expires_at FROM runhub.workflow_runs WHERE id = %L$$, :'ops3'),
                  $$VALUES ('cancelled', NULL::text, NULL::timestamptz)$$, 'cancelled, lease cleared');
SELECT is(runhub.execute_run(:'ops3', 'worker-3'), 'lease_lost', 'worker-3''s execute_run: lease_lost');
SELECT is_empty(format($$SELECT 1 FROM runhub.workflow_run_recipients WHERE run_id = %L$$, :'ops3'), '... and no recipients');

-- ---------------------------------------------------------------------------------------------
-- suppress (the promo shop, whose run promo-2 has mailed pat, quinn, ruth and vera: 4 queued
-- messages). uri is suppressed already.
SELECT pg_temp.promo_update_run(:owner, :admin, :member) AS promo2 \gset
SELECT project_id AS promo FROM runhub.workflow_runs WHERE id = :'promo2' \gset
\set pp '{"subject": "Spring sale", "content": "Up to 30% off"}'
-- suppress: no workflow mails the address again; its queued messages are cancelled at once.
UPDATE runhub.outbox SET status = 'sending', lease_owner = 'sender-1', lease_expires_at = now() + interval '1 minute'
 WHERE run_id = :'promo2' AND to_email = 'pat@example.com';
SELECT lives_ok(format($$SELECT runhub.suppress(%L, %L, ' Quinn@Example.COM ', 'unsubscribed')$$, :'promo', :admin), 'an admin suppresses an address (trimmed, lower-cased)');
SELECT lives_ok(format($$SELECT runhub.suppress(%L, %L, 'pat@example.com', 'bounced')$$, :'promo', :owner), 'the owner suppresses an address whose message is being sent');
SELECT results_eq(format($$SELECT o.to_email, o.status, r.status FROM runhub.outbox o
                             JOIN runhub.workflow_run_recipients r ON r.id = o.recipient_id WHERE o.run_id = %L ORDER BY o.to_email$$, :'promo2'),
                  $$VALUES ('pat@example.com', 'sending', 'queued'),
                           ('quinn@example.com', 'cancelled', 'cancelled'),
                           ('ruth@example.com', 'queued', 'queued'),
                           ('vera@example.com', 'queued', 'queued')$$,
                  'quinn''s queued message and recipient are cancelled; pat''s message in flight and the others are untouched');
SELECT lives_ok(format($$SELECT runhub.suppress(%L, %L, 'quinn@example.com', 'complained')$$, :'promo', :owner), 'suppressing again is not an error');
SELECT results_eq(format($$SELECT email, reason FROM runhub.suppressions WHERE project_id = %L ORDER BY email$$, :'promo'),
                  $$VALUES ('pat@example.com', 'bounced'), ('quinn@example.com', 'unsubscribed'), ('uri@example.com', 'manual')$$,
                  'suppressions: lower-cased, the first reason kept, manual by default');
SELECT is(runhub.get_run(:'promo', :owner, :'promo2') -> 'result',
          '{"totalRecipients": 4, "successful": 0, "failed": 0, "pending": 3, "cancelled": 1}'::jsonb,
          'the run''s live counts show the cancelled recipient');
SELECT is(pg_temp.refusal(format($$SELECT runhub.suppress(%L, %L, 'not-an-email')$$, :'promo', :owner)), 'PT400 common.invalidInput email',
          'suppress of something that is not an address: PT400 (email)');
SELECT is(pg_temp.refusal(format($$SELECT runhub.suppress(%L, %L, NULL)$$, :'promo', :owner)), 'PT400 common.invalidInput email',
          'suppress of null: PT400 (email)');
SELECT is(pg_temp.refusal(format($$SELECT runhub.suppress(%L, %L, 'x@example.com', 'spam')$$, :'promo', :owner)), 'PT400 common.invalidInput reason',
          'suppress with an unknown reason: PT400 (reason)');
SELECT is(pg_temp.refusal(format($$SELECT runhub.suppress('ffffffff-0000-4000-8000-00000000dddd', %L, 'x@example.com')$$, :owner)), 'PT404 projects.notFound',
          'suppress in an unknown project: PT404 projects.notFound');
-- The actor: admin or owner. A member gets PT403, a non-member PT404, before the arguments are read.
SELECT is(pg_temp.caught(format($$SELECT runhub.suppress(%L, %L, 'x@example.com')$$, :'promo', :member)) - 'hint',
          jsonb_build_object('sqlstate', 'PT403', 'message', 'auth.roleRequired', 'detail', '{"role": "member", "required": "admin"}'),
          'suppress by a member: PT403 auth.roleRequired {required admin, role member}');
SELECT is(pg_temp.refusal(format($$SELECT runhub.suppress(%L, %L, 'x@example.com')$$, :'promo', :stranger)), 'PT404 projects.notFound',
          'suppress by a non-member: PT404 projects.notFound');
SELECT is(pg_temp.refusal(format($$SELECT runhub.suppress(%L, %L, 'not-an-email', 'spam')$$, :'promo', :member)), 'PT403 auth.roleRequired',
          'suppress by a member with bad arguments: PT403 first');
SELECT is(pg_temp.refusal(format($$SELECT runhub.suppress(%L, NULL, 'x@example.com')$$, :'promo')), 'PT400 common.invalidInput actor',
          'suppress with a null actor: PT400 (actor)');
SELECT is_empty(format($$SELECT 1 FROM runhub.suppressions WHERE project_id = %L AND email = 'x@example.com'$$, :'promo'),
                'the refused suppress calls suppressed nothing');

-- The cap spans runs; with it off, the next run (isUpdate false: template promo) skips the suppressed.
UPDATE runhub.workflow_runs SET requested_at = now() - interval '2 hours' WHERE id = :'promo2';
SELECT runhub.preview(:'promo', :owner, 'send_promo', :'pp') AS ppv_capped \gset
SELECT is(jsonb_build_array(pg_temp.excluded(:'ppv_capped'), (:'ppv_capped'::jsonb) -> 'blocked' -> 'reason'),
          '[{"suppressed": 3, "frequencyCap": 2}, "workflows.policy.noRecipients"]'::jsonb,
          'everyone was just mailed (ruth, vera) or is suppressed (pat, quinn, uri): no recipients');
SELECT runhub.update_project_settings(:'promo', :owner, '{"frequencyCapHours": 0}') \g /dev/null
SELECT pg_temp.reset_rate(:'promo') \g /dev/null
SELECT runhub.preview(:'promo', :owner, 'send_promo', :'pp') AS ppv_nocap \gset
SELECT is((:'ppv_nocap'::jsonb) -> 'sample', '[{"email": "ruth@example.com"}, {"email": "vera@example.com"}]'::jsonb,
          'without the cap: ruth and vera');
SELECT runhub.create_run(:'promo', :owner, 'send_promo', 'promo-3', :'pp', NULL, ((:'ppv_nocap'::jsonb) ->> 'previewId')::uuid) ->> 'runId' AS promo3 \gset
SELECT is(runhub.process_runs(), 1, 'process_runs takes promo-3');
SELECT results_eq(format($$SELECT to_email, template FROM runhub.outbox WHERE run_id = %L ORDER BY to_email$$, :'promo3'),
                  $$VALUES ('ruth@example.com', 'promo'), ('vera@example.com', 'promo')$$,
                  'isUpdate false: template promo');

SELECT * FROM finish();
ROLLBACK;
