-- Outcomes: every payment_succeeded is credited to at most one workflow mail — last touch within
-- the mail's action window, judged by when the payment happened — and runs, actions and digests
-- read their outcome from the credits (runhub.workflow_attributions). A touch is a message runhub's
-- own sender had accepted (outbox 'sent'), never an event a client ingested.

-- An action's attribution window in hours, when its registry outcome counts money (a *_revenue
-- metric); null otherwise (onboarding mail earns no money outcome unless the registry says so).
CREATE OR REPLACE FUNCTION runhub._money_window_hours(p_outcome jsonb)
RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (p_outcome ->> 'windowHours')::int
     WHERE EXISTS (SELECT 1 FROM jsonb_array_elements_text(
                       CASE WHEN jsonb_typeof(p_outcome -> 'metrics') = 'array' THEN p_outcome -> 'metrics' END) m
                    WHERE m LIKE '%\_revenue')
$$;

-- What attribution's reasons say in English (explain_attribution; its log lines carry the keys): a constant
-- that PL/pgSQL folds into its cached plans (so no SET clause, and no name in it to look up).
CREATE OR REPLACE FUNCTION runhub._attribution_texts()
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT jsonb_build_object(
    'attribution.attributed',        'Credited to run {runId} ({actionId}) by {method} with the mail sent at {sentAt} ({confidence} confidence)',
    'attribution.alreadyAttributed', 'Already credited to run {runId} by {method}',
    'attribution.notAPayment',       'Only payment_succeeded events are attributed; this is {type}',
    'attribution.noAmount',          'The payment carries no amount',
    'attribution.currencyMismatch',  'The payment is in {paymentCurrency} and the project counts {projectCurrency}: payments in another currency are not attributed',
    'attribution.noCustomer',        'The payment names no customer e-mail and carries no valid run link',
    'attribution.noMailInWindow',    'No workflow mail went to {email} within its action''s window before the payment',
    'attribution.noMatch',           '{mails} workflow mail(s) went to {email} within the window, none for the same cart or amount (address-only matching is off)',
    'attribution.link.malformed',    'The run id in the payment, {wid}, is not a UUID: ignored',
    'attribution.link.unknownRun',   'No run {wid} exists in this project: the link is ignored',
    'attribution.link.noMoneyOutcome', 'Run {wid}''s action earns no money outcome: the link is ignored',
    'attribution.link.noMailBeforePayment', 'Run {wid} had sent no mail when the payment happened: the link is ignored',
    'attribution.link.outsideWindow', 'Run {wid}''s mail went out more than {windowHours} hours before the payment: the link is ignored') $$;

-- The catalog of attribution's reasons (for an application to show them; definer rights, as the
-- texts' function is internal).
CREATE OR REPLACE FUNCTION runhub.attribution_reasons()
RETURNS TABLE (key text, text text)
LANGUAGE sql IMMUTABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT t.key, t.value FROM jsonb_each_text(runhub._attribution_texts()) t ORDER BY t.key $$;

