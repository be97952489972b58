-- Workflows, execution (docs/sql-contract.md, "Workflows"): process_runs writes a run's recipients
-- and messages in one go (links, locales, templates recovery, promo, update and onboarding), the
-- frequency cap and alreadyContacted / alreadyOnboarded after a run, the execution-time policy
-- layer (maximum recipients, the actor's membership and role, the cooldown), replays of an
-- executed or failed run, and the execution lease: claim_runs, heartbeat_run, execute_run, a
-- retried execution that raises.
--
-- process_runs and claim_runs take every queued run of the database, so each section leaves no
-- run queued that a later section does not expect. Fixtures pg_temp.recover_queued_run,
-- promo_shop, onboard_shop, ops_shop, refusal_undone: helpers.psql.
BEGIN;
\ir helpers.psql
SELECT * FROM no_plan();

-- ---------------------------------------------------------------------------------------------
-- The recover shop's run rec-1, queued (previewed by the admin: 6 recipients).
SELECT pg_temp.recover_queued_run(:owner, :admin, :member) AS rec1 \gset
SELECT r.project_id AS rec, jsonb_build_object('previewId', p.id, 'count', p.recipient_count) AS rec_pv
  FROM runhub.workflow_runs r JOIN runhub.previews p ON p.id = r.preview_id WHERE r.id = :'rec1' \gset

-- process_runs executes the queued run: recipients and messages written in one go, run delivering.
SELECT is(runhub.process_runs(), 1, 'process_runs executes the one queued run');
SELECT results_eq(format($$SELECT status, started_at, executed_at, completed_at, lease_owner, lease_expires_at, attempts, result
                             FROM runhub.workflow_runs WHERE id = %L$$, :'rec1'),
                  $$VALUES ('running', now(), now(), NULL::timestamptz, NULL::text, NULL::timestamptz, 1, NULL::jsonb)$$,
                  'the run is running, executed, its lease released, one attempt');
SELECT is((SELECT count(*)::int FROM runhub.workflow_run_recipients WHERE run_id = :'rec1'), ((:'rec_pv'::jsonb) ->> 'count')::int,
          'as many recipients as the preview counted');
SELECT results_eq(format($$SELECT email, name, locale, cart_id, amount_cents, currency::text, link, status
                             FROM runhub.workflow_run_recipients WHERE run_id = %L ORDER BY id$$, :'rec1'),
                  format($$VALUES ('ann@example.com', 'Ann', 'fr', 'cart&ann', 4200::bigint, 'EUR', 'https://shop.example/checkout?wid=%1$s&cart=cart%%26ann', 'queued'),
                                  ('bob@example.com', NULL, 'de', 'cart-bob', NULL, NULL, 'https://shop.example/checkout?wid=%1$s&cart=cart-bob', 'queued'),
                                  ('erin@example.com', NULL, 'es', 'cart-erin', 1500, 'EUR', 'https://shop.example/checkout?wid=%1$s&cart=cart-erin', 'queued'),
                                  ('ivy@example.com', NULL, 'de', 'cart-ivy-new', NULL, NULL, 'https://shop.example/checkout?wid=%1$s&cart=cart-ivy-new', 'queued'),
                                  ('kim@example.com', 'Kim', 'en', 'cart-kim', NULL, NULL, 'https://shop.example/checkout?wid=%1$s&cart=cart-kim', 'queued'),
                                  ('leo@example.com', NULL, 'de', 'cart-leo', NULL, NULL, 'https://shop.example/checkout?wid=%1$s&cart=cart-leo', 'queued')$$,
                         :'rec1'),
                  'recipients in e-mail order: links <shopUrl>/checkout?wid=<runId>&cart=<cartId>, locale the customer''s (fr-CA fr, es-MX es, en-GB en) else the project''s (de)');
SELECT results_eq(format($$SELECT o.to_email, o.to_name, o.template, o.locale, o.status, o.recipient_id = r.id
                             FROM runhub.outbox o JOIN runhub.workflow_run_recipients r ON r.run_id = o.run_id AND r.email = o.to_email
                            WHERE o.run_id = %L ORDER BY o.to_email$$, :'rec1'),
                  $$VALUES ('ann@example.com', 'Ann', 'recovery', 'fr', 'queued', true),
                           ('bob@example.com', NULL, 'recovery', 'de', 'queued', true),
                           ('erin@example.com', NULL, 'recovery', 'es', 'queued', true),
                           ('ivy@example.com', NULL, 'recovery', 'de', 'queued', true),
                           ('kim@example.com', 'Kim', 'recovery', 'en', 'queued', true),
                           ('leo@example.com', NULL, 'recovery', 'de', 'queued', true)$$,
                  'one queued recovery message per recipient (and for no one else), in the recipient''s locale');
SELECT is((SELECT count(DISTINCT message_id)::int FROM runhub.outbox WHERE run_id = :'rec1'
            AND message_id ~ '^<[^<>@[:space:]]+@[^<>@[:space:]]+>$'), 6,
          'every message has its own Message-ID, <...@...>');
SELECT is((SELECT count(*)::int FROM runhub.outbox o WHERE o.run_id = :'rec1'), 6, 'six messages in all');
SELECT is(runhub.get_run(:'rec', :member, :'rec1') -> 'result',
          '{"totalRecipients": 6, "successful": 0, "failed": 0, "pending": 6, "cancelled": 0}'::jsonb,
          'a delivering run shows live counts as its result');
SELECT is(runhub.get_run(:'rec', :member, :'rec1') - ARRAY['result', 'params', 'triggeredBy', 'previewId', 'id', 'projectId', 'actionId',
                                                            'recipientCountEstimate', 'clientRequestedAt', 'outcome'],
          jsonb_build_object('status', 'running', 'requestedAt', runhub._iso(now()), 'startedAt', runhub._iso(now()),
                             'executedAt', runhub._iso(now()), 'attempts', 1, 'stale', false),
          'get_run of a delivering run: running, started and executed, not stale');
SELECT is(pg_temp.action(:'rec', :owner, 'recover_abandoned') -> 'lastRun' -> 'result',
          '{"totalRecipients": 6, "successful": 0, "failed": 0, "pending": 6, "cancelled": 0}'::jsonb,
          'list_actions lastRun shows the live counts too');
SELECT is(runhub.process_runs(), 0, 'nothing left to process: a delivering run is not executed again');
SELECT is_empty($$SELECT runhub.claim_runs('idle-worker')$$, 'claim_runs finds nothing to claim');

-- The frequency cap spans workflows: send_promo now leaves out everyone the recovery run mails.
SELECT runhub.preview(:'rec', :owner, 'send_promo', '{"subject": "Hi", "content": "News", "segmentation": "recent_7d"}') AS promo_in_rec \gset
SELECT is(pg_temp.excluded(:'promo_in_rec'), '{"suppressed": 2, "frequencyCap": 6}'::jsonb,
          'send_promo in the same project: the 6 recovery recipients are capped, gina and hank suppressed');
SELECT is((:'promo_in_rec'::jsonb) -> 'sample', '[{"email": "carol@example.com"}, {"email": "dave@example.com"}, {"email": "frank@example.com"}]'::jsonb,
          'send_promo reaches the others (carol, dave, frank)');

-- Once contacted, a cart is not contacted again; a new cart of the same person meets the frequency cap.
SELECT runhub.preview(:'rec', :admin, 'recover_abandoned') AS pv_after \gset
SELECT is(pg_temp.excluded(:'pv_after'), '{"converted": 3, "alreadyContacted": 6, "suppressed": 1, "frequencyCap": 0}'::jsonb,
          'after the run, its six carts are alreadyContacted');
SELECT is((:'pv_after'::jsonb) -> 'blocked' ->> 'reason', 'workflows.policy.cooldownActive', 'the cooldown is the first refusal');
UPDATE runhub.workflow_runs SET requested_at = now() - interval '2 hours' WHERE id = :'rec1';
SELECT is(runhub.preview(:'rec', :admin, 'recover_abandoned') -> 'blocked',
          '{"reason": "workflows.policy.noRecipients", "reasonParams": {"count": 0, "min": 1},
            "text": "Niemand zum Anschreiben: 0 Empfänger, mindestens 1 nötig"}'::jsonb,
          'past the cooldown, zero recipients: blocked by workflows.policy.noRecipients');
