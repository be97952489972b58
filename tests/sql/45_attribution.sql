-- Outcomes (sql/45_attribution.sql): the credits table and its guarantees (append-only, one credit
-- a payment, RLS), the trigger on payments, the reasons catalog, and who may call what. Behaviour
-- in depth is tested with pytest (tests/db/test_attribution.py, and against a Python model in
-- tests/db/test_attribution_model.py); here the contract a SQL client relies on.
BEGIN;
\ir helpers.psql
SELECT * FROM no_plan();

\set owner '''aaaaaaaa-0000-4000-8000-0000000000a1'''
\set other '''aaaaaaaa-0000-4000-8000-0000000000b1'''

-- ---------------------------------------------------------------------------------------------
-- Structure.
SELECT has_table('runhub', 'workflow_attributions', 'table runhub.workflow_attributions exists');
SELECT col_is_pk('runhub', 'workflow_attributions', 'payment_event_id', 'at most one credit per payment: the key');
SELECT hasnt_fk('runhub', 'workflow_attributions', 'no foreign key: a credit costs its run no row lock (deleting runs deletes their credits)');
SELECT col_not_null('runhub', 'workflow_attributions', 'project_id', 'a credit names its project (for RLS)');
SELECT has_index('runhub', 'workflow_attributions', 'workflow_attributions_run', ARRAY['run_id'], 'credits by run');
SELECT col_type_is('runhub', 'workflow_runs', 'outcome_window_hours', 'integer', 'a run keeps its attribution window');
SELECT col_type_is('runhub', 'workflow_runs', 'last_sent_at', 'timestamp with time zone', 'a run keeps when its last mail went out');
SELECT trigger_is('runhub', 'business_events', 'business_events_attribute_payment', 'runhub', '_attribute_payment',
                  'payments are examined at ingest');
SELECT matches(pg_get_triggerdef((SELECT oid FROM pg_trigger WHERE tgname = 'business_events_attribute_payment')),
               'AFTER INSERT .* FOR EACH ROW WHEN \(\(new\.event_type = ''payment_succeeded''::text\)\)',
               'only payment_succeeded rows reach the trigger function (a WHEN clause: other events cost nothing)');
SELECT policies_are('runhub', 'workflow_attributions', ARRAY['workflow_attributions_member_read'], 'credits: the member-read policy');
SELECT function_returns('runhub', 'workflow_outcome', ARRAY['uuid', 'uuid', 'uuid'], 'jsonb', 'workflow_outcome(project, actor, run)');
SELECT function_returns('runhub', 'explain_attribution', ARRAY['uuid', 'uuid', 'bigint'], 'jsonb',
                        'explain_attribution(project, actor, payment_event_id)');
SELECT function_returns('runhub', 'attribute_payments', ARRAY['uuid', 'timestamp with time zone'], 'integer',
                        'attribute_payments(project, since)');
SELECT is_empty($$SELECT r FROM unnest(ARRAY['runhub_app', 'runhub_ingest', 'runhub_sender', 'runhub_reader']) r
                   WHERE has_function_privilege(r, 'runhub.attribute_payments(uuid,timestamptz)', 'EXECUTE')$$,
                'attribute_payments is for operators: no runhub role may call it');
SELECT is_empty($$SELECT a.key FROM runhub.actions x, LATERAL (SELECT x.id AS key) a
                   WHERE runhub._money_window_hours(x.outcome) IS DISTINCT FROM
                         CASE x.id WHEN 'onboard_users' THEN NULL ELSE 48 END$$,
                'recovery and promotions earn within 48 hours; onboarding earns no money outcome');

-- ---------------------------------------------------------------------------------------------
-- A project with one recovery mail sent an hour ago (rows written directly: the sender's path is
-- tested elsewhere), and a payment for its cart.
SELECT runhub.create_project('Shop', :owner, 'UTC', 'EUR') AS p \gset
SELECT runhub.create_project('Other', :other, 'UTC', 'EUR') AS q \gset
INSERT INTO runhub.workflow_runs (id, project_id, action_id, idempotency_key, triggered_by, triggered_by_role,
                                  status, started_at, executed_at, outcome_window_hours)
