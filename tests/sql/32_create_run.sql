-- Workflows, create_run (docs/sql-contract.md, "Workflows"): its refusals in order (membership and
-- role, then params, the idempotency key, the preview, the trigger-time policy), the run it
-- writes, a replay (deduplicated), the cooldown it starts, get_run and list_actions of the queued
-- run; send_promo's refusals (owner only, the preview must have the same params). Replays of an
-- executed or failed run: 33_execution_leases.sql; the rate limit: 36_rate_limit.sql.
-- Fixtures pg_temp.recover_shop, promo_shop: helpers.psql.
BEGIN;
\ir helpers.psql
SELECT * FROM no_plan();

-- The recover shop (6 recipients), previewed by the admin only.
SELECT pg_temp.recover_shop(:owner, :admin, :member) AS rec \gset
SELECT runhub.preview(:'rec', :admin, 'recover_abandoned') \g /dev/null

-- ---------------------------------------------------------------------------------------------
-- create_run refusals, in order: membership, role (neither counted), then params, preview, policy.
SELECT pg_temp.reset_rate(:'rec') \g /dev/null
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rec', :stranger, 'recover_abandoned', 'rec-x')), 'PT404 projects.notFound',
          'create_run by a non-member: PT404 projects.notFound');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rec', :member, 'recover_abandoned', 'rec-x')), 'PT403 auth.roleRequired',
          'create_run by a member below admin: PT403 auth.roleRequired');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rec', :admin, 'recover_everything', 'rec-x')), 'PT404 workflows.actionNotFound',
          'create_run of an unknown action: PT404 workflows.actionNotFound');
SELECT is(pg_temp.detail(pg_temp.create_sql(:'rec', :admin, 'recover_everything', 'rec-x')), '{"actionId": "recover_everything"}'::jsonb,
          'actionNotFound names the action');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rec', :admin, 'recover_abandoned', 'rec-x', '{"x": 1}')), 'PT400 workflows.unknownParam x',
          'create_run with an unknown param: PT400 workflows.unknownParam');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rec', :admin, 'recover_abandoned', 'rec-x', '[1]')), 'PT400 workflows.invalidParams params',
          'create_run with params that are not an object: PT400 workflows.invalidParams (params)');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rec', :admin, 'recover_abandoned', 'rec-x', jsonb_build_object('x', repeat('a', 32768)))),
          'PT413 workflows.paramsTooLarge', 'create_run with params over 32 KB: PT413 workflows.paramsTooLarge');
SELECT is(pg_temp.detail(pg_temp.create_sql(:'rec', :admin, 'recover_abandoned', 'rec-x', jsonb_build_object('x', repeat('a', 32768)))),
          jsonb_build_object('bytes', octet_length(jsonb_build_object('x', repeat('a', 32768))::text), 'maxBytes', 32768),
          'paramsTooLarge reports the size and the limit');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rec', :admin, 'recover_abandoned', '')), 'PT400 workflows.invalidParams idempotencyKey',
          'an empty idempotency key: PT400 workflows.invalidParams (idempotencyKey)');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rec', :admin, 'recover_abandoned', repeat('k', 256))), 'PT400 workflows.invalidParams idempotencyKey',
          'a 256-character idempotency key: PT400 workflows.invalidParams (idempotencyKey)');
SELECT pg_temp.reset_rate(:'rec') \g /dev/null
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rec', :owner, 'recover_abandoned', 'rec-x')), 'PT422 workflows.policy.previewRequired',
          'the owner has not previewed (only the admin has): PT422 workflows.policy.previewRequired');
SELECT is(pg_temp.detail(pg_temp.create_sql(:'rec', :owner, 'recover_abandoned', 'rec-x')), '{"maxAgeMinutes": 15}'::jsonb,
          'previewRequired names the maximum age');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rec', :admin, 'recover_abandoned', 'rec-x', '{}', 'ffffffff-0000-4000-8000-00000000eeee')),
          'PT422 workflows.policy.previewRequired', 'a preview_id that is not a preview of this actor: previewRequired');
UPDATE runhub.previews SET created_at = now() - interval '16 minutes' WHERE project_id = :'rec';
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rec', :admin, 'recover_abandoned', 'rec-x')), 'PT422 workflows.policy.previewRequired',
          'a preview 16 minutes old does not count: previewRequired');