SELECT pg_temp.ev(:'rec', 'checkout_started', 'ann-2', '30 minutes', '{"email": "ann@example.com", "name": "Ann"}', '{"payload": {"cartId": "cart-ann-2"}}') \g /dev/null
SELECT is(pg_temp.who(:'rec', 'recover_abandoned') ->> 'ann@example.com', 'frequencyCap',
          'ann''s new cart was not contacted, but ann was: frequencyCap');
SELECT is(pg_temp.excluded(runhub.preview(:'rec', :admin, 'recover_abandoned')),
          '{"converted": 3, "alreadyContacted": 5, "suppressed": 1, "frequencyCap": 1}'::jsonb,
          'preview counts: alreadyContacted 5, frequencyCap 1');
SELECT runhub.update_project_settings(:'rec', :admin, '{"frequencyCapHours": 0}') \g /dev/null
SELECT runhub.preview(:'rec', :admin, 'recover_abandoned') AS pv_cap0 \gset
SELECT is(jsonb_build_array((:'pv_cap0'::jsonb) -> 'count', (:'pv_cap0'::jsonb) -> 'sample'),
          '[1, [{"email": "ann@example.com", "name": "Ann"}]]'::jsonb,
          'frequencyCapHours 0: ann is mailed again for her new cart');
SELECT is((:'pv_cap0'::jsonb) -> 'exclusions' -> 3,
          '{"key": "owner.exclusion.frequencyCap", "params": {"hours": 0},
            "text": "Kunden, die in den letzten 0 Std. schon eine Workflow-E-Mail bekommen haben"}'::jsonb,
          'the frequency-cap label shows the project''s hours');