VALUES ('aaaaaaaa-0000-4000-8000-00000000a001', :'p', 'recover_abandoned', 'r1', :owner, 'owner',
        'running', now() - interval '2 hours', now() - interval '2 hours', 48);
WITH rc AS (
    INSERT INTO runhub.workflow_run_recipients (run_id, project_id, email, cart_id, amount_cents, currency, status, created_at)
    VALUES ('aaaaaaaa-0000-4000-8000-00000000a001', :'p', 'ann@shop.example', 'cart-1', 4200, 'EUR', 'sent', now() - interval '2 hours')
    RETURNING id, project_id, run_id, email)
INSERT INTO runhub.outbox (id, project_id, run_id, recipient_id, template, locale, to_email, message_id, status, sent_at)
SELECT id, project_id, run_id, id, 'recovery', 'en', email, '<a001.1@runhub>', 'sent', now() - interval '1 hour' FROM rc;

SELECT (runhub.ingest_event(:'p', format('{"type": "payment_succeeded", "occurredAt": "%s", "idempotencyKey": "pay-1",
        "amountCents": 5000, "currency": "EUR", "customer": {"email": "Ann@Shop.example"}, "payload": {"cartId": "cart-1"}}',
        runhub._iso(now()))::jsonb) ->> 'eventId')::bigint AS pay1 \gset
SELECT results_eq(format($$SELECT method, confidence, amount_cents, window_hours FROM runhub.workflow_attributions
                           WHERE payment_event_id = %s$$, :pay1),
                  $$VALUES ('cart_match', 'medium', 5000::bigint, 48)$$,
                  'the payment is credited at ingest: cart_match, medium, its amount, the run''s window');
SELECT is((runhub.explain_attribution(:'p', :owner, :pay1)) ->> 'reason', 'attribution.attributed', 'explain: attributed');
SELECT is((runhub.explain_attribution(:'p', :owner, :pay1)) ->> 'text',
          'Credited to run aaaaaaaa-0000-4000-8000-00000000a001 (recover_abandoned) by cart_match with the mail sent at '
          || runhub._iso(now() - interval '1 hour') || ' (medium confidence)',
          'explain says it in plain words');
SELECT is(runhub.workflow_outcome(:'p', :owner, 'aaaaaaaa-0000-4000-8000-00000000a001') - 'windowEndsAt',
          '{"model": "last_touch_48h", "windowHours": 48, "conversions": 1, "revenueCents": 5000, "currency": "EUR",
            "confidence": "medium", "matchedBy": "cart_match", "byMethod": {"cart_match": {"conversions": 1, "revenueCents": 5000}},
            "final": false}'::jsonb,
          'the run''s Outcome');
SELECT is(runhub.attribute_payments(:'p', '2000-01-01'), 0, 'a backfill adds nothing already credited');

-- A payment in another currency: kept, not credited, and explained.
SELECT (runhub.ingest_event(:'p', format('{"type": "payment_succeeded", "occurredAt": "%s", "idempotencyKey": "pay-2",
        "amountCents": 4200, "currency": "USD", "customer": {"email": "ann@shop.example"}, "payload": {"cartId": "cart-1"}}',
        runhub._iso(now()))::jsonb) ->> 'eventId')::bigint AS pay2 \gset
SELECT is((SELECT count(*)::int FROM runhub.workflow_attributions WHERE payment_event_id = :pay2), 0, 'another currency: no credit');
SELECT is(runhub.explain_attribution(:'p', :owner, :pay2) -> 'params',
          '{"paymentCurrency": "USD", "projectCurrency": "EUR"}'::jsonb, 'explain names both currencies');

