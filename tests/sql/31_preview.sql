-- Workflows, preview (docs/sql-contract.md, "Workflows"): the recipient builder (who is in, who is
-- left out and why) and preview for the three actions: exact count, sample, criteria, exclusions
-- and their counts, warnings, a blocked preview, the preview's record, its refusals, send_promo's
-- segments and params. Previews after a run (alreadyContacted, the frequency cap, cooldown):
-- 32_create_run.sql and 33_execution_leases.sql.
-- Fixtures pg_temp.recover_shop, promo_shop, onboard_shop: helpers.psql.
BEGIN;
\ir helpers.psql
SELECT * FROM no_plan();

CREATE FUNCTION pg_temp.preview_sql(p_project uuid, p_actor uuid, p_action text, p_params jsonb DEFAULT '{}')
RETURNS text LANGUAGE sql
AS $$ SELECT format('SELECT runhub.preview(%L, %L, %L, %L)', p_project, p_actor, p_action, p_params) $$;

-- ---------------------------------------------------------------------------------------------
-- recover_abandoned (the recover shop, locale de): the recipient builder, then preview.
SELECT pg_temp.recover_shop(:owner, :admin, :member) AS rec \gset
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
SELECT is((:'pv'::jsonb) -> 'criteria',
          '{"key": "owner.criteria.recoverAbandoned", "params": {"hours": 24},
            "text": "Kundinnen und Kunden, deren letzter Checkout der vergangenen 24 Std. noch unbezahlt ist"}'::jsonb,
          'preview criteria');
SELECT is((:'pv'::jsonb) -> 'exclusions',
          '[{"key": "owner.exclusion.converted", "params": {}, "text": "Kunden, die nach ihrem Checkout bezahlt haben"},
            {"key": "owner.exclusion.alreadyContacted", "params": {}, "text": "Checkouts, die schon eine Erinnerungs-E-Mail bekommen haben"},
            {"key": "owner.exclusion.suppressed", "params": {}, "text": "Abgemeldete, unzustellbare oder gesperrte Adressen"},
            {"key": "owner.exclusion.frequencyCap", "params": {"hours": 16},
             "text": "Kunden, die in den letzten 16 Std. schon eine Workflow-E-Mail bekommen haben"}]'::jsonb,
          'preview exclusions: labels in registry order, with the default 16-hour cap');
SELECT is((:'pv'::jsonb) -> 'excluded',
          '[{"exclusion": "converted", "count": 3,
             "label": {"key": "owner.exclusion.converted", "params": {}, "text": "Kunden, die nach ihrem Checkout bezahlt haben"}},
            {"exclusion": "alreadyContacted", "count": 0,
             "label": {"key": "owner.exclusion.alreadyContacted", "params": {}, "text": "Checkouts, die schon eine Erinnerungs-E-Mail bekommen haben"}},
            {"exclusion": "suppressed", "count": 1,
             "label": {"key": "owner.exclusion.suppressed", "params": {}, "text": "Abgemeldete, unzustellbare oder gesperrte Adressen"}},
            {"exclusion": "frequencyCap", "count": 0,
             "label": {"key": "owner.exclusion.frequencyCap", "params": {"hours": 16},
                       "text": "Kunden, die in den letzten 16 Std. schon eine Workflow-E-Mail bekommen haben"}}]'::jsonb,
          'preview excluded: each exclusion with its label and count (converted 3, suppressed 1)');
SELECT is((:'pv'::jsonb) -> 'warnings', '[]'::jsonb, 'no warning for 6 recipients');
SELECT is((:'pv'::jsonb) -> 'params', '{}'::jsonb, 'recover_abandoned params: none');
SELECT results_eq(format($$SELECT actor, action_id, params, recipient_count, blocked FROM runhub.previews WHERE id = %L$$, (:'pv'::jsonb) ->> 'previewId'),
                  format($$VALUES (%L::uuid, 'recover_abandoned', '{}'::jsonb, 6, NULL::jsonb)$$, :admin),
                  'the preview is recorded: actor, action, params, count, not blocked');