UPDATE runhub.workflow_run_recipients SET created_at = now() - interval '3 hours' WHERE run_id = :'rec1';
SELECT runhub.update_project_settings(:'rec', :admin, '{"frequencyCapHours": 2}') \g /dev/null
SELECT is(pg_temp.who(:'rec', 'recover_abandoned') ->> 'ann@example.com', 'included', 'mailed 3 hours ago, cap 2 hours: included');
SELECT runhub.update_project_settings(:'rec', :admin, '{"frequencyCapHours": 4}') \g /dev/null
SELECT is(pg_temp.who(:'rec', 'recover_abandoned') ->> 'ann@example.com', 'frequencyCap', 'mailed 3 hours ago, cap 4 hours: frequencyCap');
SELECT is(runhub.preview(:'rec', :admin, 'recover_abandoned') -> 'excluded' -> 3,
          '{"exclusion": "frequencyCap", "count": 1,
            "label": {"key": "owner.exclusion.frequencyCap", "params": {"hours": 4},
                      "text": "Kunden, die in den letzten 4 Std. schon eine Workflow-E-Mail bekommen haben"}}'::jsonb,
          'the preview shows the 4-hour cap and its count');
UPDATE runhub.workflow_run_recipients SET created_at = now() - interval '4 hours' WHERE run_id = :'rec1';
SELECT is(pg_temp.who(:'rec', 'recover_abandoned') ->> 'ann@example.com', 'included',
          'mailed exactly 4 hours ago, cap 4 hours: included (the cap excludes its far end)');
UPDATE runhub.workflow_run_recipients SET created_at = now() - interval '4 hours' + interval '1 microsecond' WHERE run_id = :'rec1';
SELECT is(pg_temp.who(:'rec', 'recover_abandoned') ->> 'ann@example.com', 'frequencyCap', 'a microsecond later: frequencyCap');
UPDATE runhub.workflow_run_recipients SET created_at = now() - interval '3 hours' WHERE run_id = :'rec1';

-- ---------------------------------------------------------------------------------------------
-- send_promo (the promo shop): the execution-time count check, replays, templates promo and update.
SELECT pg_temp.promo_shop(:owner, :admin, :member) AS promo \gset
\set pp '{"subject": "Spring sale", "content": "Up to 30% off"}'
-- Execution-time count: the audience grows past maxRecipients between preview and execution.
SELECT pg_temp.set_policy('send_promo', '{"maxRecipients": 3}') \g /dev/null
SELECT runhub.preview(:'promo', :owner, 'send_promo', :'pp') AS ppv_max3 \gset
SELECT ok(NOT ((:'ppv_max3'::jsonb) ? 'blocked'), 'a preview of 3 with maxRecipients 3 is not blocked');
SELECT runhub.create_run(:'promo', :owner, 'send_promo', 'promo-1', :'pp', NULL, ((:'ppv_max3'::jsonb) ->> 'previewId')::uuid) ->> 'runId' AS promo1 \gset
SELECT pg_temp.ev(:'promo', 'page_viewed', 'vera-1', '1 hour', '{"email": "vera@example.com"}') \g /dev/null
SELECT is(runhub.process_runs(), 1, 'process_runs takes the send_promo run');
SELECT results_eq(format($$SELECT status, completed_at, executed_at, lease_owner, result FROM runhub.workflow_runs WHERE id = %L$$, :'promo1'),
                  $$VALUES ('failed', now(), NULL::timestamptz, NULL::text,
                            '{"totalRecipients": 0, "successful": 0, "failed": 0, "reason": "workflows.policy.tooManyRecipients",
                              "reasonParams": {"count": 4, "max": 3}, "errorSummary": "Too many recipients (4); the maximum is 3"}'::jsonb)$$,
                  'four recipients at execution, maximum 3: the run fails with the reason and an errorSummary');
SELECT is_empty(format($$SELECT 1 FROM runhub.workflow_run_recipients WHERE run_id = %1$L UNION ALL SELECT 1 FROM runhub.outbox WHERE run_id = %1$L$$, :'promo1'),
                'a run refused at execution writes no recipient and no message');
