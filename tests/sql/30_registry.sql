-- Workflows, the registry (docs/sql-contract.md, "Workflows"): the three actions as data, the
-- lifecycle CHECK constraints of workflow_runs, outbox and suppressions, update_project_settings
-- (validated key by key) and list_actions (the first refusal among role, prerequisites, cooldown;
-- list_actions after a run: 32_create_run.sql, 33_execution_leases.sql).
-- Shared helpers and fixtures (pg_temp.recover_checkouts, settings_sql, bad_values, ...): helpers.psql.
BEGIN;
\ir helpers.psql
SELECT * FROM no_plan();

\set owner2   '''ffffffff-0000-4000-8000-000000000004'''

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
                           ('Customers e-mailed by any workflow in the last 16 h')$$,
                  'exclusion labels, the frequency cap with its hours');
SELECT results_eq($$SELECT runhub.exclusion_label(x, 16, 'de') FROM unnest(ARRAY['converted', 'alreadyContacted', 'alreadyOnboarded', 'suppressed', 'frequencyCap']) x$$,
                  $$VALUES ('Kunden, die nach ihrem Checkout bezahlt haben'), ('Checkouts, die schon eine Erinnerungs-E-Mail bekommen haben'),
                           ('Personen, die schon eine Willkommens-E-Mail bekommen haben'), ('Abgemeldete, unzustellbare oder gesperrte Adressen'),
                           ('Kunden, die in den letzten 16 Std. schon eine Workflow-E-Mail bekommen haben')$$,
                  'exclusion labels in a locale (de), the frequency cap with its hours');
SELECT results_eq($$SELECT runhub.criteria_text(a.id, a.policy, p) FROM runhub.actions a,
                           (VALUES (1, '{"segmentation": "recent_30d"}'::jsonb), (2, '{"segmentation": "recent_7d"}'), (3, '{"segmentation": "all"}')) v(n, p)
                     WHERE a.id <> 'send_promo' AND n = 1 OR a.id = 'send_promo'
                     ORDER BY a.position, n$$,
                  $$VALUES ('Customers whose latest checkout in the last 24 h has no payment yet'),
                           ('Customers and leads seen in the last 30 days'), ('Customers and leads seen in the last 7 days'),
                           ('Every customer and lead this shop has seen'),
                           ('People who signed up in the last 7 days and have done nothing since')$$,
                  'criteria_text is built from the registry''s windows and the params');
SELECT results_eq($$SELECT runhub.criteria_text(a.id, a.policy, '{"segmentation": "recent_30d"}', 'fr') FROM runhub.actions a ORDER BY a.position$$,
                  $$VALUES ('Clients dont le dernier passage en caisse des dernières 24 h n’est pas encore payé'),
                           ('Clients et prospects vus ces 30 derniers jours'),
                           ('Personnes inscrites ces 7 derniers jours qui n’ont rien fait depuis')$$,
                  'criteria_text in a locale (fr), from the same windows and params');

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
SELECT is(pg_temp.bad_values(:'rec', :admin, 'shopUrl', ARRAY['"ftp://shop.example"', '"https://shop.example/?q=1"', '"https://shop.example/#top"',
                                    '"shop.example"', '""', '42', '"https://shop example.com"', '["https://shop.example"]',
                                    to_jsonb('https://shop.example/' || repeat('a', 480))]::jsonb[]),
          '{}'::text[], 'bad shopUrl values (scheme, query, fragment, no scheme, empty, number, space, list, 501 chars): PT400 shopUrl');
SELECT is(pg_temp.bad_values(:'rec', :admin, 'frequencyCapHours', ARRAY['169', '-1', '1.5', '"16"', 'true', '1000', '[]']::jsonb[]),
          '{}'::text[], 'bad frequencyCapHours values (169, -1, 1.5, a string, a boolean, 1000, a list): PT400 frequencyCapHours');
SELECT is(pg_temp.bad_values(:'rec', :admin, 'integrations', ARRAY['"payments"', '["sms"]', '[1]', '{"payments": true}', '[null]', '["payments", "Email"]']::jsonb[]),
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
                                'lastOutcome', 'lastRun', 'outcome', 'policy', 'reason', 'reasonParams', 'reasonText', 'requiredRole',
                                'requires', 'risk', 'supportsPreview', 'title', 'type', 'ui']$$, :'rec', :owner),
                'every ActionDefinition has exactly the documented keys');