SELECT pg_temp.set_policy('recover_abandoned', '{"warnAtRecipients": 6}') \g /dev/null
SELECT is(runhub.preview(:'rec', :admin, 'recover_abandoned') -> 'warnings',
          '[{"key": "owner.warning.manyRecipients", "params": {"count": 6}, "text": "Das geht an 6 Personen"}]'::jsonb,
          'a warning from warnAtRecipients recipients on');
SELECT pg_temp.set_policy('recover_abandoned', '{"warnAtRecipients": 7}') \g /dev/null
SELECT is(runhub.preview(:'rec', :admin, 'recover_abandoned') -> 'warnings', '[]'::jsonb, 'no warning one recipient under warnAtRecipients');
-- The recipient bounds (minRecipients, maxRecipients) include their ends: 6 recipients pass 6 to 6.
SELECT pg_temp.set_policy('recover_abandoned', '{"warnAtRecipients": 500, "minRecipients": 6, "maxRecipients": 6}') \g /dev/null
SELECT ok(NOT (runhub.preview(:'rec', :admin, 'recover_abandoned') ? 'blocked'), '6 recipients with minRecipients 6 and maxRecipients 6: not blocked');
SELECT pg_temp.set_policy('recover_abandoned', '{"minRecipients": 7}') \g /dev/null
SELECT is(runhub.preview(:'rec', :admin, 'recover_abandoned') -> 'blocked' -> 'reasonParams', '{"count": 6, "min": 7}'::jsonb,
          'one under minRecipients: blocked, workflows.policy.noRecipients');
SELECT pg_temp.set_policy('recover_abandoned', '{"minRecipients": 1, "maxRecipients": 1000}') \g /dev/null
SELECT pg_temp.set_policy('recover_abandoned', '{"warnAtRecipients": 500, "maxRecipients": 5}') \g /dev/null
SELECT runhub.preview(:'rec', :admin, 'recover_abandoned') AS pv_blocked \gset
SELECT is((:'pv_blocked'::jsonb) -> 'blocked',
          '{"reason": "workflows.policy.tooManyRecipients", "reasonParams": {"count": 6, "max": 5},
            "text": "Zu viele Empfänger: 6, höchstens 5"}'::jsonb,
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

-- explain_recipient: admin or owner; an address the sender could not deliver is refused; one that is
-- no customer of the shop is answered, not refused.
CREATE FUNCTION pg_temp.explain_sql(p_project uuid, p_actor uuid, p_email text)
RETURNS text LANGUAGE sql
AS $$ SELECT format('SELECT runhub.explain_recipient(%L, %L, %L, %L)', p_project, p_actor, 'recover_abandoned', p_email) $$;
SELECT is(ARRAY(SELECT coalesce(e, 'null') || ' -> ' || r FROM unnest(ARRAY['not-an-email', '', NULL, repeat('a', 243) || '@example.com']) e,
                       pg_temp.refusal(pg_temp.explain_sql(:'rec', :admin, e)) r
                 WHERE r IS DISTINCT FROM 'PT400 common.invalidInput email'),
          '{}'::text[], 'explain_recipient of no deliverable address (or of 255 characters): PT400 common.invalidInput (email)');
SELECT is((runhub.explain_recipient(:'rec', :admin, 'recover_abandoned', repeat('a', 242) || '@example.com') -> 'customer'), 'false'::jsonb,
          'a deliverable address of 254 characters that is no customer: customer false');
SELECT is(pg_temp.refusal(pg_temp.explain_sql(:'rec', :member, 'ann@example.com')), 'PT403 auth.roleRequired',
          'explain_recipient by a member: PT403 auth.roleRequired');
SELECT is(pg_temp.refusal(pg_temp.explain_sql(:'rec', :stranger, 'ann@example.com')), 'PT404 projects.notFound',
          'explain_recipient by a non-member: PT404 projects.notFound');
SELECT is(runhub.explain_recipient(:'rec', :admin, 'recover_abandoned', ' ANN@Example.com ') - 'text' - 'audience' - 'exclusions',
          '{"email": "ann@example.com", "actionId": "recover_abandoned", "customer": true, "mailed": true, "excludedBy": null}'::jsonb,
          'explain_recipient of ann (normalized): a customer the action would mail');

