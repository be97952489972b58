-- Workflows (docs/sql-contract.md, "Workflows"): the action registry, the lifecycle constraints,
-- project settings, list_actions, preview and its exclusions, create_run and its refusals in
-- order, execution (process_runs, and claim_runs / heartbeat_run / execute_run with leases),
-- the execution-time policy layer, cancel_run, suppress, get_run / list_runs and the rate limit.
--
-- now() is fixed for the whole transaction: events are placed relative to it, and runs that must
-- not hold the cooldown (or must sort in a known order) have requested_at moved back by hand.
-- process_runs and claim_runs take every queued run of the database, so each section leaves no
-- run queued that a later section does not expect. Previews made in this transaction tie on
-- created_at, so create_run is given a preview_id wherever "the latest preview" would be ambiguous.
-- create_run counts every call against a per-project limit of 10 per clock minute; sections that
-- are not about the limit reset their project's counter first (pg_temp.reset_rate).
BEGIN;
\ir helpers.psql
SELECT plan(287);

\set owner    '''ffffffff-0000-4000-8000-000000000001'''
\set admin    '''ffffffff-0000-4000-8000-000000000002'''
\set member   '''ffffffff-0000-4000-8000-000000000003'''
\set owner2   '''ffffffff-0000-4000-8000-000000000004'''
\set stranger '''ffffffff-0000-4000-8000-0000000000ff'''

-- ---------------------------------------------------------------------------------------------
-- Helpers (superuser only, dropped with the transaction).

-- Ingest one event occurring p_ago before now(); returns its id.
CREATE FUNCTION pg_temp.ev(p_project uuid, p_type text, p_key text, p_ago interval,
                           p_customer jsonb DEFAULT NULL, p_extra jsonb DEFAULT '{}')
RETURNS bigint LANGUAGE sql
AS $$
    SELECT (runhub.ingest_event(p_project, jsonb_strip_nulls(jsonb_build_object(
                'type', p_type, 'idempotencyKey', p_key, 'occurredAt', runhub._iso(now() - p_ago),
                'customer', p_customer)) || p_extra) ->> 'eventId')::bigint
$$;

-- Record one of runhub's own *_email_sent events p_ago before now(), as record_sent writes it
-- (idempotency key mail:<Message-ID>): clients may not ingest such events (events.reservedForRunhub).
CREATE FUNCTION pg_temp.own_send(p_project uuid, p_type text, p_message_id text, p_ago interval, p_email text)
RETURNS bigint LANGUAGE sql
AS $$
    INSERT INTO runhub.business_events (project_id, event_type, occurred_at, idempotency_key, customer_email, payload)
    VALUES (p_project, p_type, now() - p_ago, 'mail:' || p_message_id, p_email,
            jsonb_build_object('recipientEmail', p_email, 'messageId', p_message_id))
    RETURNING id
$$;

-- The DETAIL JSON of the error a statement raises.
CREATE FUNCTION pg_temp.detail(p_sql text)
RETURNS jsonb LANGUAGE sql
AS $$ SELECT (pg_temp.caught(p_sql) ->> 'detail')::jsonb $$;

CREATE FUNCTION pg_temp.settings_sql(p_project uuid, p_actor uuid, p_settings jsonb)
RETURNS text LANGUAGE sql
AS $$ SELECT format('SELECT runhub.update_project_settings(%L, %L, %L)', p_project, p_actor, p_settings) $$;

CREATE FUNCTION pg_temp.preview_sql(p_project uuid, p_actor uuid, p_action text, p_params jsonb DEFAULT '{}')
RETURNS text LANGUAGE sql
AS $$ SELECT format('SELECT runhub.preview(%L, %L, %L, %L)', p_project, p_actor, p_action, p_params) $$;

CREATE FUNCTION pg_temp.create_sql(p_project uuid, p_actor uuid, p_action text, p_key text,
                                   p_params jsonb DEFAULT '{}', p_preview uuid DEFAULT NULL)
RETURNS text LANGUAGE sql
AS $$ SELECT format('SELECT runhub.create_run(%L, %L, %L, %L, %L, NULL, %L)',
                    p_project, p_actor, p_action, p_key, p_params, p_preview) $$;

CREATE FUNCTION pg_temp.cancel_sql(p_project uuid, p_actor uuid, p_run uuid)
RETURNS text LANGUAGE sql
AS $$ SELECT format('SELECT runhub.cancel_run(%L, %L, %L)', p_project, p_actor, p_run) $$;

-- Forget the create_run calls counted so far for a project (a fresh rate-limit window).
CREATE FUNCTION pg_temp.reset_rate(p_project uuid)
RETURNS void LANGUAGE plpgsql
AS $$ BEGIN PERFORM setval(trigger_counter, 1, false) FROM runhub.projects WHERE id = p_project; END $$;

-- Merge keys into an action's policy (inside this transaction only).
CREATE FUNCTION pg_temp.set_policy(p_action text, p_patch jsonb)
RETURNS void LANGUAGE sql
AS $$ UPDATE runhub.actions SET policy = policy || p_patch WHERE id = p_action $$;

-- Each action's availability as list_actions reports it to the actor: {id: {available, reason, reasonParams}}.
CREATE FUNCTION pg_temp.availability(p_project uuid, p_actor uuid)
RETURNS jsonb LANGUAGE sql
AS $$
    SELECT jsonb_object_agg(a ->> 'id', jsonb_build_object(
               'available', a -> 'available', 'reason', a -> 'reason', 'reasonParams', a -> 'reasonParams'))
      FROM jsonb_array_elements(runhub.list_actions(p_project, p_actor)) a
$$;

-- One action of list_actions.
CREATE FUNCTION pg_temp.action(p_project uuid, p_actor uuid, p_action text)
RETURNS jsonb LANGUAGE sql
AS $$ SELECT a FROM jsonb_array_elements(runhub.list_actions(p_project, p_actor)) a WHERE a ->> 'id' = p_action $$;

-- A preview's excluded counts as {exclusion: count}.
CREATE FUNCTION pg_temp.excluded(p_preview jsonb)
RETURNS jsonb LANGUAGE sql
AS $$ SELECT jsonb_object_agg(x ->> 'exclusion', x -> 'count') FROM jsonb_array_elements(p_preview -> 'excluded') x $$;

-- Who the recipient builder considers now, and why each is left out: {email: exclusion or "included"}.
CREATE FUNCTION pg_temp.who(p_project uuid, p_action text, p_params jsonb DEFAULT '{}')
RETURNS jsonb LANGUAGE sql
AS $$
    SELECT coalesce(jsonb_object_agg(email, coalesce(excluded_by, 'included')), '{}')
      FROM runhub._recipients(p_project, p_action, p_params, now())
$$;

-- The lifecycle constraint a statement violates ('SQLSTATE constraint'), or 'no error'. Always
-- rolled back: a row that was accepted does not stay behind for process_runs to pick up.
CREATE FUNCTION pg_temp.violation(p_sql text)
RETURNS text LANGUAGE plpgsql
AS $$
DECLARE
    v_state text;
    v_constraint text;
BEGIN
    BEGIN
        EXECUTE p_sql;
        RAISE EXCEPTION USING ERRCODE = 'ZZ999', MESSAGE = 'roll back';
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_constraint = CONSTRAINT_NAME;
    END;
    RETURN CASE WHEN v_state = 'ZZ999' THEN 'no error' ELSE v_state || ' ' || coalesce(nullif(v_constraint, ''), '?') END;
END
$$;

-- pg_temp.refusal, with whatever the statement wrote rolled back.
CREATE FUNCTION pg_temp.refusal_undone(p_sql text)
RETURNS text LANGUAGE plpgsql
AS $$
DECLARE
    v_refusal text;