SELECT is_empty(format($$SELECT 1 FROM runhub.workflow_runs WHERE project_id = %L$$, :'rec'), 'refused create_run calls wrote no run');

-- The run: queued with the preview's count; a replay is deduplicated; another key meets the cooldown.
SELECT pg_temp.reset_rate(:'rec') \g /dev/null
SELECT runhub.preview(:'rec', :admin, 'recover_abandoned') AS rec_pv \gset
SELECT pg_temp.set_policy('recover_abandoned', '{"maxRecipients": 5}') \g /dev/null
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rec', :admin, 'recover_abandoned', 'rec-1')), 'PT422 workflows.policy.tooManyRecipients',
          'a preview counting more than maxRecipients: PT422 workflows.policy.tooManyRecipients');
SELECT pg_temp.set_policy('recover_abandoned', '{"maxRecipients": 1000}') \g /dev/null
SELECT r ->> 'runId' AS rec1, r AS rec1_json
  FROM runhub.create_run(:'rec', :admin, 'recover_abandoned', 'rec-1', '{}', '2026-01-02T03:04:05Z',
                         ((:'rec_pv'::jsonb) ->> 'previewId')::uuid) r \gset
SELECT is((:'rec1_json'::jsonb) - 'runId', '{"status": "queued", "deduplicated": false}'::jsonb, 'create_run: queued, not deduplicated');
SELECT results_eq(format($$SELECT status, action_id, idempotency_key, params, client_requested_at, preview_id, recipient_count_estimate,
                                  triggered_by, triggered_by_role, attempts, requested_at
                             FROM runhub.workflow_runs WHERE id = %L$$, :'rec1'),
                  format($$VALUES ('queued', 'recover_abandoned', 'rec-1', '{}'::jsonb, '2026-01-02T03:04:05Z'::timestamptz, %L::uuid, 6,
                                   %L::uuid, 'admin', 0, now())$$, (:'rec_pv'::jsonb) ->> 'previewId', :admin),
                  'the run row: its preview, the preview''s count as estimate, who triggered it with which role');
SELECT is(pg_temp.violation(format($$UPDATE runhub.workflow_runs SET status = 'running' WHERE id = %L$$, :'rec1')),
          '23514 workflow_runs_running_state', 'a queued run cannot be set running by hand without started_at and a lease');
SELECT is(runhub.create_run(:'rec', :admin, 'recover_abandoned', 'rec-1'),
          jsonb_build_object('runId', :'rec1', 'status', 'queued', 'deduplicated', true),
          'the same key and params again: the same run, deduplicated, with its real status');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rec', :admin, 'recover_abandoned', 'rec-2')), 'PT409 workflows.policy.alreadyQueued',
          'another key within the cooldown of a run still queued: PT409 workflows.policy.alreadyQueued');
SELECT is(pg_temp.detail(pg_temp.create_sql(:'rec', :admin, 'recover_abandoned', 'rec-2')), '{"minutes": 60, "cooldownMinutes": 60}'::jsonb,
          'alreadyQueued says how long to wait');
SELECT is((SELECT count(*)::int FROM runhub.workflow_runs WHERE project_id = :'rec'), 1, 'one run in the project');
SELECT is(runhub.get_run(:'rec', :member, :'rec1'),
          jsonb_build_object('id', :'rec1', 'projectId', :'rec', 'actionId', 'recover_abandoned', 'status', 'queued',
                             'requestedAt', runhub._iso(now()), 'clientRequestedAt', '2026-01-02T03:04:05.000000Z',
                             'params', '{}'::jsonb, 'recipientCountEstimate', 6, 'attempts', 0, 'triggeredBy', :admin,
                             'previewId', (:'rec_pv'::jsonb) ->> 'previewId', 'stale', false,
                             'outcome', '{"model": "last_touch_48h", "windowHours": 48, "conversions": 0, "revenueCents": 0,
                                          "currency": "EUR", "confidence": null, "matchedBy": null, "byMethod": {},
                                          "windowEndsAt": null, "final": false}'::jsonb),
          'get_run of a queued run (any member may read it): no conversions yet, its window not begun');