-- ---------------------------------------------------------------------------------------------
-- Append-only, even for the superuser; a project's deletion takes its credits.
SELECT throws_ok($$UPDATE runhub.workflow_attributions SET amount_cents = 1$$, 'PT409', 'events.appendOnly', 'UPDATE refused');
SELECT throws_ok($$DELETE FROM runhub.workflow_attributions$$, 'PT409', 'events.appendOnly', 'DELETE refused');
SELECT throws_ok($$TRUNCATE runhub.workflow_attributions$$, 'PT409', 'events.appendOnly', 'TRUNCATE refused');
SELECT throws_ok($$TRUNCATE runhub.business_events$$, 'PT409', 'events.appendOnly',
                 'TRUNCATE of business_events still meets the append-only refusal (no FK from credits stands in its way)');

-- ---------------------------------------------------------------------------------------------
-- Who may see and ask what.
SET LOCAL runhub.user_id = 'aaaaaaaa-0000-4000-8000-0000000000a1';
SET LOCAL ROLE runhub_reader;
SELECT is((SELECT count(*)::int FROM runhub.workflow_attributions), 1, 'the owner''s reader sees its project''s credit');
SELECT throws_ok($$INSERT INTO runhub.workflow_attributions (project_id, run_id, payment_event_id, message_id, method,
                      confidence, window_hours, sent_at, paid_at, amount_cents, currency)
                   SELECT project_id, run_id, payment_event_id + 1000, message_id, method, confidence, window_hours,
                          sent_at, paid_at, amount_cents, currency FROM runhub.workflow_attributions$$,
                 '42501', NULL, 'a reader cannot forge a credit');
RESET ROLE;
SET LOCAL runhub.user_id = 'aaaaaaaa-0000-4000-8000-0000000000b1';
SET LOCAL ROLE runhub_reader;
SELECT is_empty($$SELECT payment_event_id FROM runhub.workflow_attributions$$, 'another project''s reader sees no credit');
RESET ROLE;
SET LOCAL ROLE runhub_app;
SELECT throws_ok(format($$SELECT runhub.explain_attribution(%L, %L, %s)$$, :'p', :other, :pay1), 'PT404', 'projects.notFound',
                 'runhub_app acting for a stranger cannot explain a payment');
SELECT throws_ok(format($$SELECT runhub.explain_attribution(%L, %L, %s)$$, :'q', :other, :pay1), 'PT404', 'events.notFound',
                 'nor reach another project''s payment through its own project');
SELECT throws_ok(format($$SELECT runhub.attribute_payments(%L, now())$$, :'p'), '42501', NULL, 'runhub_app cannot backfill');
SELECT throws_ok($$SELECT * FROM runhub.workflow_attributions$$, '42501', NULL, 'runhub_app reads no table');
RESET ROLE;
SET LOCAL ROLE runhub_ingest;
SELECT throws_ok(format($$SELECT runhub.workflow_outcome(%L, %L, 'aaaaaaaa-0000-4000-8000-00000000a001')$$, :'p', :owner),
                 '42501', NULL, 'runhub_ingest cannot read outcomes');
RESET ROLE;

-- ---------------------------------------------------------------------------------------------
-- The contract's edges (docs/sql-contract.md, Outcomes): the window is inclusive at 48 hours to the
-- microsecond; on one mail a cart match is a cart match even when the amount matches too; between
-- two matching mails the later wins, whatever matched; an address alone counts only where the
-- project turns emailOnlyAttribution on. A shop of its own, its mail written as the sender leaves it.
SELECT runhub.create_project('Edges', :owner, 'UTC', 'EUR') AS e \gset
INSERT INTO runhub.workflow_runs (id, project_id, action_id, idempotency_key, triggered_by, triggered_by_role,
                                  status, started_at, executed_at, outcome_window_hours)
VALUES ('aaaaaaaa-0000-4000-8000-00000000e001', :'e', 'recover_abandoned', 'e1', :owner, 'owner',
        'running', now() - interval '3 days', now() - interval '3 days', 48);
INSERT INTO runhub.workflow_runs (id, project_id, action_id, idempotency_key, triggered_by, triggered_by_role,
                                  status, started_at, executed_at, outcome_window_hours)