-- ---------------------------------------------------------------------------------------------
-- send_promo (the promo shop, locale es): segments, params and their defaults, its exclusions.
SELECT pg_temp.promo_shop(:owner, :admin, :member) AS promo \gset
SELECT is_empty(format($$SELECT 1 FROM runhub.customers WHERE project_id = %L AND email = 'tom@example.com'$$, :'promo'),
                'our own sends do not make a customer (tom only has promo_email_sent)');
\set pp '{"subject": "Spring sale", "content": "Up to 30% off"}'
SELECT runhub.preview(:'promo', :owner, 'send_promo', :'pp') AS ppv \gset
SELECT is((:'ppv'::jsonb) -> 'params',
          '{"subject": "Spring sale", "content": "Up to 30% off", "segmentation": "recent_30d", "isUpdate": false}'::jsonb,
          'send_promo params come back with their defaults (recent_30d, isUpdate false)');
SELECT is(jsonb_build_array((:'ppv'::jsonb) -> 'count', (:'ppv'::jsonb) -> 'sample', (:'ppv'::jsonb) -> 'criteria'),
          '[3, [{"email": "pat@example.com", "name": "Pat"}, {"email": "quinn@example.com"}, {"email": "ruth@example.com"}],
            {"key": "owner.criteria.sendPromo.recent30d", "params": {}, "text": "Clientes y contactos vistos en los últimos 30 días"}]'::jsonb,
          'recent_30d: pat (a lead), quinn, ruth; not sara (40 days), tom (our send) or uri (suppressed)');
SELECT is(jsonb_build_array((:'ppv'::jsonb) -> 'exclusions', (:'ppv'::jsonb) -> 'excluded'),
          '[[{"key": "owner.exclusion.suppressed", "params": {}, "text": "Direcciones dadas de baja, rebotadas o bloqueadas"},
             {"key": "owner.exclusion.frequencyCap", "params": {"hours": 16},
              "text": "Clientes que recibieron un correo automático en las últimas 16 h"}],
            [{"exclusion": "suppressed", "count": 1,
              "label": {"key": "owner.exclusion.suppressed", "params": {}, "text": "Direcciones dadas de baja, rebotadas o bloqueadas"}},
             {"exclusion": "frequencyCap", "count": 0,
              "label": {"key": "owner.exclusion.frequencyCap", "params": {"hours": 16},
                        "text": "Clientes que recibieron un correo automático en las últimas 16 h"}}]]'::jsonb,
          'send_promo lists only its own exclusions: suppressed (1) and frequencyCap');
SELECT runhub.preview(:'promo', :owner, 'send_promo', (:'pp'::jsonb) || '{"segmentation": "recent_7d"}') AS ppv7 \gset
SELECT is(jsonb_build_array((:'ppv7'::jsonb) -> 'count', (:'ppv7'::jsonb) -> 'criteria'),
          '[2, {"key": "owner.criteria.sendPromo.recent7d", "params": {}, "text": "Clientes y contactos vistos en los últimos 7 días"}]'::jsonb,
          'recent_7d: pat and quinn');