SELECT is(runhub.get_run(:'promo', :owner, :'promo1') -> 'result' ->> 'reason', 'workflows.policy.tooManyRecipients', 'get_run shows why it failed');
SELECT pg_temp.set_policy('send_promo', '{"maxRecipients": 1000}') \g /dev/null
SELECT is(runhub.create_run(:'promo', :owner, 'send_promo', 'promo-1', :'pp'),
          jsonb_build_object('runId', :'promo1', 'status', 'failed', 'deduplicated', true),
          'a replay of the failed run: deduplicated with its real status, failed');
SELECT is(runhub.create_run(:'promo', :owner, 'send_promo', 'promo-1', (:'pp'::jsonb) || '{"segmentation": "recent_30d", "isUpdate": false}') ->> 'runId',
          :'promo1', 'params equal after defaults are the same params');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'promo', :owner, 'send_promo', 'promo-1', (:'pp'::jsonb) || '{"isUpdate": true}')),
          'PT409 workflows.idempotencyKeyReused', 'the same key with other params: PT409 workflows.idempotencyKeyReused');
SELECT is(pg_temp.detail(pg_temp.create_sql(:'promo', :owner, 'send_promo', 'promo-1', (:'pp'::jsonb) || '{"isUpdate": true}')),
          jsonb_build_object('runId', :'promo1'), 'idempotencyKeyReused names the first run');

-- A failed run does not hold the cooldown: an update to the same audience (now 4 with vera).
SELECT pg_temp.reset_rate(:'promo') \g /dev/null
SELECT runhub.preview(:'promo', :owner, 'send_promo', (:'pp'::jsonb) || '{"isUpdate": true}') -> 'count' AS promo2_count \gset
SELECT runhub.create_run(:'promo', :owner, 'send_promo', 'promo-2', (:'pp'::jsonb) || '{"isUpdate": true}') ->> 'runId' AS promo2 \gset
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'promo', :owner, 'send_promo', 'promo-3', :'pp')), 'PT409 workflows.policy.alreadyQueued',
          'while promo-2 is queued, send_promo is in its cooldown (workflows.policy.alreadyQueued)');
SELECT is(runhub.process_runs(), 1, 'process_runs takes promo-2');
SELECT is(pg_temp.availability(:'promo', :owner) -> 'send_promo',
          '{"available": false, "reason": "workflows.policy.cooldownActive", "reasonParams": {"minutes": 60, "cooldownMinutes": 60}}'::jsonb,
          'once promo-2 is executed (running), its cooldown is workflows.policy.cooldownActive');
SELECT is((SELECT count(*)::int FROM runhub.workflow_run_recipients WHERE run_id = :'promo2'), :'promo2_count'::int,
          'promo-2 has as many recipients as its preview counted');
SELECT results_eq(format($$SELECT o.to_email, o.template, o.locale, r.link IS NULL
                             FROM runhub.outbox o JOIN runhub.workflow_run_recipients r ON r.id = o.recipient_id
                            WHERE o.run_id = %L ORDER BY o.to_email$$, :'promo2'),
                  $$VALUES ('pat@example.com', 'update', 'de', true), ('quinn@example.com', 'update', 'es', true),
                           ('ruth@example.com', 'update', 'es', true), ('vera@example.com', 'update', 'es', true)$$,
                  'isUpdate: template update; no link; locale pat de, quinn (pt, unsupported) and the rest es (the project''s)');
SELECT is(runhub.create_run(:'promo', :owner, 'send_promo', 'promo-2', (:'pp'::jsonb) || '{"isUpdate": true}') - 'runId',
          '{"status": "running", "deduplicated": true}'::jsonb, 'a replay of the executed run: deduplicated, running');

-- ---------------------------------------------------------------------------------------------
-- onboard_users (the onboarding shop, locale fr): any member; the actor must still be a member at
-- execution. The member previewed it: 3 recipients (sam, vic, wes).
SELECT pg_temp.onboard_shop(:owner, :member) AS onb \gset
SELECT runhub.preview(:'onb', :member, 'onboard_users') AS opv \gset
SELECT pg_temp.reset_rate(:'onb') \g /dev/null
SELECT runhub.create_run(:'onb', :member, 'onboard_users', 'onb-1') ->> 'runId' AS onb1 \gset
DELETE FROM runhub.project_members WHERE project_id = :'onb' AND user_id = :member;
SELECT is(runhub.process_runs(), 1, 'process_runs takes onb-1, whose actor has left the project');
SELECT results_eq(format($$SELECT status, completed_at, lease_owner, result FROM runhub.workflow_runs WHERE id = %L$$, :'onb1'),
                  $$VALUES ('failed', now(), NULL::text,
                            '{"totalRecipients": 0, "successful": 0, "failed": 0, "reason": "workflows.policy.actorNotMember",
                              "reasonParams": {"required": "member"},
                              "errorSummary": "Whoever triggered this run is no longer a member of the project"}'::jsonb)$$,
                  'the actor is no longer a member: failed with workflows.policy.actorNotMember');