SELECT is(pg_temp.action(:'rec', :owner, 'recover_abandoned') - ARRAY['available', 'reason', 'reasonParams', 'reasonText'],
          (SELECT jsonb_build_object('id', id, 'label', label, 'type', type, 'risk', risk, 'requiredRole', required_role,
                                     'confirmRequired', confirm_required, 'supportsPreview', supports_preview, 'ui', ui,
                                     'outcome', outcome, 'requires', requires, 'policy', policy, 'exclusions', to_jsonb(exclusions),
                                     'lastRun', NULL, 'lastOutcome', NULL,
                                     'title', '{"key": "digest.actionLabel.recover_abandoned", "params": {},
                                                "text": "Abgebrochene Käufe zurückgewinnen"}'::jsonb)
             FROM runhub.actions WHERE id = 'recover_abandoned'),
          'an ActionDefinition is its registry row; lastRun and lastOutcome null before any run');
SELECT is((SELECT jsonb_object_agg(a ->> 'id', a -> 'title') FROM jsonb_array_elements(runhub.list_actions(:'rec', :owner)) a),
          '{"recover_abandoned": {"key": "digest.actionLabel.recover_abandoned", "params": {}, "text": "Abgebrochene Käufe zurückgewinnen"},
            "send_promo":        {"key": "digest.actionLabel.send_promo", "params": {}, "text": "Aktion oder Neuigkeit versenden"},
            "onboard_users":     {"key": "digest.actionLabel.onboard_users", "params": {}, "text": "Neue Anmeldungen begrüßen"}}'::jsonb,
          'each action''s title: its digest.actionLabel key, rendered in the project''s locale (de)');
SELECT is(pg_temp.availability(:'rec', :owner),
          '{"recover_abandoned": {"available": false, "reason": "workflows.requires.integration", "reasonParams": {"integration": "payments"}},
            "send_promo":        {"available": false, "reason": "workflows.requires.integration", "reasonParams": {"integration": "email"}},
            "onboard_users":     {"available": false, "reason": "workflows.requires.integration", "reasonParams": {"integration": "email"}}}'::jsonb,
          'no integrations: every action unavailable with workflows.requires.integration');
SELECT is((SELECT jsonb_object_agg(a ->> 'id', a -> 'reasonText') FROM jsonb_array_elements(runhub.list_actions(:'rec', :owner)) a),
          '{"recover_abandoned": "Zuerst die Integration payments verbinden",
            "send_promo":        "Zuerst die Integration email verbinden",
            "onboard_users":     "Zuerst die Integration email verbinden"}'::jsonb,
          'reasonText: each refusal rendered in the project''s locale (de) with its params');
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
-- The recover_abandoned fixture (pg_temp.recover_checkouts: each person is there for one rule;
-- the recipient builder on it: 31_preview.sql). This is the shop pg_temp.recover_shop builds.
SELECT pg_temp.recover_checkouts(:'rec') \g /dev/null
SELECT lives_ok(format($$SELECT pg_temp.recover_suppressions(%L, %L, %L)$$, :'rec', :owner, :admin),
                'fixture: gina and hank are suppressed');
SELECT is(pg_temp.availability(:'rec', :owner),
          '{"recover_abandoned": {"available": true, "reason": null, "reasonParams": null},
            "send_promo":        {"available": true, "reason": null, "reasonParams": null},
            "onboard_users":     {"available": false, "reason": "workflows.requires.events", "reasonParams": {"eventType": "user_signed_up", "minCount": 1}}}'::jsonb,
          'with checkouts and recent customers, recover_abandoned and send_promo are available to the owner');
SELECT is((SELECT jsonb_object_agg(a ->> 'id', a -> 'reasonText') FROM jsonb_array_elements(runhub.list_actions(:'rec', :owner)) a),
          '{"recover_abandoned": null, "send_promo": null,
            "onboard_users": "Dafür braucht es zuerst mindestens 1 Ereignis(se) vom Typ user_signed_up"}'::jsonb,
          'reasonText is null for an available action, the rendered refusal otherwise');