BEGIN
    BEGIN
        v_refusal := pg_temp.refusal(p_sql);
        RAISE EXCEPTION USING ERRCODE = 'ZZ998', MESSAGE = 'roll back';
    EXCEPTION WHEN SQLSTATE 'ZZ998' THEN
        NULL;
    END;
    RETURN v_refusal;
END
$$;

-- An INSERT of a run in a given state (t/f: started_at, lease, executed_at, completed_at, result set).
CREATE FUNCTION pg_temp.run_insert(p_project uuid, p_status text, p_started boolean, p_lease boolean,
                                   p_executed boolean, p_completed boolean, p_result boolean)
RETURNS text LANGUAGE sql
AS $$
    SELECT format($f$INSERT INTO runhub.workflow_runs (project_id, action_id, idempotency_key, triggered_by, triggered_by_role,
                                                       status, started_at, lease_owner, lease_expires_at, executed_at, completed_at, result)
                     VALUES (%L, 'onboard_users', 'lifecycle', 'ffffffff-0000-4000-8000-000000000001', 'owner', %L,
                             %s, %s, %s, %s, %s, %s)$f$,
                  p_project, p_status,
                  CASE WHEN p_started THEN 'now()' ELSE 'NULL' END,
                  CASE WHEN p_lease THEN '''w''' ELSE 'NULL' END,
                  CASE WHEN p_lease THEN 'now() + interval ''5 minutes''' ELSE 'NULL' END,
                  CASE WHEN p_executed THEN 'now()' ELSE 'NULL' END,
                  CASE WHEN p_completed THEN 'now()' ELSE 'NULL' END,
                  CASE WHEN p_result THEN '''{}''::jsonb' ELSE 'NULL' END)
$$;

-- ---------------------------------------------------------------------------------------------
-- The registry: three actions, as data, in their documented order.
SELECT results_eq($$SELECT id, label, type, risk, required_role, confirm_required, supports_preview,
                           exclusions, template, sent_event_type
                      FROM runhub.actions ORDER BY position$$,
                  $$VALUES ('recover_abandoned', 'Recover abandoned checkouts', 'workflow', 'medium', 'admin', true, true,
                            '{converted,alreadyContacted,suppressed,frequencyCap}'::text[], 'recovery', 'recovery_email_sent'),
                           ('send_promo', 'Send a promotion or update', 'workflow', 'high', 'owner', true, true,
                            '{suppressed,frequencyCap}'::text[], 'promo', 'promo_email_sent'),
                           ('onboard_users', 'Welcome new sign-ups', 'workflow', 'low', 'member', true, true,
                            '{alreadyOnboarded,suppressed,frequencyCap}'::text[], 'onboarding', 'onboarding_email_sent')$$,
                  'the registry: 3 actions with their risk, required role, exclusions in order, template and sent event');
SELECT is((SELECT jsonb_object_agg(id, policy) FROM runhub.actions),
          '{"recover_abandoned": {"cooldownMinutes": 60, "maxRecipients": 1000, "minRecipients": 1, "requirePreview": true,
                                  "previewMaxAgeMinutes": 15, "warnAtRecipients": 500, "windowHours": 24},
            "send_promo":        {"cooldownMinutes": 60, "maxRecipients": 1000, "minRecipients": 1, "requirePreview": true,
                                  "previewMaxAgeMinutes": 15, "warnAtRecipients": 500},
            "onboard_users":     {"cooldownMinutes": 60, "maxRecipients": 1000, "minRecipients": 1, "requirePreview": true,
                                  "previewMaxAgeMinutes": 15, "warnAtRecipients": 500, "windowDays": 7}}'::jsonb,
          'policy: cooldown 60 min, 1-1000 recipients, preview within 15 min, warning from 500; the windows');
SELECT is((SELECT jsonb_object_agg(id, requires) FROM runhub.actions),
          '{"recover_abandoned": [{"type": "hasIntegration", "integration": "payments"}, {"type": "hasSetting", "setting": "shopUrl"},
                                  {"type": "hasEvents", "eventType": "checkout_started", "minCount": 1}],
            "send_promo":        [{"type": "hasIntegration", "integration": "email"}, {"type": "hasRecipients", "source": "customers_30d"}],
            "onboard_users":     [{"type": "hasIntegration", "integration": "email"},
                                  {"type": "hasEvents", "eventType": "user_signed_up", "minCount": 1}]}'::jsonb,
          'prerequisites, in order: payments + shopUrl + a checkout; email + recent customers; email + a sign-up');
SELECT is((SELECT ui FROM runhub.actions WHERE id = 'send_promo'), '{"modalId": "sendPromo"}'::jsonb, 'send_promo opens the sendPromo modal');
SELECT is_empty($$SELECT a.id, x FROM runhub.actions a, unnest(a.exclusions) x WHERE runhub.exclusion_label(x, 16) IS NULL$$,
                'every exclusion an action lists has a label');
SELECT results_eq($$SELECT runhub.exclusion_label(x, 16) FROM unnest(ARRAY['converted', 'alreadyContacted', 'alreadyOnboarded', 'suppressed', 'frequencyCap']) x$$,
                  $$VALUES ('Customers who paid after their checkout'), ('Checkouts that already got a recovery e-mail'),
                           ('Users who already got a welcome e-mail'), ('Unsubscribed, bounced or suppressed addresses'),
                           ('Customers e-mailed by any workflow in the last 16 hours')$$,
                  'exclusion labels, the frequency cap with its hours');
SELECT results_eq($$SELECT runhub.criteria_text(a.id, a.policy, p) FROM runhub.actions a,
                           (VALUES (1, '{"segmentation": "recent_30d"}'::jsonb), (2, '{"segmentation": "recent_7d"}'), (3, '{"segmentation": "all"}')) v(n, p)
                     WHERE a.id <> 'send_promo' AND n = 1 OR a.id = 'send_promo'
                     ORDER BY a.position, n$$,
                  $$VALUES ('Customers whose latest checkout in the last 24 hours has no payment yet'),
                           ('Customers and leads seen in the last 30 days'), ('Customers and leads seen in the last 7 days'),
                           ('Every customer and lead this shop has seen'),
                           ('People who signed up in the last 7 days and have done nothing since')$$,
                  'criteria_text is built from the registry''s windows and the params');

-- ---------------------------------------------------------------------------------------------
-- Lifecycle constraints on workflow_runs, written directly (each attempt rolled back).
SELECT runhub.create_project('Other shop', :owner2, 'UTC', 'EUR') AS other \gset
SELECT is(pg_temp.violation(pg_temp.run_insert(:'other', 'running', false, true, false, false, false)),
          '23514 workflow_runs_running_state', 'a running run without started_at: 23514 workflow_runs_running_state');
SELECT is(pg_temp.violation(pg_temp.run_insert(:'other', 'running', true, false, false, false, false)),
          '23514 workflow_runs_running_state', 'a running run with neither a lease nor executed_at: workflow_runs_running_state');
SELECT is(pg_temp.violation(pg_temp.run_insert(:'other', 'running', true, true, false, false, false)),
          'no error', 'a running run with started_at and a lease is valid');
SELECT is(pg_temp.violation(pg_temp.run_insert(:'other', 'running', true, false, true, false, false)),
          'no error', 'a running run with started_at and executed_at (delivering) is valid');
SELECT is(pg_temp.violation(pg_temp.run_insert(:'other', 'running', true, true, false, true, false)),
          '23514 workflow_runs_finished_state', 'a running run with completed_at: workflow_runs_finished_state');
SELECT is(pg_temp.violation(pg_temp.run_insert(:'other', 'succeeded', true, false, true, false, true)),
          '23514 workflow_runs_finished_state', 'a succeeded run without completed_at: workflow_runs_finished_state');
SELECT is(pg_temp.violation(pg_temp.run_insert(:'other', 'queued', false, false, false, true, false)),
          '23514 workflow_runs_finished_state', 'a queued run with completed_at: workflow_runs_finished_state');
SELECT is(pg_temp.violation(pg_temp.run_insert(:'other', 'failed', true, false, false, true, false)),
          '23514 workflow_runs_result_state', 'a failed run without a result: workflow_runs_result_state');
SELECT is(pg_temp.violation(pg_temp.run_insert(:'other', 'succeeded', true, false, true, true, false)),
          '23514 workflow_runs_result_state', 'a succeeded run without a result: workflow_runs_result_state');
SELECT is(pg_temp.violation(pg_temp.run_insert(:'other', 'failed', true, false, false, true, true)),
          'no error', 'a failed run with completed_at and a result is valid');
SELECT is(pg_temp.violation(pg_temp.run_insert(:'other', 'cancelled', false, false, false, true, false)),
          'no error', 'a cancelled run needs completed_at, not a result');
SELECT is(pg_temp.violation(pg_temp.run_insert(:'other', 'queued', false, true, false, false, false)),
          '23514 workflow_runs_queued_state', 'a queued run with a lease owner: workflow_runs_queued_state');
SELECT is(pg_temp.violation(pg_temp.run_insert(:'other', 'queued', false, false, true, false, false)),
          '23514 workflow_runs_queued_state', 'a queued run with executed_at: workflow_runs_queued_state');
SELECT is(pg_temp.violation(pg_temp.run_insert(:'other', 'paused', false, false, false, false, false)),
          '23514 workflow_runs_status_check', 'an unknown status: workflow_runs_status_check');
SELECT is(pg_temp.violation(format($$INSERT INTO runhub.outbox (project_id, template, locale, to_email, message_id, status)
                                       VALUES (%L, 'promo', 'en', 'x@example.com', '<x@runhub>', 'sending')$$, :'other')),
          '23514 outbox_sending_state', 'an outbox message sending without a lease: outbox_sending_state');
SELECT is(pg_temp.violation(format($$INSERT INTO runhub.outbox (project_id, template, locale, to_email, message_id, status)
                                       VALUES (%L, 'promo', 'en', 'x@example.com', '<x@runhub>', 'sent')$$, :'other')),
          '23514 outbox_sent_state', 'an outbox message sent without sent_at: outbox_sent_state');
SELECT is(pg_temp.violation(format($$INSERT INTO runhub.suppressions (project_id, email, reason) VALUES (%L, 'Ann@example.com', 'manual')$$, :'other')),
          '23514 suppressions_email_check', 'a suppression of a mixed-case address: suppressions_email_check');
SELECT is_empty(format($$SELECT 1 FROM runhub.workflow_runs WHERE project_id = %L$$, :'other'), 'the lifecycle probes left no run behind');

-- ---------------------------------------------------------------------------------------------
-- update_project_settings: admin or owner; validated key by key; unknown keys refused; null removes.
SELECT runhub.create_project('Recover shop', :owner, 'UTC', 'EUR', 'de') AS rec \gset
SELECT runhub.add_member(:'rec', :owner, :admin, 'admin'), runhub.add_member(:'rec', :owner, :member, 'member') \g /dev/null

SELECT is(pg_temp.refusal(pg_temp.settings_sql(:'rec', :member, '{"frequencyCapHours": 4}')), 'PT403 auth.roleRequired',
          'update_project_settings by a member: PT403 auth.roleRequired');
SELECT is(pg_temp.detail(pg_temp.settings_sql(:'rec', :member, '{"frequencyCapHours": 4}')), '{"required": "admin", "role": "member"}'::jsonb,
          'the refusal names admin as the required role');
SELECT is(pg_temp.refusal(pg_temp.settings_sql(:'rec', :stranger, '{"frequencyCapHours": 4}')), 'PT404 projects.notFound',
          'update_project_settings by a non-member: PT404 projects.notFound');
SELECT is(ARRAY(SELECT v::text || ' -> ' || pg_temp.refusal(pg_temp.settings_sql(:'rec', :admin, jsonb_build_object('shopUrl', v)))
                  FROM unnest(ARRAY['"ftp://shop.example"', '"https://shop.example/?q=1"', '"https://shop.example/#top"',
                                    '"shop.example"', '""', '42', '"https://shop example.com"', '["https://shop.example"]',
                                    to_jsonb('https://shop.example/' || repeat('a', 480))]::jsonb[]) v
                 WHERE pg_temp.refusal(pg_temp.settings_sql(:'rec', :admin, jsonb_build_object('shopUrl', v)))
                       IS DISTINCT FROM 'PT400 common.invalidInput shopUrl'),
          '{}'::text[], 'bad shopUrl values (scheme, query, fragment, no scheme, empty, number, space, list, 501 chars): PT400 shopUrl');
SELECT is(ARRAY(SELECT v::text || ' -> ' || pg_temp.refusal(pg_temp.settings_sql(:'rec', :admin, jsonb_build_object('frequencyCapHours', v)))
                  FROM unnest(ARRAY['169', '-1', '1.5', '"16"', 'true', '1000', '[]']::jsonb[]) v
                 WHERE pg_temp.refusal(pg_temp.settings_sql(:'rec', :admin, jsonb_build_object('frequencyCapHours', v)))
                       IS DISTINCT FROM 'PT400 common.invalidInput frequencyCapHours'),
          '{}'::text[], 'bad frequencyCapHours values (169, -1, 1.5, a string, a boolean, 1000, a list): PT400 frequencyCapHours');
SELECT is(ARRAY(SELECT v::text || ' -> ' || pg_temp.refusal(pg_temp.settings_sql(:'rec', :admin, jsonb_build_object('integrations', v)))
                  FROM unnest(ARRAY['"payments"', '["sms"]', '[1]', '{"payments": true}', '[null]', '["payments", "Email"]']::jsonb[]) v
                 WHERE pg_temp.refusal(pg_temp.settings_sql(:'rec', :admin, jsonb_build_object('integrations', v)))
                       IS DISTINCT FROM 'PT400 common.invalidInput integrations'),
          '{}'::text[], 'bad integrations values (a string, unknown, a number, an object, null, wrong case): PT400 integrations');
SELECT is(pg_temp.refusal(pg_temp.settings_sql(:'rec', :admin, '{"shopURL": "https://shop.example"}')), 'PT400 common.unknownField shopURL',
          'an unknown key (shopURL): PT400 common.unknownField');
SELECT is(pg_temp.detail(pg_temp.settings_sql(:'rec', :admin, '{"shopURL": "https://shop.example"}')), '{"field": "shopURL"}'::jsonb,
          'the refusal names the unknown key');
SELECT is(pg_temp.refusal(pg_temp.settings_sql(:'rec', :admin, '{"shopURL": null}')), 'PT400 common.unknownField shopURL',
          'an unknown key is refused even with a null value (a mistyped removal must not silently do nothing)');
SELECT is(pg_temp.refusal(pg_temp.settings_sql(:'rec', :admin, '[]')), 'PT400 common.invalidInput settings',
          'settings that are not an object: PT400 common.invalidInput (settings)');
SELECT is(pg_temp.refusal(pg_temp.settings_sql(:'rec', :admin, NULL)), 'PT400 common.invalidInput settings',
          'null settings: PT400 common.invalidInput (settings)');
SELECT is(pg_temp.refusal(pg_temp.settings_sql(:'rec', :admin, '{"frequencyCapHours": 5, "shopUrl": "nope"}')),
          'PT400 common.invalidInput shopUrl', 'one bad key among good ones: the call is refused');
SELECT is((SELECT settings FROM runhub.projects WHERE id = :'rec'), '{}'::jsonb, 'refused updates wrote nothing');

-- list_actions on a project with nothing set up: the first refusal among role, prerequisites, cooldown.
SELECT is(pg_temp.refusal(format('SELECT runhub.list_actions(%L, %L)', :'rec', :stranger)), 'PT404 projects.notFound',
          'list_actions by a non-member: PT404 projects.notFound');
SELECT is((SELECT jsonb_agg(a ->> 'id') FROM jsonb_array_elements(runhub.list_actions(:'rec', :owner)) a),
          '["recover_abandoned", "send_promo", "onboard_users"]'::jsonb, 'list_actions lists the registry in order');
SELECT is_empty(format($$SELECT a ->> 'id', array_agg(k ORDER BY k)
                           FROM jsonb_array_elements(runhub.list_actions(%L, %L)) a, jsonb_object_keys(a) k
                          GROUP BY a ->> 'id'
                         HAVING array_agg(k ORDER BY k COLLATE "C") <> ARRAY['available', 'confirmRequired', 'exclusions', 'id', 'label',
                                'lastOutcome', 'lastRun', 'outcome', 'policy', 'reason', 'reasonParams', 'requiredRole',
                                'requires', 'risk', 'supportsPreview', 'type', 'ui']$$, :'rec', :owner),
                'every ActionDefinition has exactly the documented keys');
SELECT is(pg_temp.action(:'rec', :owner, 'recover_abandoned') - ARRAY['available', 'reason', 'reasonParams'],
          (SELECT jsonb_build_object('id', id, 'label', label, 'type', type, 'risk', risk, 'requiredRole', required_role,
                                     'confirmRequired', confirm_required, 'supportsPreview', supports_preview, 'ui', ui,
                                     'outcome', outcome, 'requires', requires, 'policy', policy, 'exclusions', to_jsonb(exclusions),
                                     'lastRun', NULL, 'lastOutcome', NULL)
             FROM runhub.actions WHERE id = 'recover_abandoned'),
          'an ActionDefinition is its registry row; lastRun and lastOutcome null before any run');
SELECT is(pg_temp.availability(:'rec', :owner),
          '{"recover_abandoned": {"available": false, "reason": "workflows.requires.integration", "reasonParams": {"integration": "payments"}},
            "send_promo":        {"available": false, "reason": "workflows.requires.integration", "reasonParams": {"integration": "email"}},
            "onboard_users":     {"available": false, "reason": "workflows.requires.integration", "reasonParams": {"integration": "email"}}}'::jsonb,
          'no integrations: every action unavailable with workflows.requires.integration');
SELECT is(pg_temp.availability(:'rec', :member),
          '{"recover_abandoned": {"available": false, "reason": "auth.roleRequired", "reasonParams": {"required": "admin", "role": "member"}},
            "send_promo":        {"available": false, "reason": "workflows.policy.ownerRequired", "reasonParams": {"required": "owner", "role": "member"}},
            "onboard_users":     {"available": false, "reason": "workflows.requires.integration", "reasonParams": {"integration": "email"}}}'::jsonb,
          'a member: the role refusal comes before the prerequisites (send_promo: workflows.policy.ownerRequired)');

-- Valid updates, merged key by key.
SELECT is(runhub.update_project_settings(:'rec', :owner, '{"frequencyCapHours": 0}') - ARRAY['timezone', 'dailyDigestEnabled', 'dailyDigestHour', 'dailyDigestRecipient', 'dailyDigestNextAt'], '{"frequencyCapHours": 0}'::jsonb,
          'an owner may update settings (frequencyCapHours 0 is allowed)');
SELECT is(runhub.update_project_settings(:'rec', :owner, '{}') - ARRAY['frequencyCapHours'],
          jsonb_build_object('timezone', (SELECT timezone FROM runhub.projects WHERE id = :'rec'), 'dailyDigestEnabled', false,
                             'dailyDigestHour', 9, 'dailyDigestRecipient', NULL, 'dailyDigestNextAt', NULL),
          'the settings come back with the project''s timezone and digest settings');
SELECT is(runhub.update_project_settings(:'rec', :admin, '{"frequencyCapHours": 168, "integrations": ["payments", "email"]}') - ARRAY['timezone', 'dailyDigestEnabled', 'dailyDigestHour', 'dailyDigestRecipient', 'dailyDigestNextAt'],
          '{"frequencyCapHours": 168, "integrations": ["payments", "email"]}'::jsonb,
          'an admin may update settings; frequencyCapHours 168 is allowed; keys merge');
SELECT is(pg_temp.availability(:'rec', :owner) -> 'recover_abandoned',
          '{"available": false, "reason": "workflows.requires.setting", "reasonParams": {"setting": "shopUrl"}}'::jsonb,
          'recover_abandoned with payments but no shopUrl: workflows.requires.setting');
SELECT is(pg_temp.availability(:'rec', :owner) -> 'send_promo',
          '{"available": false, "reason": "workflows.requires.recipients", "reasonParams": {"source": "customers_30d"}}'::jsonb,
          'send_promo with email but no customers: workflows.requires.recipients');
SELECT is(runhub.update_project_settings(:'rec', :admin, '{"shopUrl": "http://localhost:8080/shop"}') ->> 'shopUrl',
          'http://localhost:8080/shop', 'an http shopUrl with a port and a path is accepted');
SELECT is(runhub.update_project_settings(:'rec', :admin, '{"shopUrl": "https://shop.example/", "frequencyCapHours": null}') - ARRAY['timezone', 'dailyDigestEnabled', 'dailyDigestHour', 'dailyDigestRecipient', 'dailyDigestNextAt'],
          '{"shopUrl": "https://shop.example/", "integrations": ["payments", "email"]}'::jsonb,
          'null removes a key (frequencyCapHours back to its default)');
SELECT is(pg_temp.availability(:'rec', :owner) -> 'recover_abandoned',
          '{"available": false, "reason": "workflows.requires.events", "reasonParams": {"eventType": "checkout_started", "minCount": 1}}'::jsonb,
          'recover_abandoned without a checkout yet: workflows.requires.events');

-- ---------------------------------------------------------------------------------------------
-- The recover_abandoned fixture (project locale de). Each person is here for one rule.
SELECT pg_temp.ev(:'rec', 'checkout_started', 'ann-1', '2 hours', '{"email": "ann@example.com", "name": "Ann", "locale": "fr-CA"}',
                  '{"correlationId": "corr-ann", "amountCents": 4200, "currency": "EUR", "payload": {"cartId": "cart&ann"}}') \g /dev/null
SELECT pg_temp.ev(:'rec', 'checkout_started', 'bob-1', '3 hours', '{"email": "bob@example.com", "locale": "it"}', '{"payload": {"cartId": "cart-bob"}}') \g /dev/null
-- carol paid (by correlation id, the payment names no customer); dave paid (by e-mail, no correlation id).
SELECT pg_temp.ev(:'rec', 'checkout_started', 'carol-1', '2 hours', '{"email": "carol@example.com"}', '{"correlationId": "corr-carol"}') \g /dev/null
SELECT pg_temp.ev(:'rec', 'payment_succeeded', 'carol-pay', '1 hour', NULL, '{"correlationId": "corr-carol", "amountCents": 900, "currency": "EUR"}') \g /dev/null
SELECT pg_temp.ev(:'rec', 'checkout_started', 'dave-1', '2 hours', '{"email": "dave@example.com"}', '{"payload": {"cartId": "cart-dave"}}') \g /dev/null
SELECT pg_temp.ev(:'rec', 'payment_succeeded', 'dave-pay', '1 hour', '{"email": "dave@example.com"}') \g /dev/null
-- erin paid before her checkout (same e-mail, same correlation id): that does not convert it.
SELECT pg_temp.ev(:'rec', 'payment_succeeded', 'erin-pay', '5 hours', '{"email": "erin@example.com"}', '{"correlationId": "corr-erin"}') \g /dev/null
SELECT pg_temp.ev(:'rec', 'checkout_started', 'erin-1', '2 hours', '{"email": "erin@example.com", "locale": "es-MX"}',
                  '{"correlationId": "corr-erin", "amountCents": 1500, "currency": "EUR", "payload": {"cartId": "cart-erin"}}') \g /dev/null
-- frank's checkout is older than the 24-hour window.
SELECT pg_temp.ev(:'rec', 'checkout_started', 'frank-1', '30 hours', '{"email": "frank@example.com"}', '{"payload": {"cartId": "cart-frank"}}') \g /dev/null
-- gina is suppressed; hank is suppressed and converted (converted comes first).
SELECT pg_temp.ev(:'rec', 'checkout_started', 'gina-1', '2 hours', '{"email": "gina@example.com"}', '{"payload": {"cartId": "cart-gina"}}') \g /dev/null
SELECT pg_temp.ev(:'rec', 'checkout_started', 'hank-1', '2 hours', '{"email": "hank@example.com"}', '{"payload": {"cartId": "cart-hank"}}') \g /dev/null
SELECT pg_temp.ev(:'rec', 'payment_succeeded', 'hank-pay', '1 hour', '{"email": "hank@example.com"}') \g /dev/null
-- ivy has two checkouts: the latest one counts.
SELECT pg_temp.ev(:'rec', 'checkout_started', 'ivy-1', '10 hours', '{"email": "ivy@example.com"}', '{"payload": {"cartId": "cart-ivy-old"}}') \g /dev/null
SELECT pg_temp.ev(:'rec', 'checkout_started', 'ivy-2', '1 hour', '{"email": "ivy@example.com"}', '{"payload": {"cartId": "cart-ivy-new"}}') \g /dev/null
SELECT pg_temp.ev(:'rec', 'checkout_started', 'kim-1', '4 hours', '{"email": "kim@example.com", "name": "Kim", "locale": "en-GB"}', '{"payload": {"cartId": "cart-kim"}}') \g /dev/null
SELECT pg_temp.ev(:'rec', 'checkout_started', 'leo-1', '5 hours', '{"email": "leo@example.com"}', '{"payload": {"cartId": "cart-leo"}}') \g /dev/null
SELECT pg_temp.ev(:'rec', 'checkout_started', 'anon-1', '1 hour', NULL, '{"payload": {"cartId": "cart-anon"}}') \g /dev/null
SELECT lives_ok(format($$SELECT runhub.suppress(%L, %L, 'gina@example.com'), runhub.suppress(%L, %L, ' HANK@Example.com ', 'unsubscribed')$$,
                       :'rec', :owner, :'rec', :admin),
                'fixture: gina and hank are suppressed');

SELECT is(pg_temp.who(:'rec', 'recover_abandoned'),
          '{"ann@example.com": "included", "bob@example.com": "included", "carol@example.com": "converted",
            "dave@example.com": "converted", "erin@example.com": "included", "gina@example.com": "suppressed",
            "hank@example.com": "converted", "ivy@example.com": "included", "kim@example.com": "included",
            "leo@example.com": "included"}'::jsonb,
          'recipient builder: converted by correlation (carol) and by e-mail (dave), not by an earlier payment (erin); '
          'suppressed (gina); the first exclusion wins (hank); frank out of the window; no anonymous checkout');
SELECT is((SELECT cart_id FROM runhub._recipients(:'rec', 'recover_abandoned', '{}', now()) WHERE email = 'ivy@example.com'),
          'cart-ivy-new', 'each customer''s latest checkout counts (ivy: her newer cart)');
SELECT is((SELECT cart_id FROM runhub._recipients(:'rec', 'recover_abandoned', '{}', now()) WHERE email = 'carol@example.com'),
          'corr-carol', 'without payload.cartId, the cart id is the correlation id');
SELECT is(pg_temp.availability(:'rec', :owner),
          '{"recover_abandoned": {"available": true, "reason": null, "reasonParams": null},
            "send_promo":        {"available": true, "reason": null, "reasonParams": null},
            "onboard_users":     {"available": false, "reason": "workflows.requires.events", "reasonParams": {"eventType": "user_signed_up", "minCount": 1}}}'::jsonb,
          'with checkouts and recent customers, recover_abandoned and send_promo are available to the owner');
SELECT is(pg_temp.availability(:'rec', :member) -> 'send_promo',
          '{"available": false, "reason": "workflows.policy.ownerRequired", "reasonParams": {"required": "owner", "role": "member"}}'::jsonb,
          'a member still sees send_promo unavailable: workflows.policy.ownerRequired');

-- ---------------------------------------------------------------------------------------------
-- preview: exact count, first five in e-mail order, criteria and exclusions from the registry.
SELECT runhub.preview(:'rec', :admin, 'recover_abandoned') AS pv \gset
SELECT is(ARRAY(SELECT k FROM jsonb_object_keys(:'pv'::jsonb) k ORDER BY k COLLATE "C"),
          '{count,criteria,excluded,exclusions,params,previewId,sample,warnings}'::text[],
          'an allowed preview has exactly these keys (no blocked)');
SELECT is((:'pv'::jsonb) -> 'count', '6'::jsonb, 'preview count: ann, bob, erin, ivy, kim, leo');
SELECT is((:'pv'::jsonb) -> 'sample',
          '[{"email": "ann@example.com", "name": "Ann"}, {"email": "bob@example.com"}, {"email": "erin@example.com"},
            {"email": "ivy@example.com"}, {"email": "kim@example.com", "name": "Kim"}]'::jsonb,
          'sample: the first five recipients in e-mail order, with names where known');
SELECT is((:'pv'::jsonb) ->> 'criteria', 'Customers whose latest checkout in the last 24 hours has no payment yet', 'preview criteria');
SELECT is((:'pv'::jsonb) -> 'exclusions',
          '["Customers who paid after their checkout", "Checkouts that already got a recovery e-mail",
            "Unsubscribed, bounced or suppressed addresses", "Customers e-mailed by any workflow in the last 16 hours"]'::jsonb,
          'preview exclusions: labels in registry order, with the default 16-hour cap');
SELECT is((:'pv'::jsonb) -> 'excluded',
          '[{"exclusion": "converted", "label": "Customers who paid after their checkout", "count": 3},
            {"exclusion": "alreadyContacted", "label": "Checkouts that already got a recovery e-mail", "count": 0},
            {"exclusion": "suppressed", "label": "Unsubscribed, bounced or suppressed addresses", "count": 1},
            {"exclusion": "frequencyCap", "label": "Customers e-mailed by any workflow in the last 16 hours", "count": 0}]'::jsonb,
          'preview excluded: each exclusion with its label and count (converted 3, suppressed 1)');
SELECT is((:'pv'::jsonb) -> 'warnings', '[]'::jsonb, 'no warning for 6 recipients');
SELECT is((:'pv'::jsonb) -> 'params', '{}'::jsonb, 'recover_abandoned params: none');
SELECT results_eq(format($$SELECT actor, action_id, params, recipient_count, blocked FROM runhub.previews WHERE id = %L$$, (:'pv'::jsonb) ->> 'previewId'),
                  format($$VALUES (%L::uuid, 'recover_abandoned', '{}'::jsonb, 6, NULL::jsonb)$$, :admin),
                  'the preview is recorded: actor, action, params, count, not blocked');
SELECT pg_temp.set_policy('recover_abandoned', '{"warnAtRecipients": 6}') \g /dev/null
SELECT is(runhub.preview(:'rec', :admin, 'recover_abandoned') -> 'warnings', '["This will email 6 people"]'::jsonb,
          'a warning from warnAtRecipients recipients on');
SELECT pg_temp.set_policy('recover_abandoned', '{"warnAtRecipients": 500, "maxRecipients": 5}') \g /dev/null
SELECT runhub.preview(:'rec', :admin, 'recover_abandoned') AS pv_blocked \gset
SELECT is((:'pv_blocked'::jsonb) -> 'blocked',
          '{"reason": "workflows.policy.tooManyRecipients", "reasonParams": {"count": 6, "max": 5}}'::jsonb,
          'a preview over maxRecipients is blocked: workflows.policy.tooManyRecipients');
SELECT is((SELECT blocked ->> 'reason' FROM runhub.previews WHERE id = ((:'pv_blocked'::jsonb) ->> 'previewId')::uuid),
          'workflows.policy.tooManyRecipients', 'the blocked preview is recorded with its refusal');
SELECT pg_temp.set_policy('recover_abandoned', '{"maxRecipients": 1000}') \g /dev/null
SELECT is(pg_temp.refusal(pg_temp.preview_sql(:'rec', :member, 'recover_abandoned')), 'PT403 auth.roleRequired',
          'preview by a member below the action''s role: PT403 auth.roleRequired');
SELECT is(pg_temp.refusal(pg_temp.preview_sql(:'rec', :stranger, 'recover_abandoned')), 'PT404 projects.notFound',
          'preview by a non-member: PT404 projects.notFound');
SELECT is(pg_temp.refusal(pg_temp.preview_sql(:'rec', :admin, 'recover_everything')), 'PT404 workflows.actionNotFound',
          'preview of an unknown action: PT404 workflows.actionNotFound');
SELECT is(pg_temp.refusal(pg_temp.preview_sql(:'rec', :admin, 'recover_abandoned', '{"limit": 5}')), 'PT400 workflows.unknownParam limit',
          'preview with a param the action does not take: PT400 workflows.unknownParam');

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
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'rec', :admin, 'recover_abandoned', 'rec-2')), 'PT409 workflows.policy.cooldownActive',
          'another key within the cooldown: PT409 workflows.policy.cooldownActive');
SELECT is(pg_temp.detail(pg_temp.create_sql(:'rec', :admin, 'recover_abandoned', 'rec-2')), '{"minutes": 60, "cooldownMinutes": 60}'::jsonb,
          'cooldownActive says how long to wait');
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
          '{"available": false, "reason": "workflows.policy.cooldownActive", "reasonParams": {"minutes": 60, "cooldownMinutes": 60}}'::jsonb,
          'list_actions after a run: workflows.policy.cooldownActive');
SELECT is(pg_temp.action(:'rec', :owner, 'recover_abandoned') -> 'lastRun',
          jsonb_build_object('id', :'rec1', 'status', 'queued', 'requestedAt', runhub._iso(now())),
          'list_actions lastRun: the queued run');
SELECT is(runhub.preview(:'rec', :admin, 'recover_abandoned') -> 'blocked',
          '{"reason": "workflows.policy.cooldownActive", "reasonParams": {"minutes": 60, "cooldownMinutes": 60}}'::jsonb,
          'a preview during the cooldown is blocked by it');

-- ---------------------------------------------------------------------------------------------
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
          '{"reason": "workflows.policy.noRecipients", "reasonParams": {"count": 0, "min": 1}}'::jsonb,
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
SELECT is((:'pv_cap0'::jsonb) -> 'exclusions' ->> 3, 'Customers e-mailed by any workflow in the last 0 hours',
          'the frequency-cap label shows the project''s hours');
UPDATE runhub.workflow_run_recipients SET created_at = now() - interval '3 hours' WHERE run_id = :'rec1';
SELECT runhub.update_project_settings(:'rec', :admin, '{"frequencyCapHours": 2}') \g /dev/null
SELECT is(pg_temp.who(:'rec', 'recover_abandoned') ->> 'ann@example.com', 'included', 'mailed 3 hours ago, cap 2 hours: included');
SELECT runhub.update_project_settings(:'rec', :admin, '{"frequencyCapHours": 4}') \g /dev/null
SELECT is(pg_temp.who(:'rec', 'recover_abandoned') ->> 'ann@example.com', 'frequencyCap', 'mailed 3 hours ago, cap 4 hours: frequencyCap');
SELECT is(runhub.preview(:'rec', :admin, 'recover_abandoned') -> 'excluded' -> 3,
          '{"exclusion": "frequencyCap", "label": "Customers e-mailed by any workflow in the last 4 hours", "count": 1}'::jsonb,
          'the preview shows the 4-hour cap and its count');

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
-- send_promo (project locale es): segments, params, preview identity, the execution-time count
-- check, templates promo and update, suppress.
SELECT runhub.create_project('Promo shop', :owner, 'UTC', 'USD', 'es') AS promo \gset
SELECT runhub.add_member(:'promo', :owner, :admin, 'admin'), runhub.add_member(:'promo', :owner, :member, 'member') \g /dev/null
SELECT runhub.update_project_settings(:'promo', :owner, '{"integrations": ["email"]}') \g /dev/null
SELECT pg_temp.ev(:'promo', 'lead_created', 'pat-1', '1 day', '{"email": "pat@example.com", "name": "Pat", "locale": "de"}') \g /dev/null
SELECT pg_temp.ev(:'promo', 'page_viewed', 'quinn-1', '3 days', '{"email": "quinn@example.com", "locale": "pt"}') \g /dev/null
SELECT pg_temp.ev(:'promo', 'page_viewed', 'ruth-1', '10 days', '{"email": "ruth@example.com"}') \g /dev/null
SELECT pg_temp.ev(:'promo', 'page_viewed', 'sara-1', '40 days', '{"email": "sara@example.com"}') \g /dev/null
SELECT pg_temp.own_send(:'promo', 'promo_email_sent', '<tom-1@runhub>', '1 day', 'tom@example.com') \g /dev/null
SELECT pg_temp.ev(:'promo', 'page_viewed', 'uri-1', '2 days', '{"email": "uri@example.com"}') \g /dev/null
SELECT runhub.suppress(:'promo', :owner, 'uri@example.com') \g /dev/null
SELECT is_empty(format($$SELECT 1 FROM runhub.customers WHERE project_id = %L AND email = 'tom@example.com'$$, :'promo'),
                'our own sends do not make a customer (tom only has promo_email_sent)');
\set pp '{"subject": "Spring sale", "content": "Up to 30% off"}'
SELECT runhub.preview(:'promo', :owner, 'send_promo', :'pp') AS ppv \gset
SELECT is((:'ppv'::jsonb) -> 'params',
          '{"subject": "Spring sale", "content": "Up to 30% off", "segmentation": "recent_30d", "isUpdate": false}'::jsonb,
          'send_promo params come back with their defaults (recent_30d, isUpdate false)');
SELECT is(jsonb_build_array((:'ppv'::jsonb) -> 'count', (:'ppv'::jsonb) -> 'sample', (:'ppv'::jsonb) -> 'criteria'),
          '[3, [{"email": "pat@example.com", "name": "Pat"}, {"email": "quinn@example.com"}, {"email": "ruth@example.com"}],
            "Customers and leads seen in the last 30 days"]'::jsonb,
          'recent_30d: pat (a lead), quinn, ruth; not sara (40 days), tom (our send) or uri (suppressed)');
SELECT is(jsonb_build_array((:'ppv'::jsonb) -> 'exclusions', (:'ppv'::jsonb) -> 'excluded'),
          '[["Unsubscribed, bounced or suppressed addresses", "Customers e-mailed by any workflow in the last 16 hours"],
            [{"exclusion": "suppressed", "label": "Unsubscribed, bounced or suppressed addresses", "count": 1},
             {"exclusion": "frequencyCap", "label": "Customers e-mailed by any workflow in the last 16 hours", "count": 0}]]'::jsonb,
          'send_promo lists only its own exclusions: suppressed (1) and frequencyCap');
SELECT runhub.preview(:'promo', :owner, 'send_promo', (:'pp'::jsonb) || '{"segmentation": "recent_7d"}') AS ppv7 \gset
SELECT is(jsonb_build_array((:'ppv7'::jsonb) -> 'count', (:'ppv7'::jsonb) -> 'criteria'), '[2, "Customers and leads seen in the last 7 days"]'::jsonb,
          'recent_7d: pat and quinn');
SELECT is((runhub.preview(:'promo', :owner, 'send_promo', (:'pp'::jsonb) || '{"segmentation": "all"}') - ARRAY['previewId', 'params', 'exclusions', 'excluded', 'warnings']),
          '{"count": 4, "criteria": "Every customer and lead this shop has seen",
            "sample": [{"email": "pat@example.com", "name": "Pat"}, {"email": "quinn@example.com"}, {"email": "ruth@example.com"}, {"email": "sara@example.com"}]}'::jsonb,
          'all: sara too');
SELECT is(pg_temp.refusal(pg_temp.preview_sql(:'promo', :admin, 'send_promo', :'pp')), 'PT403 workflows.policy.ownerRequired',
          'an admin previewing send_promo: PT403 workflows.policy.ownerRequired');
SELECT is(pg_temp.detail(pg_temp.preview_sql(:'promo', :member, 'send_promo', :'pp')), '{"required": "owner", "role": "member"}'::jsonb,
          'a member gets ownerRequired too, naming the roles');
SELECT is(ARRAY(SELECT v.params || ' -> ' || pg_temp.refusal(pg_temp.preview_sql(:'promo', :owner, 'send_promo', v.params::jsonb))
                  FROM (VALUES ('{}', 'PT400 workflows.invalidParams subject'),
                               ('{"subject": "", "content": "x"}', 'PT400 workflows.invalidParams subject'),
                               ('{"subject": "   ", "content": "x"}', 'PT400 workflows.invalidParams subject'),
                               ('{"subject": 5, "content": "x"}', 'PT400 workflows.invalidParams subject'),
                               (jsonb_build_object('subject', repeat('s', 201), 'content', 'x')::text, 'PT400 workflows.invalidParams subject'),
                               ('{"subject": "s"}', 'PT400 workflows.invalidParams content'),
                               (jsonb_build_object('subject', 's', 'content', repeat('c', 20001))::text, 'PT400 workflows.invalidParams content'),
                               ('{"subject": "s", "content": "c", "segmentation": "yearly"}', 'PT400 workflows.invalidParams segmentation'),
                               ('{"subject": "s", "content": "c", "segmentation": null}', 'PT400 workflows.invalidParams segmentation'),
                               ('{"subject": "s", "content": "c", "isUpdate": "yes"}', 'PT400 workflows.invalidParams isUpdate'),
                               ('{"subject": "s", "content": "c", "discount": 10}', 'PT400 workflows.unknownParam discount'),
                               ('"subject"', 'PT400 workflows.invalidParams params')) v(params, expected)
                 WHERE pg_temp.refusal(pg_temp.preview_sql(:'promo', :owner, 'send_promo', v.params::jsonb)) IS DISTINCT FROM v.expected),
          '{}'::text[], 'bad send_promo params: PT400 with the field (subject 1-200, content 1-20000, segmentation, isUpdate, unknown)');
SELECT lives_ok(pg_temp.preview_sql(:'promo', :owner, 'send_promo', jsonb_build_object('subject', repeat('s', 200), 'content', repeat('c', 20000))),
                'subject of 200 and content of 20000 characters are accepted');

SELECT pg_temp.reset_rate(:'promo') \g /dev/null
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'promo', :admin, 'send_promo', 'promo-1', :'pp')), 'PT403 workflows.policy.ownerRequired',
          'create_run send_promo by an admin: PT403 workflows.policy.ownerRequired');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'promo', :owner, 'send_promo', 'promo-1', '{"subject": "Spring sale!", "content": "Up to 30% off"}')),
          'PT422 workflows.policy.previewRequired', 'a preview with other params does not count: previewRequired');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'promo', :owner, 'send_promo', 'promo-1', :'pp', ((:'ppv7'::jsonb) ->> 'previewId')::uuid)),
          'PT422 workflows.policy.previewRequired', 'a preview_id of a preview with other params (recent_7d): previewRequired');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'promo', :owner, 'send_promo', 'promo-1', '{"subject": "Spring sale"}')),
          'PT400 workflows.invalidParams content', 'create_run validates params too');
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
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'promo', :owner, 'send_promo', 'promo-3', :'pp')), 'PT409 workflows.policy.cooldownActive',
          'while promo-2 is queued, send_promo is in its cooldown');
SELECT is(runhub.process_runs(), 1, 'process_runs takes promo-2');
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

-- ---------------------------------------------------------------------------------------------
-- onboard_users (project locale fr): any member; the actor must still be a member at execution.
SELECT runhub.create_project('Onboard shop', :owner, 'UTC', 'EUR', 'fr') AS onb \gset
SELECT runhub.add_member(:'onb', :owner, :member, 'member') \g /dev/null
SELECT runhub.update_project_settings(:'onb', :owner, '{"integrations": ["email"]}') \g /dev/null
SELECT pg_temp.ev(:'onb', 'user_signed_up', 'sam-1', '2 days', '{"email": "sam@example.com", "name": "Sam", "locale": "zz"}') \g /dev/null
SELECT pg_temp.ev(:'onb', 'user_signed_up', 'tia-1', '2 days', '{"email": "tia@example.com"}') \g /dev/null
SELECT pg_temp.ev(:'onb', 'page_viewed', 'tia-2', '1 day', '{"email": "tia@example.com"}') \g /dev/null
SELECT pg_temp.ev(:'onb', 'user_signed_up', 'uma-1', '10 days', '{"email": "uma@example.com"}') \g /dev/null
SELECT pg_temp.ev(:'onb', 'checkout_started', 'vic-1', '3 days', '{"email": "vic@example.com", "locale": "ar"}') \g /dev/null
SELECT pg_temp.ev(:'onb', 'user_signed_up', 'vic-2', '1 day', '{"email": "vic@example.com"}') \g /dev/null
SELECT pg_temp.ev(:'onb', 'user_signed_up', 'wes-1', '1 day', '{"email": "wes@example.com"}') \g /dev/null
SELECT pg_temp.own_send(:'onb', 'onboarding_email_sent', '<wes-2@runhub>', '12 hours', 'wes@example.com') \g /dev/null
SELECT pg_temp.ev(:'onb', 'user_signed_up', 'xan-1', '1 day', '{"email": "xan@example.com"}') \g /dev/null
SELECT runhub.suppress(:'onb', :owner, 'xan@example.com') \g /dev/null
SELECT is(pg_temp.who(:'onb', 'onboard_users'),
          '{"sam@example.com": "included", "vic@example.com": "included", "wes@example.com": "included", "xan@example.com": "suppressed"}'::jsonb,
          'sign-ups of the last 7 days with nothing since (tia did something, uma is too old; vic''s checkout came before, wes''s event is our own send)');
SELECT runhub.preview(:'onb', :member, 'onboard_users') AS opv \gset
SELECT is((:'opv'::jsonb) - ARRAY['previewId', 'exclusions', 'warnings'],
          '{"count": 3, "params": {}, "sample": [{"email": "sam@example.com", "name": "Sam"}, {"email": "vic@example.com"}, {"email": "wes@example.com"}],
            "criteria": "People who signed up in the last 7 days and have done nothing since",
            "excluded": [{"exclusion": "alreadyOnboarded", "label": "Users who already got a welcome e-mail", "count": 0},
                         {"exclusion": "suppressed", "label": "Unsubscribed, bounced or suppressed addresses", "count": 1},
                         {"exclusion": "frequencyCap", "label": "Customers e-mailed by any workflow in the last 16 hours", "count": 0}]}'::jsonb,
          'a member may preview onboard_users: 3 recipients, xan suppressed');
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
            {"reason": "workflows.policy.noRecipients", "reasonParams": {"count": 0, "min": 1}}]'::jsonb,
          'once welcomed, they are alreadyOnboarded (before frequencyCap): blocked, no recipients');
SELECT is(pg_temp.refusal(pg_temp.create_sql(:'onb', :member, 'onboard_users', 'onb-3')), 'PT422 workflows.policy.noRecipients',
          'create_run on a preview of zero: PT422 workflows.policy.noRecipients');

-- ---------------------------------------------------------------------------------------------
-- cancel_run on a queued run; the execution lease (claim_runs, heartbeat_run, execute_run); an
-- execution that raises.
SELECT runhub.create_project('Ops shop', :owner, 'UTC', 'EUR') AS ops \gset
SELECT runhub.add_member(:'ops', :owner, :member, 'member') \g /dev/null
SELECT runhub.update_project_settings(:'ops', :owner, '{"integrations": ["email"]}') \g /dev/null
SELECT pg_temp.ev(:'ops', 'user_signed_up', 'ops1', '1 day', '{"email": "ops1@example.com"}') \g /dev/null
SELECT pg_temp.ev(:'ops', 'user_signed_up', 'ops2', '1 day', '{"email": "ops2@example.com"}') \g /dev/null
SELECT pg_temp.reset_rate(:'ops') \g /dev/null
SELECT runhub.preview(:'ops', :member, 'onboard_users') -> 'count' AS ops_count \gset
SELECT runhub.create_run(:'ops', :member, 'onboard_users', 'ops-1') ->> 'runId' AS ops1 \gset
SELECT runhub.cancel_run(:'ops', :member, :'ops1') AS ops1_cancelled \gset
SELECT is(jsonb_build_array((:'ops1_cancelled'::jsonb) -> 'status', (:'ops1_cancelled'::jsonb) -> 'result', (:'ops1_cancelled'::jsonb) -> 'completedAt'),
          jsonb_build_array('cancelled', '{"totalRecipients": 0, "successful": 0, "failed": 0, "pending": 0, "cancelled": 0, "errorSummary": "Cancelled by member"}'::jsonb,
                            runhub._iso(now())),
          'cancel_run on a queued run (by a member, the action''s role): cancelled outright');
SELECT is(runhub.process_runs(), 0, 'a cancelled run is not executed');
SELECT is(pg_temp.refusal(pg_temp.cancel_sql(:'ops', :member, :'ops1')), 'PT409 workflows.runNotCancellable', 'cancelling it again: PT409');

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
SELECT is(pg_temp.refusal($$SELECT runhub.claim_runs('w', 1, 1)$$), 'PT400 common.invalidInput max', 'claim_runs with a 1-second lease: PT400');

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

-- Stale runs: running for over 30 minutes.
UPDATE runhub.workflow_runs SET started_at = now() - interval '31 minutes' WHERE id = :'ops2';
SELECT is(runhub.get_run(:'ops', :owner, :'ops2') -> 'stale', 'true'::jsonb, 'a run running for 31 minutes is stale');
SELECT results_eq($$SELECT id, action_id, running_for FROM runhub.stale_runs$$,
                  format($$VALUES (%L::uuid, 'onboard_users', interval '31 minutes')$$, :'ops2'),
                  'runhub.stale_runs lists it, and only it');
UPDATE runhub.workflow_runs SET started_at = now() - interval '29 minutes' WHERE id = :'ops2';
SELECT is(jsonb_build_array(runhub.get_run(:'ops', :owner, :'ops2') -> 'stale', (SELECT count(*) FROM runhub.stale_runs)), '[false, 0]'::jsonb,
          'at 29 minutes it is not stale');

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

-- ---------------------------------------------------------------------------------------------
-- Recovery links keep the cart id intact: a shop decodes the query string, so characters that
-- decoding changes ('+' is a space, a raw space is not allowed in a URL) must be percent-encoded,
-- like '&', '#' and '%' are. shopUrl without a trailing slash gets one before checkout.
SELECT runhub.create_project('Link shop', :owner, 'UTC', 'EUR') AS lnk \gset
SELECT runhub.update_project_settings(:'lnk', :owner, '{"integrations": ["payments"], "shopUrl": "https://shop.example/base"}') \g /dev/null
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

-- A deleted project takes its create_run counter (a sequence) with it.
SELECT trigger_counter::text AS other_counter FROM runhub.projects WHERE id = :'other' \gset
SELECT isnt(to_regclass(:'other_counter'), NULL, 'a project has its own counter sequence');
DELETE FROM runhub.projects WHERE id = :'other';
SELECT is(to_regclass(:'other_counter'), NULL, 'deleting the project drops its counter');

-- ---------------------------------------------------------------------------------------------
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

-- purge-previews (pg_cron, hourly): previews older than a day go, unless a run refers to one.
UPDATE runhub.previews SET created_at = now() - interval '2 days' WHERE project_id = :'rl';
SELECT lives_ok((SELECT command FROM runhub.cron_jobs() WHERE name = 'purge-previews'), 'the purge-previews job runs');
SELECT set_eq(format($$SELECT id FROM runhub.previews WHERE project_id = %L$$, :'rl'), ARRAY[:'rl_preview'::uuid],
              'old previews are purged, except one a run refers to');
SELECT ok((SELECT count(*) FROM runhub.previews WHERE project_id = :'rec') > 0, 'recent previews are kept');

-- Deleting a run takes its recipients and messages; deleting a project takes all of its workflow rows.
CREATE FUNCTION pg_temp.rows_of(p_project uuid)
RETURNS jsonb LANGUAGE sql
AS $$ SELECT jsonb_build_object(
        'customers', (SELECT count(*) FROM runhub.customers WHERE project_id = p_project),
        'suppressions', (SELECT count(*) FROM runhub.suppressions WHERE project_id = p_project),
        'previews', (SELECT count(*) FROM runhub.previews WHERE project_id = p_project),
        'runs', (SELECT count(*) FROM runhub.workflow_runs WHERE project_id = p_project),
        'recipients', (SELECT count(*) FROM runhub.workflow_run_recipients WHERE project_id = p_project),
        'outbox', (SELECT count(*) FROM runhub.outbox WHERE project_id = p_project)) $$;
SELECT pg_temp.rows_of(:'promo') AS promo_rows \gset
DELETE FROM runhub.workflow_runs WHERE id = :'promo2';
SELECT is_empty(format($$SELECT 1 FROM runhub.workflow_run_recipients WHERE run_id = %1$L UNION ALL SELECT 1 FROM runhub.outbox WHERE run_id = %1$L$$, :'promo2'),
                'deleting a run deletes its recipients and messages');
SELECT is(pg_temp.rows_of(:'promo'), (:'promo_rows'::jsonb) || jsonb_build_object(
              'runs', ((:'promo_rows'::jsonb) ->> 'runs')::int - 1,
              'recipients', ((:'promo_rows'::jsonb) ->> 'recipients')::int - 4, 'outbox', ((:'promo_rows'::jsonb) ->> 'outbox')::int - 4),
          '... and nothing else of the project');
SELECT ok((SELECT bool_and(n::int > 0) FROM jsonb_each_text(pg_temp.rows_of(:'rec')) AS t(k, n)), 'the recover project has rows of every kind');
DELETE FROM runhub.projects WHERE id = :'rec';
SELECT is(pg_temp.rows_of(:'rec'), '{"customers": 0, "suppressions": 0, "previews": 0, "runs": 0, "recipients": 0, "outbox": 0}'::jsonb,
          'deleting a project deletes its customers, suppressions, previews, runs, recipients and messages');

SELECT * FROM finish();
ROLLBACK;
