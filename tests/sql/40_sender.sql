-- The sender's side of the outbox (sql/70_sender.sql): claim_messages and the message JSON,
-- leases (heartbeat_messages, release_messages, reclaiming an expired lease), record_sent and the
-- *_email_sent business event, record_failure (retries with backoff, permanent failures, hard
-- bounces suppressing the address, lease_lost), the end of a run once its last message is final
-- (_complete_run_if_done, _complete_done_runs), and signed one-click unsubscribe links
-- (unsubscribe_token, unsubscribe, rotate_unsubscribe_key).
--
-- Every run lives in a project of its own, made by pg_temp.recovery_run (one recover_abandoned run,
-- executed, its messages queued). claim_messages takes every due message of the database, so each
-- section checks exactly which addresses a claim returned, and leaves nothing due that a later
-- claim does not expect (a message that must wait has next_attempt_at moved a day ahead).
-- now() is fixed for the transaction; claim_messages, heartbeat_messages and record_failure use
-- clock_timestamp(), so times they set are checked against both.
BEGIN;
\ir helpers.psql
SELECT * FROM no_plan();

\set owner '''eeeeeeee-0000-4000-8000-000000000001'''

-- ---------------------------------------------------------------------------------------------
-- Helpers (superuser only, dropped with the transaction).

-- A project of its own with one executed recover_abandoned run; p_people is a list of
-- {email, name?, locale?, cart, amountCents?}, each a checkout an hour ago. Returns the run id.
CREATE FUNCTION pg_temp.recovery_run(p_name text, p_people jsonb)
RETURNS uuid LANGUAGE plpgsql
AS $$
DECLARE
    c_owner   CONSTANT uuid := 'eeeeeeee-0000-4000-8000-000000000001';
    v_project uuid := pg_temp.ready_shop(p_name, c_owner, 'de');
    v_run     uuid;
    v_person  jsonb;
BEGIN
    FOR v_person IN SELECT * FROM jsonb_array_elements(p_people) LOOP
        PERFORM runhub.ingest_event(v_project, jsonb_build_object(
            'type', 'checkout_started', 'idempotencyKey', 'checkout:' || (v_person ->> 'email'),
            'occurredAt', runhub._iso(now() - interval '1 hour'),
            'customer', v_person - 'cart' - 'amountCents',
            'payload', jsonb_build_object('cartId', v_person ->> 'cart'))
            || CASE WHEN v_person ? 'amountCents'
                    THEN jsonb_build_object('amountCents', v_person -> 'amountCents', 'currency', 'EUR') ELSE '{}' END);
    END LOOP;
    PERFORM runhub.preview(v_project, c_owner, 'recover_abandoned');
    v_run := (runhub.create_run(v_project, c_owner, 'recover_abandoned', 'run-1') ->> 'runId')::uuid;
    IF runhub.process_runs() <> 1 THEN
        RAISE EXCEPTION 'fixture: process_runs did not take run % of %', v_run, p_name;
    END IF;
    IF (SELECT status FROM runhub.workflow_runs WHERE id = v_run) <> 'running'
       OR (SELECT count(*) FROM runhub.outbox WHERE run_id = v_run) <> jsonb_array_length(p_people) THEN
        RAISE EXCEPTION 'fixture: run % of % was not executed as expected', v_run, p_name;
    END IF;
    RETURN v_run;
END
$$;

-- A run's project.
CREATE FUNCTION pg_temp.project_of(p_run uuid)
RETURNS uuid LANGUAGE sql
AS $$ SELECT project_id FROM runhub.workflow_runs WHERE id = p_run $$;

-- The id of a message, by its address (unique: every run has a project of its own, and every
-- fixture address is used once).
CREATE FUNCTION pg_temp.msg(p_email text)
RETURNS bigint LANGUAGE sql
AS $$ SELECT id FROM runhub.outbox WHERE to_email = p_email $$;

-- A message row as JSON (to show that a call changed nothing).
CREATE FUNCTION pg_temp.row_of(p_email text)
RETURNS jsonb LANGUAGE sql
AS $$ SELECT to_jsonb(o) FROM runhub.outbox o WHERE to_email = p_email $$;

-- Claim, then start what was claimed, as the sender does (an attempt counts when it starts); the
-- addresses claimed, sorted.
CREATE FUNCTION pg_temp.claim(p_worker text, p_max int DEFAULT 50, p_lease int DEFAULT 120)
RETURNS text[] LANGUAGE plpgsql
AS $$
DECLARE
    v_ids    bigint[];
    v_emails text[];
BEGIN
    SELECT array_agg((m ->> 'id')::bigint), coalesce(array_agg(m ->> 'toEmail' ORDER BY m ->> 'toEmail'), '{}')
      INTO v_ids, v_emails FROM runhub.claim_messages(p_worker, p_max, p_lease) m;
    PERFORM runhub.start_messages(p_worker, v_ids);
    RETURN v_emails;
END
$$;