SELECT is(pg_temp.availability(:'rec', :member) -> 'send_promo',
          '{"available": false, "reason": "workflows.policy.ownerRequired", "reasonParams": {"required": "owner", "role": "member"}}'::jsonb,
          'a member still sees send_promo unavailable: workflows.policy.ownerRequired');

-- ---------------------------------------------------------------------------------------------
-- The settings' documented edges, both sides (the other shop, owned by owner2): holdoutPercent
-- 0-50, senderName 1-100 characters on one line, replyTo an address, emailOnlyAttribution a
-- boolean; each refusal names its key, and none writes.
SELECT is(pg_temp.bad_values(:'other', :owner2, 'holdoutPercent', ARRAY['51', '-1', '10.5', '"10"', 'true', '[]', '100']::jsonb[]),
          '{}'::text[], 'bad holdoutPercent values (51, -1, 10.5, a string, a boolean, a list, 100): PT400 holdoutPercent');
SELECT is(pg_temp.bad_values(:'other', :owner2, 'senderName',
                             ARRAY['""', '"   "', to_jsonb(repeat('s', 101)), to_jsonb(E'Shop\u0001'::text), to_jsonb(E'Shop\u009fx'::text), '42', '["Shop"]']::jsonb[]),
          '{}'::text[], 'bad senderName values (empty, blank, 101 characters, a C0 and a C1 control character, a number, a list): PT400 senderName');
SELECT is(pg_temp.bad_values(:'other', :owner2, 'replyTo', ARRAY['"nope"', '""', '42', to_jsonb(repeat('a', 243) || '@example.com')]::jsonb[]),
          '{}'::text[], 'bad replyTo values (no address, empty, a number, 255 characters): PT400 replyTo');
SELECT is(pg_temp.bad_values(:'other', :owner2, 'emailOnlyAttribution', ARRAY['"true"', '1', '[]']::jsonb[]),
          '{}'::text[], 'bad emailOnlyAttribution values (a string, a number, a list): PT400 emailOnlyAttribution');
SELECT is((SELECT settings FROM runhub.projects WHERE id = :'other'), '{}'::jsonb, 'the refused settings wrote nothing');
CREATE FUNCTION pg_temp.set_only(p_project uuid, p_actor uuid, p_settings jsonb)
RETURNS jsonb LANGUAGE sql
AS $$ SELECT runhub.update_project_settings(p_project, p_actor, p_settings)
             - ARRAY['timezone', 'dailyDigestEnabled', 'dailyDigestHour', 'dailyDigestRecipient', 'dailyDigestNextAt'] $$;
SELECT is(pg_temp.set_only(:'other', :owner2, '{"holdoutPercent": 0}'), '{"holdoutPercent": 0}'::jsonb, 'holdoutPercent 0 is accepted');
SELECT is(pg_temp.set_only(:'other', :owner2, '{"holdoutPercent": 50}'), '{"holdoutPercent": 50}'::jsonb, 'holdoutPercent 50 is accepted (maxHoldoutPercent)');
SELECT is(pg_temp.set_only(:'other', :owner2, jsonb_build_object('holdoutPercent', NULL, 'senderName', repeat('s', 100))),
          jsonb_build_object('senderName', repeat('s', 100)), 'a 100-character senderName is accepted; null removes holdoutPercent');
SELECT is(pg_temp.set_only(:'other', :owner2, jsonb_build_object('senderName', E'  Corner\n\t Café\u00a0 '::text)),
          '{"senderName": "Corner Café"}'::jsonb, 'a senderName is stored on one line: trimmed, white space runs one space');
SELECT is(pg_temp.set_only(:'other', :owner2, '{"senderName": null, "replyTo": " Owner@Example.COM ", "emailOnlyAttribution": false}'),
          '{"replyTo": "owner@example.com", "emailOnlyAttribution": false}'::jsonb, 'replyTo is stored normalized; emailOnlyAttribution false');

SELECT * FROM finish();
ROLLBACK;