SELECT is_empty(format($$SELECT 1 FROM runhub.workflow_run_recipients WHERE run_id = %L$$, :'onb1'), 'the refused run wrote no recipient');
SELECT runhub.add_member(:'onb', :owner, :member, 'member') \g /dev/null
SELECT is(pg_temp.availability(:'onb', :owner) -> 'onboard_users' -> 'available', 'true'::jsonb, 'a failed run does not hold the cooldown');
SELECT is(pg_temp.action(:'onb', :owner, 'onboard_users') -> 'lastRun',
          jsonb_build_object('id', :'onb1', 'status', 'failed', 'requestedAt', runhub._iso(now()), 'completedAt', runhub._iso(now()),
                             'result', (SELECT result FROM runhub.workflow_runs WHERE id = :'onb1')),
          'lastRun: the failed run with its completion and result');
SELECT runhub.create_run(:'onb', :member, 'onboard_users', 'onb-2') ->> 'runId' AS onb2 \gset
SELECT is(runhub.process_runs(), 1, 'process_runs takes onb-2');
SELECT results_eq(format($$SELECT to_email, template, locale FROM runhub.outbox WHERE run_id = %L ORDER BY to_email$$, :'onb2'),
                  $$VALUES ('sam@example.com', 'onboarding', 'fr'), ('vic@example.com', 'onboarding', 'ar'), ('wes@example.com', 'onboarding', 'fr')$$,
                  'welcome messages: sam (zz, unsupported) and wes in the project''s fr, vic in ar');
UPDATE runhub.workflow_runs SET requested_at = now() - interval '2 hours' WHERE id = :'onb2';
-- now() is fixed: age the first preview so that create_run's "latest preview" is the next one.
UPDATE runhub.previews SET created_at = now() - interval '1 minute' WHERE id = ((:'opv'::jsonb) ->> 'previewId')::uuid;
SELECT runhub.preview(:'onb', :member, 'onboard_users') AS opv2 \gset
SELECT is(jsonb_build_array(pg_temp.excluded(:'opv2'), (:'opv2'::jsonb) -> 'blocked'),
          '[{"alreadyOnboarded": 3, "suppressed": 1, "frequencyCap": 0},
            {"reason": "workflows.policy.noRecipients", "reasonParams": {"count": 0, "min": 1},
             "text": "Personne à qui écrire\u00a0: 0 destinataire(s), il en faut au moins 1"}]'::jsonb,
          'once welcomed, they are alreadyOnboarded (before frequencyCap): blocked, no recipients');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'onb', :member, 'onboard_users', 'onb-3')), 'PT422 workflows.policy.noRecipients',
          'create_run on a preview of zero: PT422 workflows.policy.noRecipients');

-- ---------------------------------------------------------------------------------------------
-- The execution lease (claim_runs, heartbeat_run, execute_run); an execution that raises; the
-- cooldown re-checked at execution. (cancel_run of a queued or claimed run: 34_cancel_suppress.sql.)
SELECT pg_temp.ops_shop(:owner, :member) AS ops \gset
SELECT pg_temp.reset_rate(:'ops') \g /dev/null
SELECT runhub.preview(:'ops', :member, 'onboard_users') -> 'count' AS ops_count \gset
SELECT runhub.create_run(:'ops', :member, 'onboard_users', 'ops-2') ->> 'runId' AS ops2 \gset
SELECT set_eq($$SELECT runhub.claim_runs('worker-1', 10, 300)$$, ARRAY[:'ops2'::uuid], 'worker-1 claims the queued run');
SELECT results_eq(format($$SELECT status, lease_owner, attempts, started_at, lease_expires_at > now() + interval '250 seconds'
                             FROM runhub.workflow_runs WHERE id = %L$$, :'ops2'),
                  $$VALUES ('running', 'worker-1', 1, now(), true)$$,
                  'claimed: running, leased to worker-1 for 300 s, attempt 1');
SELECT is_empty($$SELECT runhub.claim_runs('worker-2', 10, 300)$$, 'worker-2 cannot claim a run whose lease is held');
SELECT matches(pg_temp.refusal_undone(format('SELECT runhub.heartbeat_run(%L, %L, NULL)', :'ops2', 'worker-1')), '^PT400 ',
               'heartbeat_run with a null lease length: PT400 (no input raises anything but a PTxyz error)');