SELECT is((runhub.preview(:'promo', :owner, 'send_promo', (:'pp'::jsonb) || '{"segmentation": "all"}') - ARRAY['previewId', 'params', 'exclusions', 'excluded', 'warnings']),
          '{"count": 4, "criteria": {"key": "owner.criteria.sendPromo.all", "params": {}, "text": "Todos los clientes y contactos que esta tienda ha visto"},
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

-- ---------------------------------------------------------------------------------------------
-- onboard_users (the onboarding shop, locale fr): any member may preview it.
SELECT pg_temp.onboard_shop(:owner, :member) AS onb \gset
SELECT is(pg_temp.who(:'onb', 'onboard_users'),
          '{"sam@example.com": "included", "vic@example.com": "included", "wes@example.com": "included", "xan@example.com": "suppressed"}'::jsonb,
          'sign-ups of the last 7 days with nothing since (tia did something, uma is too old; vic''s checkout came before, wes''s event is our own send)');
SELECT runhub.preview(:'onb', :member, 'onboard_users') AS opv \gset
SELECT is((:'opv'::jsonb) - ARRAY['previewId', 'exclusions', 'warnings'],
          '{"count": 3, "params": {}, "sample": [{"email": "sam@example.com", "name": "Sam"}, {"email": "vic@example.com"}, {"email": "wes@example.com"}],
            "criteria": {"key": "owner.criteria.onboardUsers", "params": {"days": 7},
                         "text": "Personnes inscrites ces 7 derniers jours qui n’ont rien fait depuis"},
            "excluded": [{"exclusion": "alreadyOnboarded", "count": 0,
                          "label": {"key": "owner.exclusion.alreadyOnboarded", "params": {}, "text": "Utilisateurs qui ont déjà reçu un e-mail de bienvenue"}},
                         {"exclusion": "suppressed", "count": 1,
                          "label": {"key": "owner.exclusion.suppressed", "params": {}, "text": "Adresses désinscrites, en échec ou bloquées"}},
                         {"exclusion": "frequencyCap", "count": 0,
                          "label": {"key": "owner.exclusion.frequencyCap", "params": {"hours": 16},
                                    "text": "Clients ayant reçu un e-mail automatique ces dernières 16 h"}}]}'::jsonb,
          'a member may preview onboard_users: 3 recipients, xan suppressed');

-- ---------------------------------------------------------------------------------------------
-- The audiences' windows, to the microsecond: a checkout in the last 24 hours (windowHours), a
-- sign-up in the last 7 days (windowDays), a customer seen in the last 7 or 30 days (segmentation).
-- Each window excludes its far end: what happened exactly that long ago is out, a microsecond later in.
SELECT runhub.create_project('Window shop', :owner, 'UTC', 'EUR') AS win \gset
SELECT pg_temp.ev(:'win', t, k, ago, jsonb_build_object('email', k || '@example.com'), '{"payload": {"cartId": "c"}}')
  FROM (VALUES ('checkout_started', 'co-24h', interval '24 hours'), ('checkout_started', 'co-in', interval '24 hours' - interval '1 microsecond'),
               ('user_signed_up', 'su-7d', interval '7 days'), ('user_signed_up', 'su-in', interval '7 days' - interval '1 microsecond'),
               ('page_viewed', 'pv-7d', interval '7 days'), ('page_viewed', 'pv-7d-in', interval '7 days' - interval '1 microsecond'),
               ('page_viewed', 'pv-30d', interval '30 days'), ('page_viewed', 'pv-30d-in', interval '30 days' - interval '1 microsecond')) v(t, k, ago)
\g /dev/null
SELECT is(pg_temp.who(:'win', 'recover_abandoned'), '{"co-in@example.com": "included"}'::jsonb,
          'recover_abandoned: a checkout 24 hours ago is out, a microsecond later in');
SELECT is(pg_temp.who(:'win', 'onboard_users'), '{"su-in@example.com": "included"}'::jsonb,
          'onboard_users: a sign-up 7 days ago is out, a microsecond later in');
SELECT is(ARRAY(SELECT jsonb_object_keys(pg_temp.who(:'win', 'send_promo', '{"segmentation": "recent_7d"}')) ORDER BY 1),
          '{co-24h@example.com,co-in@example.com,pv-7d-in@example.com,su-in@example.com}', 'recent_7d: seen 7 days ago is out, a microsecond later in');
SELECT is(ARRAY(SELECT jsonb_object_keys(pg_temp.who(:'win', 'send_promo', '{"segmentation": "recent_30d"}')) ORDER BY 1),
          '{co-24h@example.com,co-in@example.com,pv-30d-in@example.com,pv-7d-in@example.com,pv-7d@example.com,su-7d@example.com,su-in@example.com}',
          'recent_30d: seen 30 days ago is out, a microsecond later in');
SELECT is((SELECT count(*)::int FROM jsonb_object_keys(pg_temp.who(:'win', 'send_promo', '{"segmentation": "all"}'))), 8, 'all: everyone seen');

SELECT * FROM finish();
ROLLBACK;