SELECT is(pg_temp.availability(:'rec', :owner) -> 'recover_abandoned',
          '{"available": false, "reason": "workflows.policy.alreadyQueued", "reasonParams": {"minutes": 60, "cooldownMinutes": 60}}'::jsonb,
          'list_actions after a run (still queued): workflows.policy.alreadyQueued');
SELECT is(pg_temp.action(:'rec', :owner, 'recover_abandoned') -> 'reasonText',
          '"Ein Lauf dieser Aktion wartet bereits und hat noch nichts gesendet: sie kann in 60 Min. wieder laufen"'::jsonb,
          'list_actions reasonText: the refusal in the project''s locale (de)');
SELECT is(pg_temp.action(:'rec', :owner, 'recover_abandoned') -> 'lastRun',
          jsonb_build_object('id', :'rec1', 'status', 'queued', 'requestedAt', runhub._iso(now())),
          'list_actions lastRun: the queued run');
SELECT is(runhub.preview(:'rec', :admin, 'recover_abandoned') -> 'blocked',
          '{"reason": "workflows.policy.alreadyQueued", "reasonParams": {"minutes": 60, "cooldownMinutes": 60},
            "text": "Ein Lauf dieser Aktion wartet bereits und hat noch nichts gesendet: sie kann in 60 Min. wieder laufen"}'::jsonb,
          'a preview during the cooldown is blocked by it');

-- ---------------------------------------------------------------------------------------------
-- send_promo (the promo shop), previewed by the owner with :pp and with :pp in segment recent_7d.
SELECT pg_temp.promo_shop(:owner, :admin, :member) AS promo \gset
\set pp '{"subject": "Spring sale", "content": "Up to 30% off"}'
SELECT runhub.preview(:'promo', :owner, 'send_promo', :'pp') \g /dev/null
SELECT runhub.preview(:'promo', :owner, 'send_promo', (:'pp'::jsonb) || '{"segmentation": "recent_7d"}') AS ppv7 \gset
SELECT pg_temp.reset_rate(:'promo') \g /dev/null
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'promo', :admin, 'send_promo', 'promo-1', :'pp')), 'PT403 workflows.policy.ownerRequired',
          'create_run send_promo by an admin: PT403 workflows.policy.ownerRequired');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'promo', :owner, 'send_promo', 'promo-1', '{"subject": "Spring sale!", "content": "Up to 30% off"}')),
          'PT422 workflows.policy.previewRequired', 'a preview with other params does not count: previewRequired');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'promo', :owner, 'send_promo', 'promo-1', :'pp', ((:'ppv7'::jsonb) ->> 'previewId')::uuid)),
          'PT422 workflows.policy.previewRequired', 'a preview_id of a preview with other params (recent_7d): previewRequired');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'promo', :owner, 'send_promo', 'promo-1', '{"subject": "Spring sale"}')),
          'PT400 workflows.invalidParams content', 'create_run validates params too');

-- ---------------------------------------------------------------------------------------------
-- The trigger-time edges, both sides, to the microsecond (the ops shop, onboard_users, the member):
-- a preview counts for 15 minutes (previewMaxAgeMinutes), a run holds the cooldown for 60
-- (cooldownMinutes); params of at most 32768 bytes (maxWorkflowParamsBytes); an idempotency key of
-- 1 to 255 characters; clientRequestedAt from 2000 to a day ahead. now() is fixed for the
-- transaction, so each age is set exactly.
SELECT pg_temp.ops_shop(:owner, :member) AS ops \gset
SELECT pg_temp.reset_rate(:'ops') \g /dev/null
SELECT runhub.preview(:'ops', :member, 'onboard_users') ->> 'previewId' AS ops_pv \gset
UPDATE runhub.previews SET created_at = now() - interval '15 minutes' WHERE id = :'ops_pv';
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'ops', :member, 'onboard_users', 'ops-1')), 'PT422 workflows.policy.previewRequired',
          'a preview 15 minutes old to the microsecond no longer counts: previewRequired');
UPDATE runhub.previews SET created_at = now() - interval '15 minutes' + interval '1 microsecond' WHERE id = :'ops_pv';
SELECT is(runhub.create_run(:'ops', :member, 'onboard_users', 'ops-1') - 'runId', '{"status": "queued", "deduplicated": false}'::jsonb,
          'a microsecond younger, it counts: the run is queued');