SELECT matches(pg_temp.refusal_undone(format('SELECT runhub.heartbeat_run(%L, %L, -100)', :'ops2', 'worker-1')), '^PT400 ',
               'heartbeat_run with a negative lease length: PT400, as claim_runs refuses it');
SELECT is(runhub.execute_run(:'ops2', 'worker-2'), 'lease_lost', 'worker-2 cannot execute it: lease_lost');
SELECT is_empty(format($$SELECT 1 FROM runhub.workflow_run_recipients WHERE run_id = %L$$, :'ops2'), '... and wrote nothing');
SELECT lease_expires_at AS ops2_lease FROM runhub.workflow_runs WHERE id = :'ops2' \gset
SELECT is(runhub.heartbeat_run(:'ops2', 'worker-2'), false, 'a heartbeat by another worker: false');
SELECT is((SELECT lease_expires_at FROM runhub.workflow_runs WHERE id = :'ops2'), :'ops2_lease'::timestamptz, '... and the lease is unchanged');
SELECT is(runhub.heartbeat_run(:'ops2', 'worker-1', 600), true, 'the owner''s heartbeat: true');
SELECT cmp_ok((SELECT lease_expires_at FROM runhub.workflow_runs WHERE id = :'ops2'), '>', :'ops2_lease'::timestamptz,
              '... and the lease is extended');
UPDATE runhub.workflow_runs SET lease_expires_at = now() - interval '1 second' WHERE id = :'ops2';
SELECT is(runhub.heartbeat_run(:'ops2', 'worker-1'), false, 'an expired lease cannot be extended, even by its owner');
SELECT is(runhub.execute_run(:'ops2', 'worker-1'), 'lease_lost', 'an expired lease cannot be executed on');
SELECT set_eq($$SELECT runhub.claim_runs('worker-2', 10, 300)$$, ARRAY[:'ops2'::uuid], 'once the lease expired, worker-2 reclaims the run');
SELECT results_eq(format($$SELECT status, lease_owner, attempts, started_at FROM runhub.workflow_runs WHERE id = %L$$, :'ops2'),
                  $$VALUES ('running', 'worker-2', 2, now())$$, 'reclaimed: attempt 2, started_at kept');
SELECT is(runhub.execute_run(:'ops2', 'worker-1'), 'lease_lost', 'the first worker''s execute_run: lease_lost');
SELECT is_empty(format($$SELECT 1 FROM runhub.workflow_run_recipients WHERE run_id = %1$L UNION ALL SELECT 1 FROM runhub.outbox WHERE run_id = %1$L$$, :'ops2'),
                '... and it wrote nothing');
SELECT is(runhub.heartbeat_run(:'ops2', 'worker-1'), false, 'the first worker''s heartbeat: false');
SELECT is(runhub.execute_run(:'ops2', 'worker-2'), 'running', 'the lease holder executes it: running');
SELECT results_eq(format($$SELECT (SELECT count(*)::int FROM runhub.workflow_run_recipients WHERE run_id = %1$L),
                                  (SELECT count(*)::int FROM runhub.outbox WHERE run_id = %1$L), executed_at, lease_owner
                             FROM runhub.workflow_runs WHERE id = %1$L$$, :'ops2'),
                  format($$VALUES (%1$s, %1$s, now(), NULL::text)$$, :'ops_count'),
                  'recipients and messages written, executed, lease released');