VALUES ('aaaaaaaa-0000-4000-8000-00000000e002', :'e', 'recover_abandoned', 'e2', :owner, 'owner',
        'running', now() - interval '1 day', now() - interval '1 day', 48);
CREATE FUNCTION pg_temp.mailed(p_email text, p_cart text, p_amount bigint, p_sent timestamptz,
                               p_run uuid DEFAULT 'aaaaaaaa-0000-4000-8000-00000000e001') RETURNS void
LANGUAGE sql AS $$
    WITH rc AS (
        INSERT INTO runhub.workflow_run_recipients (run_id, project_id, email, cart_id, amount_cents, currency, status, created_at)
        SELECT r.id, r.project_id, p_email, p_cart, p_amount, 'EUR', 'sent', p_sent - interval '1 minute'
          FROM runhub.workflow_runs r WHERE r.id = p_run
        RETURNING id, project_id, run_id, email)
    INSERT INTO runhub.outbox (id, project_id, run_id, recipient_id, template, locale, to_email, message_id, status, sent_at)
    SELECT id, project_id, run_id, id, 'recovery', 'en', email, '<e.' || id || '@runhub>', 'sent', p_sent FROM rc
$$;
-- The method a payment was credited by ('none' when it was not), ingested as the API takes it.
CREATE FUNCTION pg_temp.credited(p_project uuid, p_key text, p_email text, p_cart text, p_amount bigint, p_at timestamptz)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_event bigint := (runhub.ingest_event(p_project, jsonb_build_object('type', 'payment_succeeded', 'occurredAt', runhub._iso(p_at),
                          'idempotencyKey', p_key, 'amountCents', p_amount, 'currency', 'EUR',
                          'customer', jsonb_build_object('email', p_email), 'payload', jsonb_build_object('cartId', p_cart))) ->> 'eventId')::bigint;
BEGIN
    RETURN coalesce((SELECT a.method FROM runhub.workflow_attributions a WHERE a.payment_event_id = v_event), 'none');
END
$$;
SELECT now() - interval '50 hours' AS sent \gset
SELECT pg_temp.mailed('edge@shop.example', 'cart-e', 1000, :'sent');
SELECT is(pg_temp.credited(:'e', 'w-48h', 'edge@shop.example', 'cart-e', 5, :'sent'::timestamptz + interval '48 hours'), 'cart_match',
          'paid exactly 48 hours after the mail: credited (the window includes its end)');
SELECT is(pg_temp.credited(:'e', 'w-48h+', 'edge@shop.example', 'cart-e', 5, :'sent'::timestamptz + interval '48 hours 1 microsecond'), 'none',
          'a microsecond later: not credited');
SELECT is(pg_temp.credited(:'e', 'w-0', 'edge@shop.example', 'cart-e', 5, :'sent'), 'cart_match',
          'paid the instant the mail went out: credited (the window includes its start)');
SELECT is(pg_temp.credited(:'e', 'w-0-', 'edge@shop.example', 'cart-e', 5, :'sent'::timestamptz - interval '1 microsecond'), 'none',
          'a microsecond before the mail: never');

SELECT pg_temp.mailed('both@shop.example', 'cart-b', 2500, now() - interval '5 hours');
SELECT is(pg_temp.credited(:'e', 'both', 'both@shop.example', 'cart-b', 2500, now()), 'cart_match',
          'one mail matching the cart and the amount: cart_match (medium), not amount_match');

SELECT pg_temp.mailed('two@shop.example', 'cart-old', 100, now() - interval '6 hours');
SELECT pg_temp.mailed('two@shop.example', 'cart-new', 700, now() - interval '2 hours', 'aaaaaaaa-0000-4000-8000-00000000e002');
SELECT is(pg_temp.credited(:'e', 'two', 'two@shop.example', 'cart-old', 700, now()), 'amount_match',
          'two matching mails: the later (its amount) wins over the earlier (its cart)');