SELECT id AS ops1 FROM runhub.workflow_runs WHERE project_id = :'ops' AND idempotency_key = 'ops-1' \gset
UPDATE runhub.workflow_runs SET requested_at = now() - interval '60 minutes' + interval '1 microsecond' WHERE id = :'ops1';
SELECT is(pg_temp.caught(pg_temp.create_sql(:'ops', :member, 'onboard_users', 'ops-2')) - 'hint',
          jsonb_build_object('sqlstate', 'PT409', 'message', 'workflows.policy.alreadyQueued', 'detail', '{"minutes": 1, "cooldownMinutes": 60}'),
          'a run requested a microsecond less than 60 minutes ago still holds the cooldown (1 minute to wait)');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'ops', :member, 'onboard_users', repeat('k', 255))), 'PT409 workflows.policy.alreadyQueued',
          'a 255-character idempotency key gets past the key''s check (to the cooldown)');
UPDATE runhub.workflow_runs SET requested_at = now() - interval '60 minutes' WHERE id = :'ops1';
SELECT is(runhub.create_run(:'ops', :member, 'onboard_users', 'ops-2') - 'runId', '{"status": "queued", "deduplicated": false}'::jsonb,
          'requested 60 minutes ago to the microsecond, it no longer does: the next run is queued');
-- Params: exactly 32768 bytes get past the size to the params' own check; a byte more is PT413.
SELECT is(octet_length(jsonb_build_object('x', repeat('a', 32759))::text), 32768, 'fixture: params of exactly 32768 bytes as JSON text');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'ops', :member, 'onboard_users', 'ops-2', jsonb_build_object('x', repeat('a', 32759)))),
          'PT400 workflows.unknownParam x', 'params of 32768 bytes are within the limit (refused for the unknown param, not the size)');
SELECT is(pg_temp.detail(pg_temp.create_sql(:'ops', :member, 'onboard_users', 'ops-2', jsonb_build_object('x', repeat('a', 32760)))),
          '{"bytes": 32769, "maxBytes": 32768}'::jsonb, 'params of 32769 bytes: PT413 workflows.paramsTooLarge {bytes, maxBytes}');
SELECT is(pg_temp.refusal(format('SELECT runhub.preview(%L, %L, %L, %L)', :'ops', :member, 'onboard_users', jsonb_build_object('x', repeat('a', 32760)))),
          'PT413 workflows.paramsTooLarge', 'preview refuses them alike');
-- clientRequestedAt, checked before the key is looked up: a replay of ops-2 answers when it passes.
CREATE FUNCTION pg_temp.client_at_sql(p_project uuid, p_actor uuid, p_at text)
RETURNS text LANGUAGE sql
AS $$ SELECT format('SELECT runhub.create_run(%L, %L, %L, %L, %L, %L)', p_project, p_actor, 'onboard_users', 'ops-2', '{}', p_at) $$;
SELECT is(ARRAY(SELECT v.at || ' -> ' || pg_temp.refusal(pg_temp.client_at_sql(:'ops', :member, v.at))
                  FROM (VALUES ('2000-01-01T00:00:00Z'), (runhub._iso(now() + interval '1 day'))) v(at)),
          ARRAY['2000-01-01T00:00:00Z -> no error', runhub._iso(now() + interval '1 day') || ' -> no error'],
          'clientRequestedAt at the first instant of 2000 and exactly a day ahead: accepted');
SELECT is(ARRAY(SELECT v.at || ' -> ' || r
                  FROM (VALUES ('1999-12-31T23:59:59.999999Z'), (runhub._iso(now() + interval '1 day 1 microsecond')), ('infinity'), ('-infinity')) v(at),
                       pg_temp.refusal(pg_temp.client_at_sql(:'ops', :member, v.at)) r
                 WHERE r IS DISTINCT FROM 'PT400 workflows.invalidParams clientRequestedAt'),
          '{}'::text[], 'a microsecond before 2000, a microsecond past a day ahead, or infinite: PT400 workflows.invalidParams (clientRequestedAt)');

SELECT * FROM finish();
ROLLBACK;