SELECT is(runhub.execute_run(:'ops2', 'worker-2'), 'lease_lost', 'executing it again: lease_lost');
SELECT is((SELECT count(*)::int FROM runhub.workflow_run_recipients WHERE run_id = :'ops2'), :'ops_count'::int, '... no duplicate recipients');
SELECT is(runhub.heartbeat_run(:'ops2', 'worker-2'), false, 'no heartbeat once executed');
SELECT is(runhub.execute_run('ffffffff-0000-4000-8000-00000000cccc', 'worker-2'), 'lease_lost', 'an unknown run: lease_lost');
SELECT is(pg_temp.refusal($$SELECT runhub.claim_runs('')$$), 'PT400 common.invalidInput worker', 'claim_runs without a worker name: PT400');
SELECT is(pg_temp.refusal($$SELECT runhub.claim_runs('w', 0)$$), 'PT400 common.invalidInput max', 'claim_runs of 0 runs: PT400');
SELECT is(pg_temp.refusal($$SELECT runhub.claim_runs('w', 1, 1)$$), 'PT400 common.invalidInput leaseSeconds', 'claim_runs with a 1-second lease: PT400, field leaseSeconds');
SELECT is(ARRAY(SELECT v.args || ' -> ' || r
                  FROM (VALUES ('''w'', 1001', 'max'), ('''w'', -1', 'max'), ('''w'', NULL', 'max'),
                               ('''w'', 1, 4', 'leaseSeconds'), ('''w'', 1, 86401', 'leaseSeconds'), ('''w'', 1, NULL', 'leaseSeconds')) v(args, field),
                       pg_temp.refusal_undone('SELECT runhub.claim_runs(' || v.args || ')') r
                 WHERE r IS DISTINCT FROM 'PT400 common.invalidInput ' || v.field),
          '{}'::text[], 'claim_runs of more than 1000 runs (maxClaimBatch), or a lease outside 5-86400 seconds: PT400 (max, leaseSeconds)');
SELECT is(ARRAY[pg_temp.refusal_undone($$SELECT runhub.claim_runs('w', 1000, 5)$$), pg_temp.refusal_undone($$SELECT runhub.claim_runs('w', 1, 86400)$$),
                pg_temp.refusal_undone(format('SELECT runhub.heartbeat_run(%L, %L, 5)', :'ops2', 'worker-2')),
                pg_temp.refusal_undone(format('SELECT runhub.heartbeat_run(%L, %L, 86400)', :'ops2', 'worker-2'))],
          '{no error,no error,no error,no error}', 'claim_runs of 1000 runs, leases of 5 and 86400 seconds (claim_runs, heartbeat_run): accepted');
SELECT is(ARRAY[pg_temp.refusal_undone(format('SELECT runhub.heartbeat_run(%L, %L, 4)', :'ops2', 'worker-2')),
                pg_temp.refusal_undone(format('SELECT runhub.heartbeat_run(%L, %L, 86401)', :'ops2', 'worker-2'))],
          '{PT400 common.invalidInput leaseSeconds,PT400 common.invalidInput leaseSeconds}', 'heartbeat_run with a lease of 4 or 86401 seconds: PT400 (leaseSeconds)');

-- ops3 signs up; ops-2 is moved out of the cooldown.
SELECT pg_temp.ev(:'ops', 'user_signed_up', 'ops3', '1 day', '{"email": "ops3@example.com"}') \g /dev/null
UPDATE runhub.workflow_runs SET requested_at = now() - interval '2 hours' WHERE id = :'ops2';

-- An execution that raises is retried after 30 seconds, and failed after 5 attempts.
SELECT pg_temp.ev(:'ops', 'user_signed_up', 'ops4', '1 day', '{"email": "ops4@example.com"}') \g /dev/null
SELECT is(runhub.preview(:'ops', :member, 'onboard_users') -> 'count', '2'::jsonb, 'ops3 (never mailed) and ops4');
SELECT runhub.create_run(:'ops', :member, 'onboard_users', 'ops-4') ->> 'runId' AS ops4 \gset
UPDATE runhub.actions SET policy = policy - 'cooldownMinutes' WHERE id = 'onboard_users';  -- the policy layer now raises
SELECT is(runhub.process_runs(), 1, 'process_runs takes ops-4 (its execution raises)');
SELECT results_eq(format($$SELECT status, executed_at, attempts, lease_owner IS NOT NULL,
                                  lease_expires_at BETWEEN now() + interval '30 seconds' AND clock_timestamp() + interval '30 seconds'
                             FROM runhub.workflow_runs WHERE id = %L$$, :'ops4'),
                  $$VALUES ('running', NULL::timestamptz, 1, true, true)$$,
                  'the run stays running, unexecuted, its lease lapsing in 30 seconds for a retry');
SELECT is_empty(format($$SELECT 1 FROM runhub.workflow_run_recipients WHERE run_id = %L$$, :'ops4'), 'the failed attempt wrote nothing');
UPDATE runhub.workflow_runs SET lease_expires_at = now() - interval '1 second', attempts = 4 WHERE id = :'ops4';
SELECT is(runhub.process_runs(), 1, 'process_runs retries it, a fifth time');
SELECT results_eq(format($$SELECT status, attempts, completed_at, lease_owner, coalesce(result ->> 'errorSummary', '') <> ''
                             FROM runhub.workflow_runs WHERE id = %L$$, :'ops4'),
                  $$VALUES ('failed', 5, now(), NULL::text, true)$$,
                  'after the fifth failed attempt the run is failed, with an errorSummary');
UPDATE runhub.actions SET policy = policy || '{"cooldownMinutes": 60}' WHERE id = 'onboard_users';
SELECT is(pg_temp.detail(pg_temp.cancel_sql(:'ops', :owner, :'ops4')), jsonb_build_object('runId', :'ops4', 'status', 'failed'),
          'cancelling a failed run: runNotCancellable, status failed');

-- Execution re-checks the cooldown: a run that got past it (here, by moving ops-2 to 10 minutes
-- before the new run) is failed at execution.
SELECT pg_temp.ev(:'ops', 'user_signed_up', 'ops5', '1 day', '{"email": "ops5@example.com"}') \g /dev/null
SELECT runhub.create_run(:'ops', :member, 'onboard_users', 'ops-5') ->> 'runId' AS ops5 \gset
UPDATE runhub.workflow_runs SET requested_at = now() - interval '10 minutes' WHERE id = :'ops2';
SELECT is(runhub.process_runs(), 1, 'process_runs takes ops-5');
SELECT results_eq(format($$SELECT status, result FROM runhub.workflow_runs WHERE id = %L$$, :'ops5'),
                  $$VALUES ('failed', '{"totalRecipients": 0, "successful": 0, "failed": 0, "reason": "workflows.policy.cooldownActive",
                                        "reasonParams": {"minutes": 50, "cooldownMinutes": 60},
                                        "errorSummary": "This action ran less than 60 minutes ago; wait 50 more minutes"}'::jsonb)$$,
                  'another run of the action 10 minutes earlier: failed at execution with workflows.policy.cooldownActive');
SELECT is_empty(format($$SELECT 1 FROM runhub.workflow_run_recipients WHERE run_id = %L$$, :'ops5'), '... and no recipients written');

-- ---------------------------------------------------------------------------------------------
-- Recovery links keep the cart id intact: a shop decodes the query string, so characters that
-- decoding changes ('+' is a space, a raw space is not allowed in a URL) must be percent-encoded,
-- like '&', '#' and '%' are. shopUrl without a trailing slash gets one before checkout.
SELECT runhub.create_project('Link shop', :owner, 'UTC', 'EUR') AS lnk \gset
SELECT runhub.update_project_settings(:'lnk', :owner, '{"integrations": ["payments"], "shopUrl": "https://shop.example/base", "holdoutPercent": 0}') \g /dev/null
SELECT pg_temp.ev(:'lnk', 'checkout_started', 'lnk-1', '1 hour', '{"email": "lnk1@example.com"}', '{"payload": {"cartId": "a&b#c%d"}}') \g /dev/null
SELECT pg_temp.ev(:'lnk', 'checkout_started', 'lnk-2', '1 hour', '{"email": "lnk2@example.com"}', '{"payload": {"cartId": "cart+1 x"}}') \g /dev/null
SELECT runhub.preview(:'lnk', :owner, 'recover_abandoned') ->> 'previewId' AS lnk_preview \gset
SELECT runhub.create_run(:'lnk', :owner, 'recover_abandoned', 'lnk-run') ->> 'runId' AS lnk_run \gset
SELECT is(runhub.process_runs(), 1, 'process_runs takes the link run');
SELECT is((SELECT link FROM runhub.workflow_run_recipients WHERE run_id = :'lnk_run' AND email = 'lnk1@example.com'),
          format('https://shop.example/base/checkout?wid=%s&cart=a%%26b%%23c%%25d', :'lnk_run'),
          'shopUrl without a trailing slash; &, # and %% in the cart id are percent-encoded');
SELECT doesnt_match((SELECT substring(link FROM '&cart=(.*)$') FROM runhub.workflow_run_recipients
                       WHERE run_id = :'lnk_run' AND email = 'lnk2@example.com'),
                     '[+[:space:]]', 'a cart id with + and a space: neither appears raw in the link (the shop would decode + as a space)');

-- Execution re-checks the actor's current role: an admin demoted to member after triggering a
-- recovery run.
SELECT runhub.add_member(:'lnk', :owner, :admin, 'admin') \g /dev/null
SELECT pg_temp.ev(:'lnk', 'checkout_started', 'lnk-3', '1 hour', '{"email": "lnk3@example.com"}', '{"payload": {"cartId": "c3"}}') \g /dev/null
UPDATE runhub.workflow_runs SET requested_at = now() - interval '2 hours' WHERE id = :'lnk_run';
SELECT runhub.preview(:'lnk', :admin, 'recover_abandoned') \g /dev/null
SELECT runhub.create_run(:'lnk', :admin, 'recover_abandoned', 'lnk-run-2') ->> 'runId' AS lnk_run2 \gset
SELECT runhub.add_member(:'lnk', :owner, :admin, 'member') \g /dev/null
SELECT is(runhub.process_runs(), 1, 'process_runs takes the demoted admin''s run');
SELECT is((SELECT result - 'errorSummary' FROM runhub.workflow_runs WHERE id = :'lnk_run2'),
          '{"totalRecipients": 0, "successful": 0, "failed": 0, "reason": "auth.roleRequired", "reasonParams": {"required": "admin", "role": "member"}}'::jsonb,
          'the actor is now a member: the recovery run fails with auth.roleRequired');

SELECT * FROM finish();
ROLLBACK;