-- A reason as JSON: its key and params (what the log says; explain adds the English text).
CREATE OR REPLACE FUNCTION runhub._attribution_reason(p_key text, p_params jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN jsonb_build_object('reason', p_key, 'params', p_params); END $$;

-- A reason with its English text (params filled in), and its link's: for explain_attribution.
CREATE OR REPLACE FUNCTION runhub._with_text(p_reason jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_text  text := runhub._attribution_texts() ->> (p_reason ->> 'reason');
    v_param record;
BEGIN
    FOR v_param IN SELECT * FROM jsonb_each_text(p_reason -> 'params') LOOP
        v_text := replace(v_text, '{' || v_param.key || '}', coalesce(v_param.value, 'null'));
    END LOOP;
    RETURN p_reason || jsonb_build_object('text', v_text)
        || CASE WHEN p_reason ? 'link' THEN jsonb_build_object('link', runhub._with_text(p_reason -> 'link')) ELSE '{}' END;
END
$$;

-- The run a payment links to (payload.checkoutMetadata.wid, else payload.wid) as sent, cut to
-- 100 characters for echoing; null when it carries none.
CREATE OR REPLACE FUNCTION runhub._payment_wid(p_payload jsonb)
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN left(coalesce(
        CASE WHEN jsonb_typeof(p_payload -> 'checkoutMetadata' -> 'wid') = 'string' THEN p_payload -> 'checkoutMetadata' ->> 'wid' END,
        CASE WHEN jsonb_typeof(p_payload -> 'wid') = 'string' THEN p_payload ->> 'wid' END), 100);
END
$$;

-- The mail a valid run link credits: the run's latest mail sent within its window before the
-- payment, to the payer's address if it got one (the link may also have been forwarded).
-- Else null, and p_why says why the link does not count.
CREATE OR REPLACE FUNCTION runhub._link_touch(p_payment runhub.business_events, p_wid text, OUT touch jsonb, OUT why jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_run runhub.workflow_runs;
BEGIN
    IF p_wid !~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$' THEN
        why := runhub._attribution_reason('attribution.link.malformed', jsonb_build_object('wid', p_wid));
        RETURN;
    END IF;
    SELECT * INTO v_run FROM runhub.workflow_runs WHERE id = p_wid::uuid AND project_id = p_payment.project_id;
    IF NOT FOUND THEN  -- also another project's run: not ours to credit, and not to reveal
        why := runhub._attribution_reason('attribution.link.unknownRun', jsonb_build_object('wid', p_wid));
        RETURN;
    ELSIF v_run.outcome_window_hours IS NULL THEN
        why := runhub._attribution_reason('attribution.link.noMoneyOutcome', jsonb_build_object('wid', p_wid));
        RETURN;
    END IF;
    -- The payer's own mail first: one probe of the run's (run_id, email) key, where ordering all of
    -- a 1,000-recipient run's mail by "is it the payer's" read and sorted all of it.
    IF p_payment.customer_email IS NOT NULL THEN
        SELECT jsonb_build_object('messageId', o.id, 'runId', v_run.id, 'actionId', v_run.action_id, 'sentAt', o.sent_at,
                                  'windowHours', v_run.outcome_window_hours, 'method', 'wid_link')
          INTO touch
          FROM runhub.workflow_run_recipients rc JOIN runhub.outbox o ON o.recipient_id = rc.id
         WHERE rc.run_id = v_run.id AND rc.email = p_payment.customer_email
           AND o.status = 'sent' AND o.sent_at <= p_payment.occurred_at
           AND o.sent_at >= p_payment.occurred_at - make_interval(hours => v_run.outcome_window_hours);
    END IF;
    IF touch IS NULL THEN  -- a forwarded link: the run's latest mail in the window
        SELECT jsonb_build_object('messageId', o.id, 'runId', v_run.id, 'actionId', v_run.action_id, 'sentAt', o.sent_at,
                                  'windowHours', v_run.outcome_window_hours, 'method', 'wid_link')
          INTO touch
          FROM runhub.workflow_run_recipients rc JOIN runhub.outbox o ON o.recipient_id = rc.id
         WHERE rc.run_id = v_run.id AND o.status = 'sent' AND o.sent_at <= p_payment.occurred_at
           AND o.sent_at >= p_payment.occurred_at - make_interval(hours => v_run.outcome_window_hours)
         ORDER BY o.sent_at DESC, o.id DESC
         LIMIT 1;
    END IF;
    IF touch IS NULL THEN
        why := runhub._attribution_reason(
            CASE WHEN EXISTS (SELECT 1 FROM runhub.workflow_run_recipients rc JOIN runhub.outbox o ON o.recipient_id = rc.id
                               WHERE rc.run_id = v_run.id AND o.status = 'sent' AND o.sent_at <= p_payment.occurred_at)
                 THEN 'attribution.link.outsideWindow' ELSE 'attribution.link.noMailBeforePayment' END,
            jsonb_build_object('wid', p_wid, 'windowHours', v_run.outcome_window_hours));
    END IF;
END
$$;

-- The last touch by address: the latest mail to the payer sent within its run's window before the
-- payment that is for the same cart (cart_match) or amount (amount_match) — or any, where the
-- project turned on address-only matching (email_exact). Without one, why not: no such mail in any
-- window, or mails that matched neither cart nor amount. One read of the payer's mail for both.
-- PL/pgSQL: its plan is cached for the session, where a LANGUAGE sql function with a SET clause is
-- never inlined and is planned again on every call (0.4 ms, ten times the query).
CREATE OR REPLACE FUNCTION runhub._address_touch(p_payment runhub.business_events, p_email_only boolean,
                                                 OUT touch jsonb, OUT why jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_mails bigint;
BEGIN
    SELECT count(*),
           (array_agg(jsonb_build_object('messageId', t.message_id, 'runId', t.run_id, 'actionId', t.action_id,
                                         'sentAt', t.sent_at, 'windowHours', t.window_hours,
                                         'method', CASE WHEN t.cart_match THEN 'cart_match' WHEN t.amount_match THEN 'amount_match'
                                                        ELSE 'email_exact' END)
                      ORDER BY t.sent_at DESC, t.message_id DESC)
                FILTER (WHERE t.cart_match OR t.amount_match OR p_email_only))[1]
      FROM (SELECT o.id AS message_id, r.id AS run_id, r.action_id, o.sent_at, r.outcome_window_hours AS window_hours,
                   coalesce(rc.cart_id = coalesce(p_payment.payload ->> 'cartId', p_payment.correlation_id), false) AS cart_match,
                   coalesce(rc.amount_cents = p_payment.amount_cents AND rc.currency = p_payment.currency, false) AS amount_match
              FROM runhub.workflow_run_recipients rc
              JOIN runhub.outbox o ON o.recipient_id = rc.id
              JOIN runhub.workflow_runs r ON r.id = rc.run_id
             WHERE rc.project_id = p_payment.project_id AND rc.email = p_payment.customer_email
               AND rc.created_at <= p_payment.occurred_at  -- written before it was sent
               AND o.status = 'sent' AND o.sent_at <= p_payment.occurred_at
               AND o.sent_at >= p_payment.occurred_at - make_interval(hours => r.outcome_window_hours)) t
      INTO v_mails, touch;
    IF touch IS NULL THEN
        why := runhub._attribution_reason(
            CASE WHEN v_mails = 0 THEN 'attribution.noMailInWindow' ELSE 'attribution.noMatch' END,
            jsonb_build_object('email', p_payment.customer_email)
            || CASE WHEN v_mails > 0 THEN jsonb_build_object('mails', v_mails) ELSE '{}' END);
    END IF;
END
$$;

-- The decision for one payment: credited (and, with p_record, recorded) or why not, as
-- {attributed, reason, params, text, link?}. Logged when recorded. Never raises for bad data in
-- the payment: the payment is always kept.
CREATE OR REPLACE FUNCTION runhub._attribute(p_payment runhub.business_events, p_record boolean)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_existing runhub.workflow_attributions;
    v_project  runhub.projects;
    v_wid      text := runhub._payment_wid(p_payment.payload);
    v_link_why jsonb;  -- why the payment's run link does not count
    v_found    record;  -- a {touch, why} (assigned as a plain expression: no query, no executor)
    v_touch    jsonb;
    v_decision jsonb;
    v_id       bigint;
BEGIN
    -- Recording (the trigger, a backfill) comes to uncredited payments; ON CONFLICT below covers a race.
    IF NOT p_record THEN
        SELECT * INTO v_existing FROM runhub.workflow_attributions WHERE payment_event_id = p_payment.id;
    END IF;
    IF v_existing.id IS NOT NULL THEN  -- credited: say so, and why its run link (if any) did not decide
        IF v_wid IS NOT NULL AND v_existing.method <> 'wid_link' THEN
            v_found := runhub._link_touch(p_payment, v_wid);
            v_link_why := v_found.why;
        END IF;
        RETURN runhub._attribution_json(v_existing)
            || CASE WHEN v_link_why IS NOT NULL THEN jsonb_build_object('link', v_link_why) ELSE '{}' END;
    END IF;
    SELECT * INTO v_project FROM runhub.projects WHERE id = p_payment.project_id;
    IF p_payment.event_type <> 'payment_succeeded' THEN
        v_decision := runhub._attribution_reason('attribution.notAPayment', jsonb_build_object('type', p_payment.event_type));
    ELSIF p_payment.amount_cents IS NULL THEN
        v_decision := runhub._attribution_reason('attribution.noAmount');
    ELSIF p_payment.currency <> v_project.currency THEN
        v_decision := runhub._attribution_reason('attribution.currencyMismatch', jsonb_build_object(
            'paymentCurrency', p_payment.currency, 'projectCurrency', v_project.currency));
    ELSE
        IF v_wid IS NOT NULL THEN
            v_found := runhub._link_touch(p_payment, v_wid);
            v_touch := v_found.touch;
            v_link_why := v_found.why;
        END IF;
        IF v_touch IS NULL AND p_payment.customer_email IS NULL THEN
            v_decision := runhub._attribution_reason('attribution.noCustomer');
        ELSIF v_touch IS NULL THEN
            v_found := runhub._address_touch(p_payment, coalesce((v_project.settings ->> 'emailOnlyAttribution')::boolean, false));
            v_touch := v_found.touch;
            v_decision := v_found.why;
        END IF;
    END IF;

    IF v_decision IS NULL AND p_record THEN
        INSERT INTO runhub.workflow_attributions (project_id, run_id, payment_event_id, message_id, method, confidence,
                                                  window_hours, sent_at, paid_at, amount_cents, currency)
        VALUES (p_payment.project_id, (v_touch ->> 'runId')::uuid, p_payment.id, (v_touch ->> 'messageId')::bigint,
                v_touch ->> 'method', runhub._confidence(v_touch ->> 'method'), (v_touch ->> 'windowHours')::int,
                (v_touch ->> 'sentAt')::timestamptz, p_payment.occurred_at, p_payment.amount_cents, p_payment.currency)
        ON CONFLICT (payment_event_id) DO NOTHING
        RETURNING * INTO v_existing;
        IF v_existing.id IS NULL THEN  -- credited meanwhile by another session (a backfill)
            SELECT * INTO v_existing FROM runhub.workflow_attributions WHERE payment_event_id = p_payment.id;
            v_decision := runhub._attribution_reason('attribution.alreadyAttributed', jsonb_build_object(
                'runId', v_existing.run_id, 'method', v_existing.method)) || jsonb_build_object('attributed', true);
        ELSE
            v_decision := runhub._attribution_json(v_existing, v_touch ->> 'actionId');
        END IF;
    ELSIF v_decision IS NULL THEN  -- a dry run (explain): what recording would credit
        v_decision := runhub._attribution_reason('attribution.attributed', jsonb_build_object(
            'runId', v_touch ->> 'runId', 'actionId', v_touch ->> 'actionId', 'method', v_touch ->> 'method',
            'confidence', runhub._confidence(v_touch ->> 'method'), 'messageId', (v_touch ->> 'messageId')::bigint,
            'sentAt', runhub._iso((v_touch ->> 'sentAt')::timestamptz), 'windowHours', (v_touch ->> 'windowHours')::int))
            || jsonb_build_object('attributed', true, 'recorded', false);
    ELSE
        v_decision := v_decision || jsonb_build_object('attributed', false);
    END IF;
    IF v_link_why IS NOT NULL THEN
        v_decision := v_decision || jsonb_build_object('link', v_link_why);
    END IF;
    -- A credit is its own record (workflow_attributions); what did not count is logged: a payment
    -- left uncredited, and a run link ignored.
    IF p_record AND (NOT (v_decision ->> 'attributed')::boolean OR v_link_why IS NOT NULL) THEN
        RAISE LOG 'runhub %', jsonb_build_object('event', 'payment_attribution', 'paymentEventId', p_payment.id,
                                                 'projectId', p_payment.project_id) || v_decision;
    END IF;
    RETURN v_decision;
END
$$;

-- A method's confidence: a run link is certain, a cart nearly, an amount or an address alone a guess.
CREATE OR REPLACE FUNCTION runhub._confidence(p_method text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN CASE p_method WHEN 'wid_link' THEN 'high' WHEN 'cart_match' THEN 'medium' ELSE 'low' END; END $$;

-- A recorded credit as a decision (p_action_id: its run's action, when the caller has it at hand).
CREATE OR REPLACE FUNCTION runhub._attribution_json(a runhub.workflow_attributions, p_action_id text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_action_id IS NULL THEN  -- apart: a subquery would take the whole expression off PL/pgSQL's fast path
        SELECT r.action_id INTO p_action_id FROM runhub.workflow_runs r WHERE r.id = a.run_id;
    END IF;
    RETURN runhub._attribution_reason('attribution.attributed', jsonb_build_object(
               'runId', a.run_id, 'actionId', p_action_id,
               'method', a.method, 'confidence', a.confidence, 'messageId', a.message_id,
               'sentAt', runhub._iso(a.sent_at), 'windowHours', a.window_hours,
               'amountCents', a.amount_cents, 'currency', a.currency, 'attributedAt', runhub._iso(a.attributed_at)))
           || jsonb_build_object('attributed', true, 'recorded', true);
END
$$;

-- Every payment is examined in the transaction that ingests it (a row trigger whose WHEN clause
-- costs other events nothing).
CREATE OR REPLACE FUNCTION runhub._attribute_payment()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM runhub._attribute(NEW, true);
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER business_events_attribute_payment
    AFTER INSERT ON runhub.business_events
    FOR EACH ROW WHEN (NEW.event_type = 'payment_succeeded')
    EXECUTE FUNCTION runhub._attribute_payment();

-- workflow_attributions is append-only, as business_events (a project's deletion takes its rows).
CREATE OR REPLACE TRIGGER workflow_attributions_append_only
    BEFORE UPDATE OR DELETE ON runhub.workflow_attributions
    FOR EACH ROW EXECUTE FUNCTION runhub._append_only();
CREATE OR REPLACE TRIGGER workflow_attributions_no_truncate
    BEFORE TRUNCATE ON runhub.workflow_attributions
    FOR EACH STATEMENT EXECUTE FUNCTION runhub._append_only();

-- Re-examine a project's stored payments that happened since p_since and have no credit (after a
-- restore, or with the trigger off): idempotent, returns how many it credited now. For operators
-- (`runhub attribute-payments`); no runhub role may call it.
CREATE OR REPLACE FUNCTION runhub.attribute_payments(p_project uuid, p_since timestamptz)
RETURNS int
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_payment runhub.business_events;
    v_added   int := 0;
BEGIN
    PERFORM runhub._require_project(p_project);
    IF p_since IS NULL OR NOT isfinite(p_since) THEN
        PERFORM runhub._invalid('common.invalidInput', 'since', 'must be a finite instant');
    END IF;
    FOR v_payment IN
        SELECT e.* FROM runhub.business_events e
         WHERE e.project_id = p_project AND e.event_type = 'payment_succeeded' AND e.occurred_at >= p_since
           AND NOT EXISTS (SELECT 1 FROM runhub.workflow_attributions a WHERE a.payment_event_id = e.id)
         ORDER BY e.occurred_at, e.id
    LOOP
        IF (runhub._attribute(v_payment, true) ->> 'reason') = 'attribution.attributed' THEN
            v_added := v_added + 1;
        END IF;
    END LOOP;
    RETURN v_added;
END
$$;

-- Why a payment was credited, or why not, in the words of the log (a dry run when it was not:
-- what recording it now would do). Any member.
CREATE OR REPLACE FUNCTION runhub.explain_attribution(p_project uuid, p_actor uuid, p_payment_event_id bigint)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_payment runhub.business_events;
BEGIN
    PERFORM runhub._authorize(p_project, p_actor);
    SELECT * INTO v_payment FROM runhub.business_events WHERE id = p_payment_event_id AND project_id = p_project;
    IF NOT FOUND THEN
        PERFORM runhub._raise('events.notFound', jsonb_build_object('eventId', p_payment_event_id));
    END IF;
    RETURN jsonb_build_object('paymentEventId', v_payment.id) || runhub._with_text(runhub._attribute(v_payment, false));
END
$$;

-- A run that will send nothing more: finished, and (if cancelled while delivering) settled.
CREATE OR REPLACE FUNCTION runhub._run_settled(r runhub.workflow_runs)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT r.completed_at IS NOT NULL AND coalesce((r.result ->> 'pending')::int, 0) = 0 $$;

-- When a run's last mail went out: recorded once it settled, counted live while it delivers.
CREATE OR REPLACE FUNCTION runhub._last_sent_at(r runhub.workflow_runs)
RETURNS timestamptz
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN runhub._run_settled(r) THEN r.last_sent_at
                ELSE (SELECT max(o.sent_at) FROM runhub.workflow_run_recipients rc JOIN runhub.outbox o ON o.recipient_id = rc.id
                       WHERE rc.run_id = r.id AND o.status = 'sent') END
$$;

-- A run's Outcome (null when its action earns no money outcome): the credits of its mails, the
-- weakest confidence among them, the method of most of them (ties: the stronger), per method,
-- where the window ends, and final once it closed on a run that sends nothing more. A payment that
-- happened inside the window but is reported later still counts when it arrives.
CREATE OR REPLACE FUNCTION runhub._outcome(r runhub.workflow_runs)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        'model', format('last_touch_%sh', r.outcome_window_hours), 'windowHours', r.outcome_window_hours,
        'conversions', coalesce(sum(m.conversions), 0), 'revenueCents', coalesce(sum(m.revenue), 0),
        'currency', (SELECT p.currency FROM runhub.projects p WHERE p.id = r.project_id),
        'confidence', (array_agg(runhub._confidence(m.method) ORDER BY m.rank DESC) FILTER (WHERE m.method IS NOT NULL))[1],
        'matchedBy', (array_agg(m.method ORDER BY m.conversions DESC, m.rank) FILTER (WHERE m.method IS NOT NULL))[1],
        'byMethod', coalesce(jsonb_object_agg(m.method, jsonb_build_object('conversions', m.conversions, 'revenueCents', m.revenue))
                             FILTER (WHERE m.method IS NOT NULL), '{}'),
        'windowEndsAt', runhub._iso(w.ends_at),
        'final', runhub._run_settled(r) AND (w.ends_at IS NULL OR now() >= w.ends_at))
      FROM (SELECT runhub._last_sent_at(r) + make_interval(hours => r.outcome_window_hours) AS ends_at) w
      LEFT JOIN (SELECT a.method, count(*) AS conversions, sum(a.amount_cents) AS revenue,
                        array_position(ARRAY['wid_link', 'cart_match', 'amount_match', 'email_exact'], a.method) AS rank
                   FROM runhub.workflow_attributions a WHERE a.run_id = r.id GROUP BY a.method) m ON true
     WHERE r.outcome_window_hours IS NOT NULL
     GROUP BY w.ends_at
$$;

-- A run's Outcome, for any member.
CREATE OR REPLACE FUNCTION runhub.workflow_outcome(p_project uuid, p_actor uuid, p_run uuid)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM runhub._authorize(p_project, p_actor);
    RETURN runhub._outcome(runhub._require_run(p_project, p_run));
END
$$;