-- The addresses a claim returned, sorted, none started (a sender's local queue).
CREATE FUNCTION pg_temp.claim_only(p_worker text, p_max int DEFAULT 50)
RETURNS text[] LANGUAGE sql
AS $$ SELECT coalesce(array_agg(m ->> 'toEmail' ORDER BY m ->> 'toEmail'), '{}')
        FROM runhub.claim_messages(p_worker, p_max, 120) m $$;

-- Move a message's next attempt (here: out of the way of claims, or due again).
CREATE FUNCTION pg_temp.due_at(p_email text, p_at timestamptz)
RETURNS void LANGUAGE sql
AS $$ UPDATE runhub.outbox SET next_attempt_at = p_at WHERE to_email = p_email $$;

-- The sent events of a project: event_type, key, correlation id, customer, amount and payload.
CREATE FUNCTION pg_temp.sent_events(p_project uuid)
RETURNS SETOF jsonb LANGUAGE sql
AS $$ SELECT jsonb_build_object('type', event_type, 'key', idempotency_key, 'occurredAt', runhub._iso(occurred_at),
                                'correlationId', correlation_id, 'email', customer_email, 'name', customer_name,
                                'amountCents', amount_cents, 'currency', currency, 'payload', payload)
        FROM runhub.business_events WHERE project_id = p_project AND event_type ~ '_email_sent$' ORDER BY id $$;

-- ---------------------------------------------------------------------------------------------
-- Fixture: run A (recover_abandoned, 4 recipients), run B (send_promo, 1 recipient) and one mail
-- that belongs to no run (a digest, written directly).
SELECT pg_temp.recovery_run('Sender shop', '[
    {"email": "ann@example.com", "name": "Ann", "locale": "fr-CA", "cart": "cart-ann", "amountCents": 4200},
    {"email": "bob@example.com", "cart": "cart-bob"},
    {"email": "cy@example.com", "cart": "cart-cy"},
    {"email": "dee@example.com", "cart": "cart-dee"}]') AS run_a \gset
SELECT pg_temp.project_of(:'run_a') AS proj_a \gset
SELECT runhub.create_project('Promo shop', :owner, 'UTC', 'USD', 'es') AS proj_b \gset
SELECT runhub.update_project_settings(:'proj_b', :owner, '{"integrations": ["email"], "holdoutPercent": 0}') \g /dev/null
SELECT runhub.ingest_event(:'proj_b', jsonb_build_object('type', 'page_viewed', 'idempotencyKey', 'pat-1',
           'occurredAt', runhub._iso(now() - interval '1 day'), 'customer', '{"email": "pat@example.com", "name": "Pat"}'::jsonb)) \g /dev/null
\set promo_params '{"subject": "Spring sale", "content": "Up to 30% off"}'
SELECT runhub.preview(:'proj_b', :owner, 'send_promo', :'promo_params') \g /dev/null
SELECT runhub.create_run(:'proj_b', :owner, 'send_promo', 'promo-1', :'promo_params') ->> 'runId' AS run_b \gset
SELECT is(runhub.process_runs(), 1, 'fixture: the send_promo run is executed');
INSERT INTO runhub.outbox (project_id, template, locale, to_email, to_name, variables, message_id)
VALUES (:'proj_a', 'digest', 'en', 'owner@example.com', 'Owner', '{"week": 47}', '<digest-47@runhub>');
SELECT results_eq($$SELECT to_email, status, attempts FROM runhub.outbox ORDER BY to_email$$,
                  $$VALUES ('ann@example.com', 'queued', 0), ('bob@example.com', 'queued', 0), ('cy@example.com', 'queued', 0),
                           ('dee@example.com', 'queued', 0), ('owner@example.com', 'queued', 0), ('pat@example.com', 'queued', 0)$$,
                  'fixture: six queued messages, none attempted');

-- ---------------------------------------------------------------------------------------------
-- claim_messages: bad arguments are refused and claim nothing.
SELECT is(ARRAY(SELECT v.args || ' -> ' || pg_temp.refusal('SELECT * FROM runhub.claim_messages(' || v.args || ')')
                  FROM (VALUES ('NULL'), (''''''), (quote_literal(repeat('w', 201)))) v(args)
                 WHERE pg_temp.refusal('SELECT * FROM runhub.claim_messages(' || v.args || ')')
                       IS DISTINCT FROM 'PT400 common.invalidInput worker'),
          '{}'::text[], 'claim_messages without a worker name, or one over 200 characters: PT400 worker');
SELECT is(ARRAY(SELECT v.args || ' -> ' || pg_temp.refusal('SELECT * FROM runhub.claim_messages(' || v.args || ')')
                  FROM (VALUES ('''w'', 0'), ('''w'', 1001'), ('''w'', -1'), ('''w'', NULL'),
                               ('''w'', 1, 4'), ('''w'', 1, 3601'), ('''w'', 1, 0'), ('''w'', 1, NULL')) v(args)
                 WHERE pg_temp.refusal('SELECT * FROM runhub.claim_messages(' || v.args || ')') !~ '^PT400 common\.invalidInput '),
          '{}'::text[], 'claim_messages with max outside 1-1000 or a lease outside 5-3600 seconds (or null): PT400');
SELECT is(ARRAY[pg_temp.refusal_undone($$SELECT * FROM runhub.claim_messages('w', 1000, 5)$$),
                pg_temp.refusal_undone($$SELECT * FROM runhub.claim_messages('w', 1, 3600)$$),
                pg_temp.refusal_undone(format('SELECT * FROM runhub.claim_messages(%L)', repeat('w', 200)))],
          '{no error,no error,no error}', 'claim_messages of 1000 messages, leases of 5 and 3600 seconds, a 200-character worker name: accepted');
SELECT is((SELECT count(*)::int FROM runhub.outbox WHERE status = 'queued' AND attempts = 0 AND lease_owner IS NULL), 6,
          'the refused claims claimed nothing');

-- What is not due: bob's next attempt is an hour away, cy is being sent by another worker, and
-- dee was suppressed after her message was queued (a suppression written directly, as one that
-- raced the queueing would be: suppress() itself cancels queued messages at once).
SELECT pg_temp.due_at('bob@example.com', now() + interval '1 hour') \g /dev/null
UPDATE runhub.outbox SET status = 'sending', attempts = 1, lease_owner = 'w-other', lease_expires_at = now() + interval '1 minute'
 WHERE to_email = 'cy@example.com';
INSERT INTO runhub.suppressions (project_id, email, reason) VALUES (:'proj_a', 'dee@example.com', 'complained');
SELECT message_id AS cy_message_id FROM runhub.outbox WHERE to_email = 'cy@example.com' \gset

CREATE TEMP TABLE claimed AS SELECT m FROM runhub.claim_messages('w1', 10, 120) m;
SELECT set_eq($$SELECT m ->> 'toEmail' FROM claimed$$, ARRAY['ann@example.com', 'pat@example.com', 'owner@example.com'],
              'w1 claims the due messages: ann, pat and the digest (not bob, not yet due; not cy, leased; not dee, suppressed)');
SELECT is((SELECT m FROM claimed WHERE m ->> 'toEmail' = 'ann@example.com'),
          (SELECT jsonb_build_object(
                'id', o.id, 'messageId', o.message_id, 'projectId', :'proj_a', 'runId', :'run_a',
                'template', 'recovery', 'locale', 'fr', 'toEmail', 'ann@example.com', 'toName', 'Ann', 'attempts', 0,
                'fromName', 'Sender shop', 'replyTo', NULL,
                'unsubscribeToken', runhub.unsubscribe_token(:'proj_a', 'ann@example.com'),
                'variables', jsonb_build_object(
                    'projectName', 'Sender shop', 'shopUrl', 'https://shop.example/', 'customerName', 'Ann',
                    'link', 'https://shop.example/checkout?wid=' || :'run_a' || '&cart=cart-ann', 'cartId', 'cart-ann',
                    'amountCents', 4200, 'currency', 'EUR'))
             FROM runhub.outbox o WHERE o.to_email = 'ann@example.com'),
          'a recovery message as claimed: envelope, the shop''s name to send under, no attempt yet, unsubscribe token, and the variables its template needs');
SELECT matches((SELECT m ->> 'messageId' FROM claimed WHERE m ->> 'toEmail' = 'ann@example.com'), '^<[^<>@[:space:]]+@[^<>@[:space:]]+>$',
               'the messageId is a Message-ID, <...@...>');
SELECT is((SELECT m - ARRAY['id', 'messageId'] FROM claimed WHERE m ->> 'toEmail' = 'pat@example.com'),
          jsonb_build_object('projectId', :'proj_b', 'runId', :'run_b', 'template', 'promo', 'locale', 'es',
                             'toEmail', 'pat@example.com', 'toName', 'Pat', 'attempts', 0,
                             'fromName', 'Promo shop', 'replyTo', NULL,
                             'unsubscribeToken', runhub.unsubscribe_token(:'proj_b', 'pat@example.com'),
                             'variables', '{"projectName": "Promo shop", "customerName": "Pat", "subject": "Spring sale", "content": "Up to 30% off"}'::jsonb),
          'a promo message: subject and content from the run''s params, no link, cart or amount');
SELECT is((SELECT m - ARRAY['id', 'messageId'] FROM claimed WHERE m ->> 'toEmail' = 'owner@example.com'),
          jsonb_build_object('projectId', :'proj_a', 'runId', NULL, 'template', 'digest', 'locale', 'en',
                             'toEmail', 'owner@example.com', 'toName', 'Owner', 'attempts', 0, 'unsubscribeToken', NULL,
                             'fromName', NULL, 'replyTo', NULL,
                             'variables', '{"week": 47, "projectName": "Sender shop", "shopUrl": "https://shop.example/"}'::jsonb),
          'mail of no run (a digest): its own variables plus the project''s, and no unsubscribe token');
SELECT results_eq($$SELECT to_email, status, attempts, lease_owner, started_at,
                           lease_expires_at BETWEEN now() + interval '120 seconds' AND clock_timestamp() + interval '120 seconds'
                      FROM runhub.outbox WHERE to_email IN ('ann@example.com', 'pat@example.com', 'owner@example.com') ORDER BY to_email$$,
                  $$VALUES ('ann@example.com', 'sending', 0, 'w1', NULL::timestamptz, true), ('owner@example.com', 'sending', 0, 'w1', NULL, true),
                           ('pat@example.com', 'sending', 0, 'w1', NULL, true)$$,
                  'the claimed messages are sending, leased to w1 for 120 seconds, not started: no attempt counted');
SELECT set_eq($$SELECT runhub.start_messages('w1', ARRAY(SELECT (m ->> 'id')::bigint FROM claimed))$$,
              $$SELECT (m ->> 'id')::bigint FROM claimed$$, 'w1 starts the three (it holds their leases)');
SELECT results_eq($$SELECT to_email, attempts, started_at BETWEEN now() AND clock_timestamp()
                      FROM runhub.outbox WHERE to_email IN ('ann@example.com', 'pat@example.com', 'owner@example.com') ORDER BY to_email$$,
                  $$VALUES ('ann@example.com', 1, true), ('owner@example.com', 1, true), ('pat@example.com', 1, true)$$,
                  'started: attempt 1 each, started_at set');
SELECT results_eq($$SELECT to_email, status, attempts, lease_owner, next_attempt_at = now() + interval '1 hour'
                      FROM runhub.outbox WHERE to_email = 'bob@example.com'$$,
                  $$VALUES ('bob@example.com', 'queued', 0, NULL::text, true)$$,
                  'bob''s message, not due yet, is left alone');
SELECT results_eq($$SELECT status, attempts, lease_owner, lease_expires_at FROM runhub.outbox WHERE to_email = 'cy@example.com'$$,
                  $$VALUES ('sending', 1, 'w-other', now() + interval '1 minute')$$,
                  'cy''s message, leased by another worker, is left alone');
SELECT results_eq($$SELECT o.status, o.attempts, o.lease_owner, o.lease_expires_at, o.last_error, r.status
                      FROM runhub.outbox o JOIN runhub.workflow_run_recipients r ON r.id = o.recipient_id
                     WHERE o.to_email = 'dee@example.com'$$,
                  $$VALUES ('cancelled', 0, NULL::text, NULL::timestamptz, 'suppressed', 'cancelled')$$,
                  'dee''s message, suppressed since it was queued, is cancelled (not claimed, no attempt), and so is her recipient');
SELECT is(runhub.get_run(:'proj_a', :owner, :'run_a') -> 'result',
          '{"totalRecipients": 4, "successful": 0, "failed": 0, "pending": 3, "cancelled": 1}'::jsonb,
          'run A delivers: 3 pending, 1 cancelled');
SELECT is(pg_temp.claim('w2'), '{}'::text[], 'w2 finds nothing to claim: every due message is leased');

-- An expired lease (its worker crashed mid-send) is reclaimed, with the same Message-ID.
UPDATE runhub.outbox SET lease_expires_at = now() - interval '1 second' WHERE to_email = 'cy@example.com';
SELECT is(pg_temp.claim('w2'), '{cy@example.com}'::text[], 'once cy''s lease expired, w2 reclaims her message');
SELECT results_eq($$SELECT message_id, status, attempts, lease_owner, lease_expires_at > now() + interval '119 seconds'
                      FROM runhub.outbox WHERE to_email = 'cy@example.com'$$,
                  format($$VALUES (%L, 'sending', 2, 'w2', true)$$, :'cy_message_id'),
                  'reclaimed: the same Message-ID, attempt 2, leased to w2');
SELECT is(pg_temp.claim('w3'), '{}'::text[], 'nothing else is due');

-- ---------------------------------------------------------------------------------------------
-- record_sent: the message is sent, its recipient too, and the action's sent event is appended once.
SELECT is(runhub.record_sent(pg_temp.msg('ann@example.com'), 'w1', '250 2.0.0 Ok: queued as 4F2A'), 'sent', 'record_sent: sent');
SELECT results_eq($$SELECT o.status, o.sent_at, o.smtp_code, o.smtp_reply, o.lease_owner, o.lease_expires_at, r.status
                      FROM runhub.outbox o JOIN runhub.workflow_run_recipients r ON r.id = o.recipient_id
                     WHERE o.to_email = 'ann@example.com'$$,
                  $$VALUES ('sent', now(), 250, '250 2.0.0 Ok: queued as 4F2A', NULL::text, NULL::timestamptz, 'sent')$$,
                  'the message is sent (sent_at, smtp_code 250, the reply), its lease cleared, its recipient sent');
SELECT results_eq(format('SELECT * FROM pg_temp.sent_events(%L)', :'proj_a'),
                  ARRAY[(SELECT jsonb_build_object(
                      'type', 'recovery_email_sent', 'key', 'mail:' || o.message_id, 'occurredAt', runhub._iso(now()),
                      'correlationId', 'cart-ann', 'email', 'ann@example.com', 'name', 'Ann', 'amountCents', 4200, 'currency', 'EUR',
                      'payload', jsonb_build_object('workflowRunId', :'run_a', 'recipientEmail', 'ann@example.com', 'cartId', 'cart-ann',
                                                    'abandonedAmountCents', 4200, 'currency', 'EUR',
                                                    'recoveryLink', 'https://shop.example/checkout?wid=' || :'run_a' || '&cart=cart-ann',
                                                    'messageId', o.message_id))
                     FROM runhub.outbox o WHERE o.to_email = 'ann@example.com')],
                  'one recovery_email_sent event, keyed mail:<Message-ID>, with what attribution needs');
SELECT is(runhub.record_sent(pg_temp.msg('ann@example.com'), 'w1', '250 again'), 'lease_lost',
          'recording it again (a retry): lease_lost, since w1 no longer holds it');
SELECT results_eq(format($$SELECT count(*)::int, min(o.smtp_reply) FROM pg_temp.sent_events(%L) e, runhub.outbox o
                            WHERE o.to_email = 'ann@example.com'$$, :'proj_a'),
                  $$VALUES (1, '250 2.0.0 Ok: queued as 4F2A')$$,
                  '... appends no second event and changes nothing');
SELECT is((SELECT last_seen_at FROM runhub.customers WHERE project_id = :'proj_a' AND email = 'ann@example.com'), now() - interval '1 hour',
          'our own sent event does not count as the customer being seen');
SELECT results_eq(format($$SELECT status, completed_at FROM runhub.workflow_runs WHERE id = %L$$, :'run_a'),
                  $$VALUES ('running', NULL::timestamptz)$$, 'run A is not over: bob and cy are not final');

-- The promo message: promo_email_sent, without recovery fields; run B (its only message) succeeds.
SELECT is(runhub.record_sent(pg_temp.msg('pat@example.com'), 'w1'), 'sent', 'record_sent without a reply: sent');
SELECT results_eq(format('SELECT * FROM pg_temp.sent_events(%L)', :'proj_b'),
                  ARRAY[(SELECT jsonb_build_object(
                      'type', 'promo_email_sent', 'key', 'mail:' || o.message_id, 'occurredAt', runhub._iso(now()),
                      'correlationId', NULL, 'email', 'pat@example.com', 'name', 'Pat', 'amountCents', NULL, 'currency', NULL,
                      'payload', jsonb_build_object('workflowRunId', :'run_b', 'recipientEmail', 'pat@example.com', 'messageId', o.message_id))
                     FROM runhub.outbox o WHERE o.to_email = 'pat@example.com')],
                  'one promo_email_sent event (the action''s sent event type), with no cart, amount or link');
SELECT results_eq(format($$SELECT status, completed_at, result - 'errorSummary', result ->> 'errorSummary' FROM runhub.workflow_runs WHERE id = %L$$, :'run_b'),
                  $$VALUES ('succeeded', now(), '{"totalRecipients": 1, "successful": 1, "failed": 0, "cancelled": 0}'::jsonb, NULL::text)$$,
                  'run B''s last message is sent: the run succeeded, completed now, with its totals (no errors to summarise)');
SELECT is(pg_temp.caught(pg_temp.cancel_sql(:'proj_b', :owner, :'run_b')) - 'hint',
          jsonb_build_object('sqlstate', 'PT409', 'message', 'workflows.runNotCancellable', 'detail', jsonb_build_object('runId', :'run_b', 'status', 'succeeded')::text),
          'cancelling a succeeded run: PT409 workflows.runNotCancellable, status succeeded');
SELECT is(runhub.record_sent(pg_temp.msg('owner@example.com'), 'w1'), 'sent', 'the digest (mail of no run) is recorded sent');
SELECT is((SELECT count(*)::int FROM runhub.business_events WHERE event_type ~ '_email_sent$' AND project_id = :'proj_a'), 1,
          '... and appends no event (it is not workflow mail)');
SELECT is(runhub.record_sent(-1, 'w1'), 'lease_lost', 'record_sent of an unknown message: lease_lost, as for any message not w1''s');

-- A worker whose lease was taken over records nothing: cy's first worker (w-other) reports after w2
-- reclaimed it. (It sent the mail, and w2 may send it again: a sender paused past its lease is the
-- one case of a mail twice. Recording it would let any sender login mark sent what it never held.)
SELECT pg_temp.row_of('cy@example.com') AS cy_row \gset
SELECT is(runhub.record_sent(pg_temp.msg('cy@example.com'), 'w-other', '250 ok'), 'lease_lost',
          'record_sent by the worker whose lease was taken over: lease_lost');
SELECT is(runhub.record_failure(pg_temp.msg('cy@example.com'), 'w-other', 451, '451 4.3.0 Temporary failure'), 'lease_lost',
          '... and its failure: lease_lost');
SELECT is(pg_temp.row_of('cy@example.com'), :'cy_row'::jsonb, '... neither changed the message: still w2''s');
SELECT is(runhub.record_sent(pg_temp.msg('cy@example.com'), 'w2', '250 ok'), 'sent', 'the lease holder''s record_sent: sent');
SELECT results_eq($$SELECT o.status, o.lease_owner, r.status FROM runhub.outbox o JOIN runhub.workflow_run_recipients r ON r.id = o.recipient_id
                     WHERE o.to_email = 'cy@example.com'$$,
                  $$VALUES ('sent', NULL::text, 'sent')$$, 'cy''s message and recipient are sent, the lease cleared');
SELECT is((SELECT count(*)::int FROM runhub.business_events WHERE idempotency_key = 'mail:' || :'cy_message_id'), 1,
          'cy''s sent event is there once');

-- Run A's last message: bob's, a hard bounce. Not over before; succeeded after.
SELECT pg_temp.due_at('bob@example.com', now()) \g /dev/null
SELECT jsonb_agg(m) AS bob_claim FROM runhub.claim_messages('w1') m \gset
SELECT runhub.start_messages('w1', ARRAY[pg_temp.msg('bob@example.com')]) \g /dev/null
SELECT is(jsonb_build_array((:'bob_claim'::jsonb) -> 0 -> 'toEmail', (:'bob_claim'::jsonb) -> 0 -> 'toName', jsonb_array_length(:'bob_claim')),
          '["bob@example.com", null, 1]'::jsonb, 'bob''s message is due now: w1 claims it, and only it');
SELECT is((:'bob_claim'::jsonb) -> 0 -> 'variables',
          jsonb_build_object('projectName', 'Sender shop', 'shopUrl', 'https://shop.example/', 'cartId', 'cart-bob',
                             'link', 'https://shop.example/checkout?wid=' || :'run_a' || '&cart=cart-bob'),
          'what is not known of bob (name, amount, currency) is left out of the variables, not null');
SELECT results_eq(format($$SELECT status, completed_at FROM runhub.workflow_runs WHERE id = %L$$, :'run_a'),
                  $$VALUES ('running', NULL::timestamptz)$$, 'run A is not over while bob''s message is being sent');
SELECT is(runhub.record_failure(pg_temp.msg('bob@example.com'), 'w1', 550, '550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown'),
          'failed', 'a 550 for bob: failed');
SELECT results_eq($$SELECT o.status, o.smtp_code, o.smtp_reply, o.last_error, o.lease_owner, o.lease_expires_at, o.sent_at, r.status
                      FROM runhub.outbox o JOIN runhub.workflow_run_recipients r ON r.id = o.recipient_id
                     WHERE o.to_email = 'bob@example.com'$$,
                  $$VALUES ('failed', 550, '550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown',
                            '550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown', NULL::text, NULL::timestamptz,
                            NULL::timestamptz, 'failed')$$,
                  'bob''s message failed with its code and reply, lease cleared; his recipient failed');
SELECT is((SELECT reason FROM runhub.suppressions WHERE project_id = :'proj_a' AND email = 'bob@example.com'), 'bounced',
          'the hard bounce suppressed bob''s address: bounced');
SELECT results_eq(format($$SELECT status, completed_at, result FROM runhub.workflow_runs WHERE id = %L$$, :'run_a'),
                  $$VALUES ('succeeded', now(), '{"totalRecipients": 4, "successful": 2, "failed": 1, "cancelled": 1,
                                                  "errorSummary": "1 x 550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown; 1 x suppressed"}'::jsonb)$$,
                  'run A''s last message is final: succeeded (2 sent), completed now, totals and an errorSummary of the replies');
SELECT is(runhub.get_run(:'proj_a', :owner, :'run_a') -> 'result', (SELECT result FROM runhub.workflow_runs WHERE id = :'run_a'),
          'get_run shows the final result (no live pending count)');
-- A later preview leaves bob out as suppressed: his failed recipient does not make his cart contacted.
SELECT runhub.ingest_event(:'proj_a', jsonb_build_object('type', 'checkout_started', 'idempotencyKey', 'bob-2',
           'occurredAt', runhub._iso(now() - interval '10 minutes'), 'customer', '{"email": "bob@example.com"}'::jsonb,
           'payload', '{"cartId": "cart-bob-2"}'::jsonb)) \g /dev/null
SELECT is((SELECT excluded_by FROM runhub._recipients(:'proj_a', 'recover_abandoned', '{}', now()) WHERE email = 'bob@example.com'),
          'suppressed', 'the recipient builder now excludes bob as suppressed');
SELECT runhub.preview(:'proj_a', :owner, 'recover_abandoned') AS pv_a \gset
SELECT is(jsonb_build_array((:'pv_a'::jsonb) -> 'count', (:'pv_a'::jsonb) -> 'excluded' -> 2 -> 'count'), '[0, 2]'::jsonb,
          'a later preview: nobody left; bob (bounced) and dee (complained) counted as suppressed');

-- ---------------------------------------------------------------------------------------------
-- record_failure: retries with backoff, permanent failures, bounces, lease_lost, bad codes.
SELECT pg_temp.recovery_run('Retry shop', '[
    {"email": "gil@example.com", "cart": "c-gil"}, {"email": "hal@example.com", "cart": "c-hal"},
    {"email": "ida@example.com", "cart": "c-ida"}, {"email": "jo@example.com", "cart": "c-jo"},
    {"email": "kay@example.com", "cart": "c-kay"}, {"email": "lou@example.com", "cart": "c-lou"},
    {"email": "max@example.com", "cart": "c-max"}, {"email": "ned@example.com", "cart": "c-ned"}]') AS run_c \gset
SELECT pg_temp.project_of(:'run_c') AS proj_c \gset
SELECT is(pg_temp.claim('wc'),
          '{gil@example.com,hal@example.com,ida@example.com,jo@example.com,kay@example.com,lou@example.com,max@example.com,ned@example.com}'::text[],
          'wc claims run C''s eight messages');

-- A 4xx is retried: queued again in 15-30 s (30 s with up to 50% jitter), lease cleared.
SELECT clock_timestamp() AS t0 \gset
SELECT is(runhub.record_failure(pg_temp.msg('gil@example.com'), 'wc', 421, '421 4.7.0 Try again later'), 'queued',
          'a 421 on the first attempt: queued for a retry');
SELECT results_eq(format($$SELECT o.status, o.attempts, o.smtp_code, o.last_error, o.lease_owner, o.lease_expires_at,
                                  o.next_attempt_at BETWEEN %L::timestamptz + interval '15 seconds' AND clock_timestamp() + interval '30 seconds',
                                  r.status
                             FROM runhub.outbox o JOIN runhub.workflow_run_recipients r ON r.id = o.recipient_id
                            WHERE o.to_email = 'gil@example.com'$$, :'t0'),
                  $$VALUES ('queued', 1, 421, '421 4.7.0 Try again later', NULL::text, NULL::timestamptz, true, 'queued')$$,
                  'queued, next attempt 15-30 s from now, lease cleared, the reply kept; the recipient still queued');
SELECT is(pg_temp.claim('wc'), '{}'::text[], 'gil''s retry is not due yet');
-- The backoff doubles with each attempt: 30-60 s after the second.
SELECT pg_temp.due_at('gil@example.com', now()) \g /dev/null
SELECT is(pg_temp.claim('wc'), '{gil@example.com}'::text[], 'due again: claimed, attempt 2');
SELECT clock_timestamp() AS t0 \gset
SELECT is(runhub.record_failure(pg_temp.msg('gil@example.com'), 'wc', 450, 'Mailbox busy'), 'queued', 'a 450 on attempt 2: queued');
SELECT results_eq(format($$SELECT attempts, last_error,
                                  next_attempt_at BETWEEN %L::timestamptz + interval '30 seconds' AND clock_timestamp() + interval '60 seconds'
                             FROM runhub.outbox WHERE to_email = 'gil@example.com'$$, :'t0'),
                  $$VALUES (2, '450 Mailbox busy', true)$$,
                  'next attempt 30-60 s away; a reply without its code is stored with it');
-- ... 960-1920 s after the seventh; the eighth failure is the last.
UPDATE runhub.outbox SET attempts = 6, next_attempt_at = now() WHERE to_email = 'gil@example.com';
SELECT is(pg_temp.claim('wc'), '{gil@example.com}'::text[], 'claimed for attempt 7');
SELECT clock_timestamp() AS t0 \gset
SELECT is(runhub.record_failure(pg_temp.msg('gil@example.com'), 'wc', 421, '421 4.7.0 Try again later'), 'queued', 'a 421 on attempt 7: queued');
SELECT ok((SELECT next_attempt_at BETWEEN :'t0'::timestamptz + interval '960 seconds' AND clock_timestamp() + interval '1920 seconds'
             FROM runhub.outbox WHERE to_email = 'gil@example.com'),
          'next attempt 16-32 minutes away');
SELECT pg_temp.due_at('gil@example.com', now()) \g /dev/null
SELECT is(pg_temp.claim('wc'), '{gil@example.com}'::text[], 'claimed for attempt 8');
SELECT is(runhub.record_failure(pg_temp.msg('gil@example.com'), 'wc', 421, '421 4.7.0 Try again later'), 'failed',
          'a 421 on attempt 8: failed, no more retries');
SELECT results_eq($$SELECT o.status, o.attempts, o.lease_owner, r.status
                      FROM runhub.outbox o JOIN runhub.workflow_run_recipients r ON r.id = o.recipient_id WHERE o.to_email = 'gil@example.com'$$,
                  $$VALUES ('failed', 8, NULL::text, 'failed')$$, 'gil''s message and recipient failed after 8 attempts');
SELECT is_empty(format($$SELECT 1 FROM runhub.suppressions WHERE project_id = %L AND email = 'gil@example.com'$$, :'proj_c'),
                'a transient failure, however often, suppresses nothing');

-- No answer at all (the connection failed): retried like a 4xx.
SELECT clock_timestamp() AS t0 \gset
SELECT is(runhub.record_failure(pg_temp.msg('lou@example.com'), 'wc', NULL, NULL), 'queued', 'no SMTP answer: queued for a retry');
SELECT results_eq(format($$SELECT status, smtp_code, last_error, lease_owner,
                                  next_attempt_at BETWEEN %L::timestamptz + interval '15 seconds' AND clock_timestamp() + interval '30 seconds'
                             FROM runhub.outbox WHERE to_email = 'lou@example.com'$$, :'t0'),
                  $$VALUES ('queued', NULL::int, 'no reply', NULL::text, true)$$,
                  'queued in 15-30 s, last_error "no reply"');
SELECT pg_temp.due_at('lou@example.com', now() + interval '1 day') \g /dev/null

-- A 5xx fails at once; only a hard bounce suppresses the address.
SELECT is(runhub.record_failure(pg_temp.msg('hal@example.com'), 'wc', 554, '554 5.7.1 Message rejected as spam'), 'failed',
          'a 554 (5.7.1, a policy rejection) on the first attempt: failed at once');
SELECT is(runhub.record_failure(pg_temp.msg('ida@example.com'), 'wc', 551, '551 User not local; please try <ida@elsewhere.example>'), 'failed',
          'a 551: failed');
SELECT is(runhub.record_failure(pg_temp.msg('jo@example.com'), 'wc', 553, '553 Mailbox name not allowed'), 'failed', 'a 553: failed');
SELECT is(runhub.record_failure(pg_temp.msg('kay@example.com'), 'wc', 554, '554 5.1.2 Bad destination system address'), 'failed',
          'a 554 with the enhanced status 5.1.2: failed');
SELECT results_eq(format($$SELECT o.to_email, o.status, o.attempts, o.smtp_code, r.status, s.reason
                             FROM runhub.outbox o JOIN runhub.workflow_run_recipients r ON r.id = o.recipient_id
                             LEFT JOIN runhub.suppressions s ON s.project_id = %L AND s.email = o.to_email
                            WHERE o.to_email IN ('hal@example.com', 'ida@example.com', 'jo@example.com', 'kay@example.com')
                            ORDER BY o.to_email$$, :'proj_c'),
                  $$VALUES ('hal@example.com', 'failed', 1, 554, 'failed', NULL::text),
                           ('ida@example.com', 'failed', 1, 551, 'failed', 'bounced'),
                           ('jo@example.com', 'failed', 1, 553, 'failed', 'bounced'),
                           ('kay@example.com', 'failed', 1, 554, 'failed', 'bounced')$$,
                  '5xx: failed after one attempt; 551, 553 and an enhanced 5.1.x suppress the address as bounced, a 554 5.7.1 does not');

-- A failure reported by a worker that does not hold the lease changes nothing.
SELECT pg_temp.row_of('max@example.com') AS max_row \gset
SELECT is(ARRAY(SELECT v.w || ' ' || v.code || ' -> ' || runhub.record_failure(pg_temp.msg('max@example.com'), v.w, v.code, v.reply)
                  FROM (VALUES ('wx', 421, '421 busy'), ('wx', 550, '550 5.1.1 User unknown'),
                               ('WC', 421, '421 busy')) v(w, code, reply)),
          ARRAY['wx 421 -> lease_lost', 'wx 550 -> lease_lost', 'WC 421 -> lease_lost'],
          'a 4xx or 5xx from another worker (or WC for wc): lease_lost');
SELECT is(pg_temp.refusal(format($$SELECT runhub.record_failure(%s, NULL, 550, '550 5.1.1 User unknown')$$, pg_temp.msg('max@example.com'))),
          'PT400 common.invalidInput worker', 'a 5xx from no worker at all: PT400 common.invalidInput (worker)');
SELECT is(pg_temp.row_of('max@example.com'), :'max_row'::jsonb, '... and max''s message is unchanged');
SELECT is_empty(format($$SELECT 1 FROM runhub.suppressions WHERE project_id = %L AND email = 'max@example.com'$$, :'proj_c'),
                '... and max is not suppressed');
SELECT is(runhub.record_failure(pg_temp.msg('lou@example.com'), 'wc', 421, '421 busy'), 'lease_lost',
          'a failure for a queued message (lou''s, waiting for its retry): lease_lost');
SELECT is(runhub.record_failure(pg_temp.msg('gil@example.com'), 'wc', 421, '421 busy'), 'lease_lost',
          'a failure for a failed message: lease_lost');
SELECT is(runhub.record_failure(-1, 'wc', 421, '421 busy'), 'lease_lost', 'a failure for an unknown message: lease_lost');
-- smtpCode outside 400-599 is refused.
SELECT is(ARRAY(SELECT v.code || ' -> ' || pg_temp.refusal(format('SELECT runhub.record_failure(%s, %L, %s, %L)',
                                                                    pg_temp.msg('max@example.com'), 'wc', v.code, v.code || ' x'))
                  FROM unnest(ARRAY[250, 399, 600, 0, -421, 2147483647]) v(code)
                 WHERE pg_temp.refusal(format('SELECT runhub.record_failure(%s, %L, %s, %L)',
                                              pg_temp.msg('max@example.com'), 'wc', v.code, v.code || ' x'))
                       IS DISTINCT FROM 'PT400 common.invalidInput smtpCode'),
          '{}'::text[], 'record_failure with a code outside 400-599 (250, 399, 600, 0, -421, 2^31-1): PT400 smtpCode');
SELECT is(ARRAY[runhub.record_failure(-1, 'wc', 400, '400 x'), runhub.record_failure(-1, 'wc', 599, '599 x')], '{lease_lost,lease_lost}',
          'codes 400 and 599, the range''s ends, are accepted (an unknown message: lease_lost)');
SELECT is(pg_temp.row_of('max@example.com'), :'max_row'::jsonb, '... and max''s message is still unchanged');

-- A policy rejection that quotes an IP address is not a bounce: "5.1.2.3" is an address, not an
-- enhanced status code (RFC 3463 puts that first, "5.7.1" here).
SELECT is(runhub.record_failure(pg_temp.msg('ned@example.com'), 'wc', 554, '554 5.7.1 Service unavailable; client host 5.1.2.3 blocked'),
          'failed', 'a 554 5.7.1 naming client host 5.1.2.3: failed');
SELECT is_empty(format($$SELECT reason FROM runhub.suppressions WHERE project_id = %L AND email = 'ned@example.com'$$, :'proj_c'),
                '... but not suppressed: 5.1.2.3 is an IP address in the text, not an enhanced status 5.1.x');

-- Run C ends with its last final message, not before.
SELECT results_eq(format($$SELECT status, completed_at FROM runhub.workflow_runs WHERE id = %L$$, :'run_c'),
                  $$VALUES ('running', NULL::timestamptz)$$, 'run C is not over while lou waits for a retry and max is being sent');
SELECT is(runhub.record_sent(pg_temp.msg('max@example.com'), 'wc'), 'sent', 'max''s message is sent');
SELECT results_eq(format($$SELECT status, completed_at FROM runhub.workflow_runs WHERE id = %L$$, :'run_c'),
                  $$VALUES ('running', NULL::timestamptz)$$, 'run C is still not over: lou''s message is queued');
SELECT pg_temp.due_at('lou@example.com', now()) \g /dev/null
SELECT is(pg_temp.claim('wc'), '{lou@example.com}'::text[], 'lou''s retry is claimed');
SELECT is(runhub.record_sent(pg_temp.msg('lou@example.com'), 'wc'), 'sent', 'lou''s message is sent on its second attempt');
SELECT results_eq(format($$SELECT status, completed_at, result - 'errorSummary' FROM runhub.workflow_runs WHERE id = %L$$, :'run_c'),
                  $$VALUES ('succeeded', now(), '{"totalRecipients": 8, "successful": 2, "failed": 6, "cancelled": 0}'::jsonb)$$,
                  'run C: succeeded (2 of 8 sent), completed now');
SELECT is((SELECT result ->> 'errorSummary' FROM runhub.workflow_runs WHERE id = :'run_c'),
          '1 x 421 4.7.0 Try again later; 1 x 551 User not local; please try <ida@elsewhere.example>; 1 x 553 Mailbox name not allowed',
          'errorSummary: the three most common replies (ties in text order), each with its count');

-- A run none of whose messages went out fails; errorSummary counts replies.
SELECT pg_temp.recovery_run('Bounce shop', '[{"email": "oda@example.com", "cart": "c-oda"}, {"email": "pam@example.com", "cart": "c-pam"},
                                             {"email": "rex@example.com", "cart": "c-rex"}]') AS run_d \gset
SELECT is(pg_temp.claim('wd'), '{oda@example.com,pam@example.com,rex@example.com}'::text[], 'wd claims run D''s three messages');
SELECT is(ARRAY[runhub.record_failure(pg_temp.msg('oda@example.com'), 'wd', 550, '550 5.1.1 User unknown'),
                runhub.record_failure(pg_temp.msg('pam@example.com'), 'wd', 554, '554 5.7.1 Rejected')],
          '{failed,failed}', 'two of them fail');
SELECT results_eq(format($$SELECT status, completed_at FROM runhub.workflow_runs WHERE id = %L$$, :'run_d'),
                  $$VALUES ('running', NULL::timestamptz)$$, 'run D is not over while rex''s message is being sent');
SELECT is(runhub.record_failure(pg_temp.msg('rex@example.com'), 'wd', 550, '5.1.1 User unknown'), 'failed',
          'the last one fails too (its reply given without the code)');
SELECT results_eq(format($$SELECT status, completed_at, result FROM runhub.workflow_runs WHERE id = %L$$, :'run_d'),
                  $$VALUES ('failed', now(), '{"totalRecipients": 3, "successful": 0, "failed": 3, "cancelled": 0,
                                               "errorSummary": "2 x 550 5.1.1 User unknown; 1 x 554 5.7.1 Rejected"}'::jsonb)$$,
                  'no message sent: run D failed, with "2 x 550 5.1.1 User unknown; 1 x 554 5.7.1 Rejected"');
SELECT is((SELECT last_error FROM runhub.outbox WHERE to_email = 'rex@example.com'), '550 5.1.1 User unknown',
          'a reply given without its code is recorded with it (and so counts with the same reply given with it)');
SELECT set_eq(format($$SELECT email FROM runhub.suppressions WHERE project_id = %L AND reason = 'bounced'$$, pg_temp.project_of(:'run_d')),
              ARRAY['oda@example.com', 'rex@example.com'], 'the two 550s suppressed their addresses, the 554 5.7.1 did not');

-- ---------------------------------------------------------------------------------------------
-- A cancelled run stays cancelled; the message that was being sent settles its counts.
SELECT pg_temp.recovery_run('Cancel shop', '[{"email": "sia@example.com", "cart": "c-sia"}, {"email": "tod@example.com", "cart": "c-tod"}]') AS run_e \gset
SELECT pg_temp.project_of(:'run_e') AS proj_e \gset
SELECT pg_temp.due_at('tod@example.com', now() + interval '1 day') \g /dev/null
SELECT is(pg_temp.claim('we'), '{sia@example.com}'::text[], 'we claims sia''s message');
SELECT is(runhub.cancel_run(:'proj_e', :owner, :'run_e') -> 'result',
          '{"totalRecipients": 2, "successful": 0, "failed": 0, "pending": 1, "cancelled": 1, "errorSummary": "Cancelled by owner"}'::jsonb,
          'the owner cancels run E: tod''s queued message is cancelled, sia''s is being sent');
SELECT is(runhub.record_sent(pg_temp.msg('sia@example.com'), 'we'), 'sent', 'sia''s message goes out after all: sent');
SELECT results_eq(format($$SELECT status, completed_at, cancel_requested_at, result FROM runhub.workflow_runs WHERE id = %L$$, :'run_e'),
                  $$VALUES ('cancelled', now(), now(),
                            '{"totalRecipients": 2, "successful": 1, "failed": 0, "cancelled": 1, "errorSummary": "Cancelled by owner"}'::jsonb)$$,
                  'run E stays cancelled; its result is settled: 1 sent, 1 cancelled, no pending, still "Cancelled by owner"');
SELECT is((SELECT count(*)::int FROM pg_temp.sent_events(:'proj_e')), 1, 'sia''s sent event is appended (the mail is out)');

-- ---------------------------------------------------------------------------------------------
-- Every message of a run cancelled by suppression: the run ends with the minute sweep.
SELECT pg_temp.recovery_run('Sweep shop', '[{"email": "uli@example.com", "cart": "c-uli"}, {"email": "val@example.com", "cart": "c-val"}]') AS run_f \gset
SELECT pg_temp.project_of(:'run_f') AS proj_f \gset
INSERT INTO runhub.suppressions (project_id, email, reason) VALUES (:'proj_f', 'uli@example.com', 'manual'), (:'proj_f', 'val@example.com', 'complained');
SELECT is(pg_temp.claim('wf'), '{}'::text[], 'both of run F''s addresses were suppressed since: nothing is claimed');
SELECT results_eq(format($$SELECT o.to_email, o.status, r.status FROM runhub.outbox o JOIN runhub.workflow_run_recipients r ON r.id = o.recipient_id
                            WHERE o.run_id = %L ORDER BY o.to_email$$, :'run_f'),
                  $$VALUES ('uli@example.com', 'cancelled', 'cancelled'), ('val@example.com', 'cancelled', 'cancelled')$$,
                  'both messages and recipients are cancelled');
SELECT results_eq(format($$SELECT status, completed_at FROM runhub.workflow_runs WHERE id = %L$$, :'run_f'),
                  $$VALUES ('running', NULL::timestamptz)$$, 'run F is still running (the claim does not end runs)');
SELECT is(runhub._complete_done_runs(), 1, '_complete_done_runs ends one run');
SELECT results_eq(format($$SELECT status, completed_at, result FROM runhub.workflow_runs WHERE id = %L$$, :'run_f'),
                  $$VALUES ('failed', now(), '{"totalRecipients": 2, "successful": 0, "failed": 0, "cancelled": 2, "errorSummary": "2 x suppressed"}'::jsonb)$$,
                  'run F: failed (nothing sent), completed now, "2 x suppressed"');
SELECT is(runhub._complete_done_runs(), 0, 'a second sweep finds nothing to end');

-- After cancel_run, a message that was being sent may still go out, but is not tried again: a
-- deferral (4xx) or a release must not queue it for another attempt, since the run was cancelled.
SELECT pg_temp.recovery_run('Cancel retry shop', '[{"email": "ada@example.com", "cart": "c-ada"}, {"email": "ben@example.com", "cart": "c-ben"}]') AS run_e2 \gset
SELECT is(pg_temp.claim('wk'), '{ada@example.com,ben@example.com}'::text[], 'wk claims run E2''s two messages');
SELECT is(runhub.cancel_run(pg_temp.project_of(:'run_e2'), :owner, :'run_e2') ->> 'status', 'cancelled',
          'the owner cancels run E2 while both are being sent');
SELECT runhub.record_failure(pg_temp.msg('ada@example.com'), 'wk', 421, '421 4.7.0 Try again later') \g /dev/null
UPDATE runhub.outbox SET next_attempt_at = now() WHERE to_email = 'ada@example.com' AND status = 'queued';
SELECT is(pg_temp.claim('wk2'), '{}'::text[],
          'a 421 for ada after the run was cancelled: her message is not claimed again (no retry for a cancelled run)');
SELECT runhub.release_messages('wk', ARRAY[pg_temp.msg('ben@example.com')]) \g /dev/null
SELECT is(pg_temp.claim('wk3'), '{}'::text[],
          'ben''s message released by wk after the run was cancelled: it is not claimed again');
UPDATE runhub.outbox SET next_attempt_at = now() + interval '1 day' WHERE run_id = :'run_e2' AND status = 'queued';
UPDATE runhub.outbox SET lease_expires_at = now() + interval '1 day' WHERE run_id = :'run_e2' AND status = 'sending';

-- A cancelled run whose message in flight is cancelled by a claim (its worker died, and the address
-- was suppressed meanwhile) settles its counts too.
SELECT pg_temp.recovery_run('Cancel sweep shop', '[{"email": "cal@example.com", "cart": "c-cal"}, {"email": "dan@example.com", "cart": "c-dan"}]') AS run_e3 \gset
SELECT pg_temp.project_of(:'run_e3') AS proj_e3 \gset
SELECT is(pg_temp.claim('wl'), '{cal@example.com,dan@example.com}'::text[], 'wl claims run E3''s two messages');
SELECT is(runhub.record_sent(pg_temp.msg('dan@example.com'), 'wl'), 'sent', 'dan''s message is sent');
SELECT is(runhub.cancel_run(:'proj_e3', :owner, :'run_e3') -> 'result' -> 'pending', '1'::jsonb,
          'the owner cancels run E3 while cal''s message is being sent');
SELECT runhub.suppress(:'proj_e3', :owner, 'cal@example.com', 'unsubscribed') \g /dev/null
UPDATE runhub.outbox SET lease_expires_at = now() - interval '1 second' WHERE to_email = 'cal@example.com';
SELECT is(pg_temp.claim('wl2'), '{}'::text[], 'wl died; cal unsubscribed meanwhile: her message is cancelled, not reclaimed');
SELECT runhub._complete_done_runs() \g /dev/null
SELECT results_eq(format($$SELECT status, result FROM runhub.workflow_runs WHERE id = %L$$, :'run_e3'),
                  $$VALUES ('cancelled', '{"totalRecipients": 2, "successful": 1, "failed": 0, "cancelled": 1,
                                          "errorSummary": "Cancelled by owner"}'::jsonb)$$,
                  'run E3 stays cancelled with settled counts (after the claim and the minute sweep): no message is pending');

-- ---------------------------------------------------------------------------------------------
-- heartbeat_messages and release_messages.
SELECT pg_temp.recovery_run('Lease shop', '[{"email": "wyn@example.com", "cart": "c-wyn"}, {"email": "xia@example.com", "cart": "c-xia"}]') AS run_g \gset
SELECT is(cardinality(pg_temp.claim_only('wg', 1)), 1, 'a claim of at most one message gets one');
SELECT is(cardinality(pg_temp.claim_only('wg', 1)), 1, 'the next claim gets the other');
SELECT results_eq($$SELECT to_email, status, attempts, lease_owner FROM runhub.outbox WHERE to_email IN ('wyn@example.com', 'xia@example.com') ORDER BY 1$$,
                  $$VALUES ('wyn@example.com', 'sending', 0, 'wg'), ('xia@example.com', 'sending', 0, 'wg')$$,
                  'wg holds both messages (in its local queue: not started, no attempt)');
SELECT ARRAY[pg_temp.msg('wyn@example.com'), pg_temp.msg('xia@example.com')] AS g_ids \gset
SELECT pg_temp.row_of('wyn@example.com') AS wyn_row \gset
SELECT pg_temp.row_of('xia@example.com') AS xia_row \gset
SELECT is(runhub.heartbeat_messages('wx', :'g_ids'), 0, 'a heartbeat by another worker holds nothing');
SELECT is(runhub.release_messages('wx', :'g_ids'), 0, 'a release by another worker releases nothing');
SELECT is(ARRAY[pg_temp.row_of('wyn@example.com'), pg_temp.row_of('xia@example.com')], ARRAY[:'wyn_row'::jsonb, :'xia_row'::jsonb],
          '... and neither changed the messages');
SELECT is(ARRAY(SELECT v.lease || ' -> ' || pg_temp.refusal(format('SELECT runhub.heartbeat_messages(%L, %L, %s)', 'wg', :'g_ids', v.lease))
                  FROM unnest(ARRAY['4', '3601', '0', '-5', 'NULL']) v(lease)
                 WHERE pg_temp.refusal(format('SELECT runhub.heartbeat_messages(%L, %L, %s)', 'wg', :'g_ids', v.lease))
                       IS DISTINCT FROM 'PT400 common.invalidInput leaseSeconds'),
          '{}'::text[], 'heartbeat_messages with a lease outside 5-3600 seconds (or null): PT400 leaseSeconds');
SELECT is(ARRAY[pg_temp.row_of('wyn@example.com'), pg_temp.row_of('xia@example.com')], ARRAY[:'wyn_row'::jsonb, :'xia_row'::jsonb],
          '... and the refused heartbeats changed nothing');
SELECT is(runhub.heartbeat_messages('wg', :'g_ids', 3600), 2, 'the owner''s heartbeat holds both');
SELECT ok((SELECT bool_and(lease_expires_at BETWEEN now() + interval '3600 seconds' AND clock_timestamp() + interval '3600 seconds')
             FROM runhub.outbox WHERE id = ANY (:'g_ids'::bigint[])),
          '... and extends both leases to 3600 seconds from now');
SELECT is(ARRAY[pg_temp.refusal(format('SELECT runhub.heartbeat_messages(%L, %L, 5)', 'wx', :'g_ids')),
                pg_temp.refusal(format('SELECT runhub.heartbeat_messages(%L, %L, 3600)', 'wx', :'g_ids'))],
          '{no error,no error}', 'leases of 5 and 3600 seconds are accepted');
UPDATE runhub.outbox SET lease_expires_at = now() - interval '1 second' WHERE to_email = 'xia@example.com';
SELECT pg_temp.row_of('xia@example.com') AS xia_row \gset
SELECT is(runhub.heartbeat_messages('wg', :'g_ids'), 1, 'once xia''s lease expired, the owner''s heartbeat holds only wyn''s');
SELECT is(pg_temp.row_of('xia@example.com'), :'xia_row'::jsonb, '... and xia''s expired lease is not extended');
SELECT cmp_ok((SELECT lease_expires_at FROM runhub.outbox WHERE to_email = 'wyn@example.com'), '>', now() + interval '119 seconds',
              '... wyn''s is (by the default 120 seconds)');
SELECT is(runhub.heartbeat_messages('wg', NULL), 0, 'a heartbeat of no ids holds nothing');

SELECT is(runhub.release_messages('wg', ARRAY[pg_temp.msg('xia@example.com')]), 0,
          'xia''s lapsed lease: not wg''s to release any more (a claim takes it)');
SELECT is(pg_temp.row_of('xia@example.com'), :'xia_row'::jsonb, '... and the message is as it was');
UPDATE runhub.outbox SET lease_expires_at = clock_timestamp() + interval '1 minute' WHERE to_email = 'xia@example.com';
SELECT is(runhub.release_messages('wg', :'g_ids'), 2, 'wg releases both messages (shutting down), xia''s lease live again');
SELECT results_eq($$SELECT to_email, status, attempts, lease_owner, lease_expires_at, next_attempt_at BETWEEN now() AND clock_timestamp()
                      FROM runhub.outbox WHERE to_email IN ('wyn@example.com', 'xia@example.com') ORDER BY 1$$,
                  $$VALUES ('wyn@example.com', 'queued', 0, NULL::text, NULL::timestamptz, true),
                           ('xia@example.com', 'queued', 0, NULL::text, NULL::timestamptz, true)$$,
                  'released: queued, due now, lease cleared, the attempt not counted');
SELECT is(pg_temp.claim('wg2'), '{wyn@example.com,xia@example.com}'::text[], 'the released messages are claimed again at once');
SELECT is((SELECT array_agg(attempts) FROM runhub.outbox WHERE id = ANY (:'g_ids'::bigint[])), '{1,1}', '... as their first attempt');
SELECT is(runhub.record_sent(pg_temp.msg('wyn@example.com'), 'wg2'), 'sent', 'wyn''s message is sent');
SELECT is(runhub.release_messages('wg2', :'g_ids'), 1, 'releasing both: only xia''s, still being sent, is released');
SELECT is((SELECT status FROM runhub.outbox WHERE to_email = 'wyn@example.com'), 'sent', 'wyn''s message stays sent');
SELECT pg_temp.due_at('xia@example.com', now() + interval '1 day') \g /dev/null

-- ---------------------------------------------------------------------------------------------
-- Unsubscribe links: unsubscribe(unsubscribe_token(project, email)).
SELECT pg_temp.recovery_run('Unsub shop', '[{"email": "yan@example.com", "cart": "c-yan"}, {"email": "zoe@example.com", "cart": "c-zoe"}]') AS run_h \gset
SELECT pg_temp.project_of(:'run_h') AS proj_h \gset
SELECT runhub.unsubscribe_token(:'proj_h', 'yan@example.com') AS tok \gset
SELECT matches(:'tok'::text, '^v2\.[1-9][0-9]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{24}$',
               'a token is v2.<key id>.<payload>.<signature>, base64url without padding');
SELECT is(split_part(:'tok', '.', 2)::int, (SELECT max(kid) FROM runhub.unsubscribe_keys WHERE revoked_at IS NULL),
          'it names the newest key');
SELECT is(ARRAY[runhub.unsubscribe_token(:'proj_h', 'yan@example.com'), runhub.unsubscribe_token(:'proj_h', 'Yan@Example.COM')],
          ARRAY[:'tok', :'tok']::text[], 'the same address gets the same token, whatever its case');
SELECT is(ARRAY[runhub.unsubscribe_token(:'proj_a', 'yan@example.com') <> :'tok', runhub.unsubscribe_token(:'proj_h', 'zoe@example.com') <> :'tok'],
          '{t,t}'::boolean[], 'another project or another address gets another token');

-- Invalid tokens: PT400 mail.invalidUnsubscribeToken, and nothing written.
CREATE FUNCTION pg_temp.unsub_sql(p_token text)
RETURNS text LANGUAGE sql
AS $$ SELECT format('SELECT runhub.unsubscribe(%L)', p_token) $$;
SELECT split_part(:'tok', '.', 2) AS tok_kid, 'v2.' || split_part(:'tok', '.', 2) AS tok_head,
       split_part(:'tok', '.', 3) AS tok_payload, split_part(:'tok', '.', 4) AS tok_sig \gset
SELECT is(ARRAY(SELECT v.label || ' -> ' || pg_temp.refusal(pg_temp.unsub_sql(v.token))
                  FROM (VALUES
                      ('forged signature', :'tok_head' || '.' || :'tok_payload' || '.' || left(:'tok_sig', -1)
                                           || CASE WHEN right(:'tok_sig', 1) = 'A' THEN 'B' ELSE 'A' END),
                      ('truncated by one', left(:'tok', -1)),
                      ('truncated to its payload', :'tok_head' || '.' || :'tok_payload'),
                      ('truncated to 4 bytes of signature', :'tok_head' || '.' || :'tok_payload' || '.' || left(:'tok_sig', 6)),
                      ('no signature', :'tok_head' || '.' || :'tok_payload' || '.'),
                      ('zoe''s address under yan''s signature',
                          :'tok_head' || '.' || split_part(runhub.unsubscribe_token(:'proj_h', 'zoe@example.com'), '.', 3) || '.' || :'tok_sig'),
                      ('yan under another project, with this project''s signature',
                          :'tok_head' || '.' || split_part(runhub.unsubscribe_token(:'proj_a', 'yan@example.com'), '.', 3) || '.' || :'tok_sig'),
                      ('signed with another secret',
                          runhub._sign_unsubscribe(:'tok_kid'::int, decode(repeat('ab', 32), 'hex'), :'proj_h', 'yan@example.com')),
                      ('signed with the right secret under a key id that does not exist',
                          runhub._sign_unsubscribe(:'tok_kid'::int + 1000, (SELECT secret FROM runhub.unsubscribe_keys WHERE kid = :'tok_kid'::int),
                                                   :'proj_h', 'yan@example.com')),
                      ('signed for a project that does not exist',
                          runhub.unsubscribe_token('eeeeeeee-0000-4000-8000-0000000000ff', 'yan@example.com')),
                      ('extra characters after each dot', replace(:'tok', '.', '.!!')),
                      ('padding', :'tok' || '='),
                      ('a trailing newline', :'tok' || E'\n'),
                      ('a leading space', ' ' || :'tok'),
                      ('the key id with a leading zero', 'v2.0' || substr(:'tok', 4)),
                      ('no key id', 'v2.' || :'tok_payload' || '.' || :'tok_sig'),
                      ('as a v1 token', 'v1.' || :'tok_payload' || '.' || :'tok_sig'),
                      ('version v3', 'v3' || substr(:'tok', 3)),
                      ('an extra part', :'tok' || '.x'),
                      ('not base64', :'tok_head' || '.' || :'tok_payload' || '.' || '!!!!'),
                      ('not ASCII', 'v2.1.é.é'),
                      ('garbage', 'unsubscribe me'),
                      ('4000 characters', 'v2.1.' || repeat('A', 3995)),
                      ('empty', ''),
                      ('null', NULL)) v(label, token)
                 WHERE pg_temp.refusal(pg_temp.unsub_sql(v.token)) IS DISTINCT FROM 'PT400 mail.invalidUnsubscribeToken'),
          '{}'::text[], 'forged, truncated, re-signed for another address or project, other-secret, unknown-key, altered, malformed, empty and null tokens: PT400 mail.invalidUnsubscribeToken');
SELECT is(pg_temp.caught(pg_temp.unsub_sql('v1.x.y')) - 'sqlstate',
          '{"message": "mail.invalidUnsubscribeToken", "detail": "{}", "hint": "This unsubscribe link is not valid"}'::jsonb,
          'the refusal has the catalog''s hint and no params');
SELECT is_empty(format($$SELECT email FROM runhub.suppressions WHERE project_id = %L OR (project_id = %L AND email = 'yan@example.com')
                          UNION ALL SELECT to_email FROM runhub.outbox WHERE run_id = %L AND status <> 'queued'$$,
                       :'proj_h', :'proj_a', :'run_h'),
                'the refused tokens suppressed nothing (in this project, or the one of the re-signed token) and cancelled no message');

-- A valid token: the address is suppressed as unsubscribed, its queued message cancelled.
SELECT lives_ok(pg_temp.unsub_sql(:'tok'), 'unsubscribe with yan''s token');
SELECT results_eq(format($$SELECT email, reason FROM runhub.suppressions WHERE project_id = %L$$, :'proj_h'),
                  $$VALUES ('yan@example.com', 'unsubscribed')$$, 'yan is suppressed: unsubscribed');
SELECT results_eq(format($$SELECT o.to_email, o.status, o.last_error, r.status FROM runhub.outbox o
                             JOIN runhub.workflow_run_recipients r ON r.id = o.recipient_id WHERE o.run_id = %L ORDER BY 1$$, :'run_h'),
                  $$VALUES ('yan@example.com', 'cancelled', 'suppressed: unsubscribed', 'cancelled'),
                           ('zoe@example.com', 'queued', NULL, 'queued')$$,
                  'yan''s queued message and recipient are cancelled; zoe''s are not');
SELECT lives_ok(pg_temp.unsub_sql(:'tok'), 'the same link again');
SELECT results_eq(format($$SELECT email, reason FROM runhub.suppressions WHERE project_id = %L$$, :'proj_h'),
                  $$VALUES ('yan@example.com', 'unsubscribed')$$, '... is idempotent: still one suppression');
-- The token a claim hands out works too.
SELECT lives_ok(pg_temp.unsub_sql((SELECT m ->> 'unsubscribeToken' FROM runhub.claim_messages('wh') m)),
                'zoe''s message is claimed, and the token it carries unsubscribes her');
SELECT results_eq(format($$SELECT email, reason FROM runhub.suppressions WHERE project_id = %L ORDER BY email$$, :'proj_h'),
                  $$VALUES ('yan@example.com', 'unsubscribed'), ('zoe@example.com', 'unsubscribed')$$,
                  'zoe is suppressed: unsubscribed');
SELECT is((SELECT status FROM runhub.outbox WHERE to_email = 'zoe@example.com'), 'sending',
          'her message, already being sent, runs its course');

-- Key rotation: a new key signs, older ones verify until revoked (v1 tokens: tests/db/test_unsubscribe_keys.py).
SELECT is(runhub.rotate_unsubscribe_key() - 'activeKeyIds', jsonb_build_object('keyId', :'tok_kid'::int + 1, 'revokedKeyIds', '[]'::jsonb),
          'a rotation adds the next key and revokes nothing');
SELECT is(split_part(runhub.unsubscribe_token(:'proj_h', 'yan@example.com'), '.', 2)::int, :'tok_kid'::int + 1, 'new tokens name the new key');
SELECT lives_ok(pg_temp.unsub_sql(:'tok'), 'a token of the previous key still unsubscribes');
SELECT to_jsonb(array_agg(kid ORDER BY kid)) AS keys_before FROM runhub.unsubscribe_keys WHERE revoked_at IS NULL \gset
SELECT is(runhub.rotate_unsubscribe_key(true) - 'keyId', jsonb_build_object('revokedKeyIds', :'keys_before'::jsonb, 'activeKeyIds', jsonb_build_array(:'tok_kid'::int + 2)),
          'a rotation with p_revoke_previous revokes every older key: only the new one verifies');
SELECT is(pg_temp.refusal(pg_temp.unsub_sql(:'tok')), 'PT400 mail.invalidUnsubscribeToken', 'a token of a revoked key is refused');
SELECT lives_ok(pg_temp.unsub_sql(runhub.unsubscribe_token(:'proj_h', 'yan@example.com')), 'a token of the new key unsubscribes');

-- ---------------------------------------------------------------------------------------------
-- record_sent_many: a batch of outcomes in one call, with record_sent's rules for each.
SELECT pg_temp.recovery_run('Batch shop', '[{"email": "kai@example.com", "cart": "cart-kai", "amountCents": 900},
                                            {"email": "lea@example.com", "cart": "cart-lea"},
                                            {"email": "mo@example.com", "cart": "cart-mo"}]') AS run_m \gset
SELECT pg_temp.project_of(:'run_m') AS proj_m \gset
-- Bad batches are refused whole: nothing is recorded.
SELECT is(ARRAY(SELECT v.args || ' -> ' || pg_temp.refusal('SELECT * FROM runhub.record_sent_many(''wm'', ' || v.args || ')')
                  FROM (VALUES (format('ARRAY[%s, %s], ARRAY[''250 a'']', pg_temp.msg('kai@example.com'), pg_temp.msg('lea@example.com'))),
                               (format('ARRAY[%s, NULL], ARRAY[''250 a'', ''250 b'']', pg_temp.msg('kai@example.com'))),
                               ('NULL, ARRAY[''250'']'), (format('ARRAY[%s], NULL', pg_temp.msg('kai@example.com'))),
                               (format('array_fill(%s::bigint, ARRAY[1001]), array_fill(''250''::text, ARRAY[1001])',
                                       pg_temp.msg('kai@example.com')))) v(args)
                 WHERE pg_temp.refusal('SELECT * FROM runhub.record_sent_many(''wm'', ' || v.args || ')')
                       IS DISTINCT FROM 'PT400 common.invalidInput ids'),
          '{}'::text[], 'record_sent_many with ids and replies of different lengths, a null id, null arrays or over 1000 ids: PT400 ids');
SELECT is((SELECT array_agg(status ORDER BY to_email) FROM runhub.outbox WHERE run_id = :'run_m'), '{queued,queued,queued}',
          '... and the refused batches recorded nothing');
-- Every sender call that takes ids takes at most maxClaimBatch (1000), none null.
SELECT is(ARRAY(SELECT v.call || ' -> ' || r
                  FROM (VALUES ('SELECT runhub.heartbeat_messages(''wm'', %s, 60)'), ('SELECT * FROM runhub.start_messages(''wm'', %s)'),
                               ('SELECT runhub.release_messages(''wm'', %s)'), ('SELECT runhub.defer_messages(''wm'', %s, ''relay down'')')) v(call),
                       unnest(ARRAY['ARRAY(SELECT -i FROM generate_series(1, 1001) i)', 'ARRAY[-1, NULL]::bigint[]', 'ARRAY[[-1, -2], [-3, -4]]::bigint[]']) bad,
                       pg_temp.refusal_undone(format(v.call, bad)) r
                 WHERE r IS DISTINCT FROM 'PT400 common.invalidInput ids'),
          '{}'::text[], 'heartbeat_messages, start_messages, release_messages and defer_messages with 1001 ids, a null id or nested ids: PT400 ids');
SELECT is(ARRAY(SELECT pg_temp.refusal_undone(format(v.call, 'ARRAY(SELECT -i FROM generate_series(1, 1000) i)'))
                  FROM (VALUES ('SELECT runhub.heartbeat_messages(''wm'', %s, 60)'), ('SELECT * FROM runhub.start_messages(''wm'', %s)'),
                               ('SELECT runhub.release_messages(''wm'', %s)'), ('SELECT runhub.defer_messages(''wm'', %s, ''relay down'')'),
                               ('SELECT * FROM runhub.record_sent_many(''wm'', %1$s, array_fill(''250''::text, ARRAY[1000]))')) v(call)),
          array_fill('no error'::text, ARRAY[5]), '... and 1000 ids are accepted by each, record_sent_many too');
-- A sender login cannot mark sent a message it never claimed (its *_email_sent event would be a
-- touch attribution credits): queued messages answer lease_lost, as an unknown id does.
SELECT results_eq(format($$SELECT * FROM runhub.record_sent_many('wm', ARRAY[%s, -7], ARRAY['250 forged', '250 forged'])$$,
                         pg_temp.msg('kai@example.com')),
                  format($$VALUES (%s::bigint, 'lease_lost'), (-7, 'lease_lost')$$, pg_temp.msg('kai@example.com')),
                  'record_sent_many of a queued message and of an unknown id: lease_lost, the same answer');
SELECT results_eq(format($$SELECT status, smtp_reply, (SELECT count(*)::int FROM runhub.business_events e
                                                    WHERE e.project_id = %L AND e.event_type ~ '_email_sent$')
                             FROM runhub.outbox WHERE to_email = 'kai@example.com'$$, :'proj_m'),
                  $$VALUES ('queued', NULL::text, 0)$$, '... recorded nothing: kai''s message queued, no sent event');
SELECT is(pg_temp.claim_only('wm'), '{kai@example.com,lea@example.com,mo@example.com}'::text[], 'wm claims the three messages');
SELECT results_eq(format($$SELECT * FROM runhub.record_sent_many('wm', ARRAY[%s, -7, %s, %s], ARRAY['250 kai', '250 none', '250 lea', '250 kai again'])$$,
                         pg_temp.msg('kai@example.com'), pg_temp.msg('lea@example.com'), pg_temp.msg('kai@example.com')),
                  format($$VALUES (%s::bigint, 'sent'), (-7, 'lease_lost'), (%s, 'sent'), (%s, 'sent')$$,
                         pg_temp.msg('kai@example.com'), pg_temp.msg('lea@example.com'), pg_temp.msg('kai@example.com')),
                  'a batch: each id''s answer in the order given (an unknown id: lease_lost; an id twice: recorded once)');
SELECT results_eq(format($$SELECT o.to_email, o.status, o.smtp_reply, r.status FROM runhub.outbox o
                             JOIN runhub.workflow_run_recipients r ON r.id = o.recipient_id WHERE o.run_id = %L ORDER BY 1$$, :'run_m'),
                  $$VALUES ('kai@example.com', 'sent', '250 kai', 'sent'), ('lea@example.com', 'sent', '250 lea', 'sent'),
                           ('mo@example.com', 'sending', NULL, 'queued')$$,
                  'kai and lea are sent with their own replies (the first of a repeated id), their recipients too; mo is not');
SELECT results_eq(format($$SELECT e.customer_email, e.correlation_id, e.amount_cents FROM runhub.business_events e
                             WHERE e.project_id = %L AND e.event_type = 'recovery_email_sent' ORDER BY 1$$, :'proj_m'),
                  $$VALUES ('kai@example.com', 'cart-kai', 900::bigint), ('lea@example.com', 'cart-lea', NULL)$$,
                  'one recovery_email_sent event each, with its cart and amount');
SELECT is((SELECT status FROM runhub.workflow_runs WHERE id = :'run_m'), 'running', 'the run is not over: mo is not final');
SELECT results_eq(format($$SELECT * FROM runhub.record_sent_many('wm', ARRAY[%s, %s], ARRAY['250 mo', '250 lea twice'])$$,
                         pg_temp.msg('mo@example.com'), pg_temp.msg('lea@example.com')),
                  format($$VALUES (%s::bigint, 'sent'), (%s, 'lease_lost')$$, pg_temp.msg('mo@example.com'), pg_temp.msg('lea@example.com')),
                  'the last message sent, and one recorded already: lease_lost (nothing to record)');
SELECT results_eq(format($$SELECT status, result - 'errorSummary' FROM runhub.workflow_runs WHERE id = %L$$, :'run_m'),
                  $$VALUES ('succeeded', '{"totalRecipients": 3, "successful": 3, "failed": 0, "cancelled": 0}'::jsonb)$$,
                  'the batch that holds the run''s last message ends it: succeeded, 3 of 3');
SELECT is((SELECT count(*)::int FROM runhub.business_events WHERE project_id = :'proj_m' AND event_type = 'recovery_email_sent'), 3,
          'lea''s second record appended no second event');
SELECT is((SELECT smtp_reply FROM runhub.outbox WHERE to_email = 'lea@example.com'), '250 lea', '... and did not change her message');

-- ---------------------------------------------------------------------------------------------
-- start_messages, and giving up on messages whose sender was lost: only those it had started.
SELECT pg_temp.recovery_run('Lost shop', '[{"email": "pia@example.com", "cart": "c-pia"}, {"email": "quin@example.com", "cart": "c-quin"},
                                           {"email": "ray@example.com", "cart": "c-ray"}]') AS run_k \gset
SELECT is(pg_temp.claim_only('wk'), '{pia@example.com,quin@example.com,ray@example.com}'::text[], 'wk claims the three messages');
SELECT is((SELECT count(*)::int FROM runhub.outbox WHERE run_id = :'run_k' AND started_at IS NULL AND attempts = 0), 3,
          'claimed, none started: no attempt counted');
SELECT is(ARRAY(SELECT runhub.start_messages('wx', ARRAY[pg_temp.msg('pia@example.com')])), '{}'::bigint[],
          'another worker cannot start wk''s message');
SELECT is(ARRAY(SELECT runhub.start_messages('wk', ARRAY[pg_temp.msg('pia@example.com'), pg_temp.msg('quin@example.com'), -3])),
          ARRAY[pg_temp.msg('pia@example.com'), pg_temp.msg('quin@example.com')], 'wk starts pia''s and quin''s (an unknown id: not returned)');
UPDATE runhub.outbox SET lease_expires_at = now() - interval '1 second' WHERE to_email = 'ray@example.com';
SELECT is(ARRAY(SELECT runhub.start_messages('wk', ARRAY[pg_temp.msg('ray@example.com')])), '{}'::bigint[],
          'ray''s lease lapsed in wk''s queue: wk may not start it (another sender may have it)');
SELECT results_eq($$SELECT to_email, started_at IS NOT NULL FROM runhub.outbox WHERE run_id = $$ || quote_literal(:'run_k') || $$ ORDER BY 1$$,
                  $$VALUES ('pia@example.com', true), ('quin@example.com', true), ('ray@example.com', false)$$,
                  'pia and quin are started, ray is not');
-- wk dies on its 8th attempt at each, holding all three; quin's lease has not lapsed yet.
UPDATE runhub.outbox SET attempts = 8, lease_expires_at = now() - interval '1 second' WHERE to_email IN ('pia@example.com', 'ray@example.com');
UPDATE runhub.outbox SET attempts = 8, lease_expires_at = now() + interval '1 minute' WHERE to_email = 'quin@example.com';
SELECT is(pg_temp.claim_only('wk2'), '{ray@example.com}'::text[],
          'the next claim gives up on pia (started 8 times without an outcome) and takes ray (never started: innocent)');
SELECT results_eq($$SELECT o.to_email, o.status, o.attempts, o.lease_owner, o.started_at IS NULL, o.last_error, r.status
                      FROM runhub.outbox o JOIN runhub.workflow_run_recipients r ON r.id = o.recipient_id
                     WHERE o.run_id = $$ || quote_literal(:'run_k') || $$ ORDER BY 1$$,
                  $$VALUES ('pia@example.com', 'failed', 8, NULL::text, false, 'no outcome after 8 attempts: the sender was lost each time', 'failed'),
                           ('quin@example.com', 'sending', 8, 'wk', false, NULL, 'queued'),
                           ('ray@example.com', 'sending', 8, 'wk2', true, NULL, 'queued')$$,
                  'pia failed with the reason, her recipient too; quin is still wk''s; ray is wk2''s, not started, its attempts unchanged');
SELECT is(runhub.record_sent(pg_temp.msg('ray@example.com'), 'wk2', '250 ok'), 'sent', 'ray''s message goes out');
SELECT is(runhub.record_sent(pg_temp.msg('quin@example.com'), 'wk', '250 ok'), 'sent', 'and quin''s');
SELECT results_eq(format($$SELECT status, result - 'errorSummary', result ->> 'errorSummary' FROM runhub.workflow_runs WHERE id = %L$$, :'run_k'),
                  $$VALUES ('succeeded', '{"totalRecipients": 3, "successful": 2, "failed": 1, "cancelled": 0}'::jsonb,
                            '1 x no outcome after 8 attempts: the sender was lost each time')$$,
                  'the run succeeded, 2 of 3, pia''s loss summarised');
SELECT is(runhub.release_messages('wk', ARRAY[pg_temp.msg('quin@example.com')]), 0, 'nothing left to release');

-- ---------------------------------------------------------------------------------------------
-- A relay outage charges no message (defer_messages), and mail that lost its point expires.
SELECT pg_temp.recovery_run('Relay', '[{"email": "sam@example.com", "cart": "c-s"}, {"email": "tia@example.com", "cart": "c-t"}]') AS run_r \gset
SELECT ok((SELECT expires_at BETWEEN now() + interval '23 hours 59 minutes' AND now() + interval '24 hours'
             FROM runhub.outbox WHERE to_email = 'sam@example.com'),
          'a recovery mail expires when the action''s window (24 h) has passed since its run wrote it');
SELECT is(pg_temp.claim_only('wr'), '{sam@example.com,tia@example.com}'::text[], 'wr claims both');
SELECT is(ARRAY(SELECT runhub.start_messages('wr', ARRAY[pg_temp.msg('sam@example.com'), pg_temp.msg('tia@example.com')]) ORDER BY 1),
          ARRAY(SELECT id FROM runhub.outbox WHERE run_id = :'run_r' ORDER BY id), 'and starts both: an attempt each');
SELECT is(runhub.defer_messages('other', ARRAY[pg_temp.msg('sam@example.com')], 'relay unavailable'), 0,
          'another worker cannot defer wr''s message');
SELECT is(runhub.defer_messages('wr', ARRAY[pg_temp.msg('sam@example.com'), pg_temp.msg('tia@example.com')],
                                'relay unavailable: ConnectionRefusedError'), 2, 'the relay refused wr''s session: both deferred');
SELECT results_eq($$SELECT to_email, status, attempts, lease_owner, started_at IS NULL, next_attempt_at <= clock_timestamp(), last_error
                      FROM runhub.outbox WHERE run_id = $$ || quote_literal(:'run_r') || $$ ORDER BY 1$$,
                  $$VALUES ('sam@example.com', 'queued', 0, NULL::text, true, true, 'relay unavailable: ConnectionRefusedError'),
                           ('tia@example.com', 'queued', 0, NULL::text, true, true, 'relay unavailable: ConnectionRefusedError')$$,
                  'deferred: due again now, their attempts given back, the reason kept');
UPDATE runhub.outbox SET expires_at = now() - interval '1 second' WHERE to_email = 'tia@example.com';
SELECT is(pg_temp.claim_only('wr'), '{sam@example.com}'::text[], 'the next claim returns sam''s mail, not tia''s: it expired');
SELECT results_eq($$SELECT o.status, o.last_error ~ '^expired at .*: too late to be of use$', r.status
                      FROM runhub.outbox o JOIN runhub.workflow_run_recipients r ON r.id = o.recipient_id
                     WHERE o.to_email = 'tia@example.com'$$,
                  $$VALUES ('cancelled', true, 'cancelled')$$, 'tia''s mail is cancelled as expired, her recipient too');
SELECT lives_ok($$SELECT runhub.report_relay('wr', 'relay.example:25', 'SMTPConnectError: (421, b''busy'')')$$, 'wr reports its relay down');
SELECT lives_ok($$SELECT runhub.report_relay('wr', 'relay.example:25', 'TimeoutError: timed out')$$, 'and still down');
SELECT results_eq($$SELECT relay, down_since <= now(), last_error FROM runhub.relay_status WHERE worker = 'wr'$$,
                  $$VALUES ('relay.example:25', true, 'TimeoutError: timed out')$$,
                  'relay_status: down since the first report, with the last error');
SELECT lives_ok($$SELECT runhub.report_relay('wr', 'relay.example:25', NULL)$$, 'then up');
SELECT is((SELECT down_since FROM runhub.relay_status WHERE worker = 'wr'), NULL, 'up: no down_since');
SELECT throws_ok($$SELECT runhub.report_relay('wr', ' ', NULL)$$, 'PT400', 'common.invalidInput', 'a relay must be named');

-- ---------------------------------------------------------------------------------------------
-- purge-finished-mail keeps at least a day (22023 under it). A day itself gets past the check to
-- the purge, whose first COMMIT this file's transaction refuses (2D000): the procedure commits its
-- batches, so a day's purge itself is tested where it can commit (tests/db/test_housekeeping.py).
SELECT throws_ok($$CALL runhub.purge_finished_mail(NULL, interval '1 day' - interval '1 microsecond')$$, '22023', NULL,
                 'keep a microsecond under a day: 22023');
SELECT throws_ok($$CALL runhub.purge_finished_mail(NULL, NULL)$$, '22023', NULL, 'keep null: 22023');
SELECT throws_ok($$CALL runhub.purge_finished_mail(NULL, interval '1 day')$$, '2D000', NULL,
                 'keep a day: past the check (to the purge''s COMMIT, which a transaction block refuses)');

SELECT * FROM finish();
ROLLBACK;