SELECT pg_temp.mailed('only@shop.example', 'cart-o', 300, now() - interval '3 hours');
SELECT is(pg_temp.credited(:'e', 'only-off', 'only@shop.example', 'cart-x', 999, now()), 'none',
          'an address alone, emailOnlyAttribution off (the default): not credited');
SELECT is(runhub.update_project_settings(:'e', :owner, '{"emailOnlyAttribution": true}') -> 'emailOnlyAttribution', 'true'::jsonb,
          'the owner turns address-only matching on');
SELECT is(pg_temp.credited(:'e', 'only-on', 'only@shop.example', 'cart-y', 998, now()), 'email_exact',
          'then the address alone credits (email_exact)');
SELECT is((SELECT confidence FROM runhub.workflow_attributions a JOIN runhub.business_events b ON b.id = a.payment_event_id
            WHERE b.idempotency_key = 'only-on'), 'low', 'with low confidence');
SELECT is(pg_temp.credited(:'e', 'only-cart', 'only@shop.example', 'cart-o', 998, now()), 'cart_match',
          'and a cart match is still a cart match');

-- ---------------------------------------------------------------------------------------------
-- A credit's rules (one CHECK, runhub._is_valid_credit: migration 0027): a row that breaks any is
-- refused, whoever writes it.
PREPARE credit(bigint, text, text, int, interval, interval, bigint) AS
    INSERT INTO runhub.workflow_attributions (project_id, run_id, payment_event_id, message_id, method, confidence,
                                              window_hours, sent_at, paid_at, amount_cents, currency)
    VALUES (:'p', 'aaaaaaaa-0000-4000-8000-00000000a001', $1, 1, $2, $3, $4, now() - $5, now() - $6, $7, 'EUR');
SELECT lives_ok($$EXECUTE credit(-1, 'cart_match', 'medium', 48, '2 hours', '1 hour', 0)$$, 'a credit within the rules is stored');
SELECT lives_ok($$EXECUTE credit(-2, 'email_exact', 'low', 48, '48 hours', '0 hours', 1)$$, 'sent exactly a window before the payment counts');
SELECT throws_ok($$EXECUTE credit(-3, 'guess', 'low', 48, '2 hours', '1 hour', 100)$$, '23514', NULL, 'an unknown method is refused');
SELECT throws_ok($$EXECUTE credit(-3, 'wid_link', 'medium', 48, '2 hours', '1 hour', 100)$$, '23514', NULL, 'a confidence that is not its method''s is refused');
SELECT throws_ok($$EXECUTE credit(-3, 'cart_match', 'certain', 48, '2 hours', '1 hour', 100)$$, '23514', NULL, 'an unknown confidence is refused');
SELECT throws_ok($$EXECUTE credit(-3, 'cart_match', 'medium', 0, '2 hours', '1 hour', 100)$$, '23514', NULL, 'a window under an hour is refused');
SELECT throws_ok($$EXECUTE credit(-3, 'cart_match', 'medium', 8761, '2 hours', '1 hour', 100)$$, '23514', NULL, 'a window over a year is refused');
SELECT throws_ok($$EXECUTE credit(-3, 'cart_match', 'medium', 48, '1 hour', '2 hours', 100)$$, '23514', NULL, 'mail sent after the payment is refused');
SELECT throws_ok($$EXECUTE credit(-3, 'cart_match', 'medium', 48, '49 hours', '0 hours', 100)$$, '23514', NULL, 'mail sent before its window is refused');
SELECT throws_ok($$EXECUTE credit(-3, 'cart_match', 'medium', 48, '2 hours', '1 hour', -1)$$, '23514', NULL, 'a negative amount is refused');
SELECT is((SELECT count(*) FROM pg_constraint WHERE conrelid = 'runhub.workflow_attributions'::regclass AND contype = 'c')::int, 1,
          'the credit''s rules are one CHECK (each CHECK expression is rebuilt for every INSERT statement)');

SELECT * FROM finish();
ROLLBACK;
