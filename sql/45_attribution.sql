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
-- 100 characters for echoing; null when it carries none. No SET clause: an expression inlined
-- where it is used.
CREATE OR REPLACE FUNCTION runhub._payment_wid(p_payload jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT left(coalesce(
        CASE WHEN jsonb_typeof(p_payload -> 'checkoutMetadata' -> 'wid') = 'string' THEN p_payload -> 'checkoutMetadata' ->> 'wid' END,
        CASE WHEN jsonb_typeof(p_payload -> 'wid') = 'string' THEN p_payload ->> 'wid' END), 100)
$$;

-- A run link as a run id: null unless the text is a UUID (so a malformed link looks up nothing).
CREATE OR REPLACE FUNCTION runhub._wid_run(p_wid text)
RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN p_wid ~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$' THEN p_wid::uuid END
$$;

-- The mail a run link credits: the run's (in this project, with a money outcome) mail sent within
-- its window before the payment, to the payer's address if it got one (one probe of the run's
-- (run_id, email) key), else the run's latest (the link may have been forwarded; read only when
-- the payer got none: a null key looks up nothing). Read-only, no SET clause: inlined.
CREATE OR REPLACE FUNCTION runhub._link_mail(p_project uuid, p_wid text, p_email text, p_paid_at timestamptz)
RETURNS TABLE (message_id bigint, run_id uuid, action_id text, sent_at timestamptz, window_hours int)
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(mine.id, latest.id), r.id, r.action_id, coalesce(mine.sent_at, latest.sent_at), r.outcome_window_hours
      FROM runhub.workflow_runs r
      LEFT JOIN LATERAL (SELECT o.id, o.sent_at
                           FROM runhub.workflow_run_recipients rc JOIN runhub.outbox o ON o.id = rc.id
                          WHERE rc.run_id = r.id AND rc.email COLLATE "C" = p_email
                            AND o.status = 'sent' AND o.sent_at <= p_paid_at
                            AND o.sent_at >= p_paid_at - make_interval(hours => r.outcome_window_hours)
                          LIMIT 1) mine ON true
      LEFT JOIN LATERAL (SELECT o.id, o.sent_at
                           FROM runhub.workflow_run_recipients rc JOIN runhub.outbox o ON o.id = rc.id
                          WHERE rc.run_id = CASE WHEN mine.id IS NULL THEN r.id END
                            AND o.status = 'sent' AND o.sent_at <= p_paid_at
                            AND o.sent_at >= p_paid_at - make_interval(hours => r.outcome_window_hours)
                          ORDER BY o.sent_at DESC, o.id DESC
                          LIMIT 1) latest ON true
     WHERE r.id = runhub._wid_run(p_wid) AND r.project_id = p_project AND r.outcome_window_hours IS NOT NULL
       AND coalesce(mine.id, latest.id) IS NOT NULL
$$;

-- Why a payment's run link credits nothing (null when it does): for the log and explain.
CREATE OR REPLACE FUNCTION runhub._link_why(p_project uuid, p_wid text, p_paid_at timestamptz)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_run    uuid := runhub._wid_run(p_wid);
    v_window int;
BEGIN
    IF v_run IS NULL THEN
        RETURN runhub._attribution_reason('attribution.link.malformed', jsonb_build_object('wid', p_wid));
    END IF;
    SELECT r.outcome_window_hours INTO v_window FROM runhub.workflow_runs r WHERE r.id = v_run AND r.project_id = p_project;
    IF NOT FOUND THEN  -- also another project's run: not ours to credit, and not to reveal
        RETURN runhub._attribution_reason('attribution.link.unknownRun', jsonb_build_object('wid', p_wid));
    ELSIF v_window IS NULL THEN
        RETURN runhub._attribution_reason('attribution.link.noMoneyOutcome', jsonb_build_object('wid', p_wid));
    ELSIF EXISTS (SELECT 1 FROM runhub._link_mail(p_project, p_wid, NULL, p_paid_at)) THEN
        RETURN NULL;
    END IF;
    RETURN runhub._attribution_reason(
        CASE WHEN EXISTS (SELECT 1 FROM runhub.workflow_run_recipients rc JOIN runhub.outbox o ON o.id = rc.id
                           WHERE rc.run_id = v_run AND o.status = 'sent' AND o.sent_at <= p_paid_at)
             THEN 'attribution.link.outsideWindow' ELSE 'attribution.link.noMailBeforePayment' END,
        jsonb_build_object('wid', p_wid, 'windowHours', v_window));
END
$$;

-- The workflow mail runhub sent to an address within its run's window before an instant (and
-- written before it: a recipient row is older than its mail), with what a payment is matched on.
-- Read-only, no SET clause: inlined.
CREATE OR REPLACE FUNCTION runhub._address_mails(p_project uuid, p_email text, p_paid_at timestamptz)
RETURNS TABLE (message_id bigint, run_id uuid, action_id text, sent_at timestamptz, window_hours int,
               cart_id text, amount_cents bigint, currency char(3))
LANGUAGE sql STABLE
AS $$
    SELECT o.id, r.id, r.action_id, o.sent_at, r.outcome_window_hours, rc.cart_id, rc.amount_cents, rc.currency
      FROM runhub.workflow_run_recipients rc
      JOIN runhub.outbox o ON o.id = rc.id
      JOIN runhub.workflow_runs r ON r.id = rc.run_id
     WHERE rc.project_id = p_project AND rc.email COLLATE "C" = p_email
       AND rc.created_at <= p_paid_at
       AND o.status = 'sent' AND o.sent_at <= p_paid_at
       AND o.sent_at >= p_paid_at - make_interval(hours => r.outcome_window_hours)
$$;

-- The last touch by address: of the payer's mails in their windows, the latest for the same cart
-- (cart_match) or amount (amount_match) — or any, where the project turned on address-only
-- matching (email_exact). No row when no mail went to the payer in a window; a row with a null
-- method when mail went but none matches. Read-only, no SET clause: inlined.
CREATE OR REPLACE FUNCTION runhub._address_touch(p_project uuid, p_email text, p_paid_at timestamptz, p_cart text,
                                                 p_amount bigint, p_currency char(3), p_email_only boolean)
RETURNS TABLE (message_id bigint, run_id uuid, action_id text, sent_at timestamptz, window_hours int, method text)
LANGUAGE sql STABLE
AS $$
    SELECT t.message_id, t.run_id, t.action_id, t.sent_at, t.window_hours, t.method
      FROM (SELECT m.message_id, m.run_id, m.action_id, m.sent_at, m.window_hours,
                   CASE WHEN m.cart_id = p_cart THEN 'cart_match'
                        WHEN m.amount_cents = p_amount AND m.currency = p_currency THEN 'amount_match'
                        WHEN p_email_only THEN 'email_exact' END AS method
              FROM runhub._address_mails(p_project, p_email, p_paid_at) m) t
     ORDER BY t.method IS NULL, t.sent_at DESC, t.message_id DESC
     LIMIT 1
$$;

-- The decision for one payment, read-only: the touch it earns (a method: credited) or why not
-- (reason: {reason, params}), and why its run link did not decide (link; null when it did, or it
-- carries none). Never raises for bad data in the payment. The touch is the run link's mail
-- (_link_mail), else the address's last touch (_address_touch). The trigger and a backfill write
-- what it decides (_record_attribution); explain_attribution shows it.
CREATE OR REPLACE FUNCTION runhub._attribution_decision(
    p_payment runhub.business_events,
    OUT message_id bigint, OUT run_id uuid, OUT action_id text, OUT sent_at timestamptz, OUT window_hours int,
    OUT method text, OUT reason jsonb, OUT link jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_currency   char(3);
    v_email_only boolean;
    v_wid        text := runhub._payment_wid(p_payment.payload);
    v_mails      bigint;
BEGIN
    SELECT p.currency, coalesce((p.settings ->> 'emailOnlyAttribution')::boolean, false) INTO v_currency, v_email_only
      FROM runhub.projects p WHERE p.id = p_payment.project_id;
    IF p_payment.event_type <> 'payment_succeeded' THEN
        reason := runhub._attribution_reason('attribution.notAPayment', jsonb_build_object('type', p_payment.event_type));
        RETURN;
    ELSIF p_payment.amount_cents IS NULL THEN
        reason := runhub._attribution_reason('attribution.noAmount');
        RETURN;
    ELSIF p_payment.currency <> v_currency THEN
        reason := runhub._attribution_reason('attribution.currencyMismatch', jsonb_build_object(
            'paymentCurrency', p_payment.currency, 'projectCurrency', v_currency));
        RETURN;
    END IF;
    IF v_wid IS NOT NULL THEN
        SELECT l.message_id, l.run_id, l.action_id, l.sent_at, l.window_hours, 'wid_link'
          INTO message_id, run_id, action_id, sent_at, window_hours, method
          FROM runhub._link_mail(p_payment.project_id, v_wid, p_payment.customer_email, p_payment.occurred_at) l;
        IF message_id IS NULL THEN
            link := runhub._link_why(p_payment.project_id, v_wid, p_payment.occurred_at);
        END IF;
    END IF;
    IF message_id IS NULL AND p_payment.customer_email IS NOT NULL THEN
        SELECT a.message_id, a.run_id, a.action_id, a.sent_at, a.window_hours, a.method
          INTO message_id, run_id, action_id, sent_at, window_hours, method
          FROM runhub._address_touch(p_payment.project_id, p_payment.customer_email, p_payment.occurred_at,
                                     coalesce(p_payment.payload ->> 'cartId', p_payment.correlation_id),
                                     p_payment.amount_cents, p_payment.currency, v_email_only) a;
    END IF;
    IF method IS NOT NULL THEN
        RETURN;
    ELSIF p_payment.customer_email IS NULL THEN
        reason := runhub._attribution_reason('attribution.noCustomer');
    ELSIF message_id IS NULL THEN
        reason := runhub._attribution_reason('attribution.noMailInWindow', jsonb_build_object('email', p_payment.customer_email));
    ELSE  -- mail went, none matched: how much, for the log
        SELECT count(*) INTO v_mails
          FROM runhub._address_mails(p_payment.project_id, p_payment.customer_email, p_payment.occurred_at);
        reason := runhub._attribution_reason('attribution.noMatch', jsonb_build_object(
            'email', p_payment.customer_email, 'mails', v_mails));
    END IF;
    message_id := NULL;  -- no touch: the mail that matched nothing is not one
    run_id := NULL;
    action_id := NULL;
    sent_at := NULL;
    window_hours := NULL;
END
$$;

-- Write what _attribution_decision decides for a payment (the trigger, a backfill): its credit, if
-- it earns one; and log what did not count where there was something to weigh — a run link
-- ignored, another currency, mail in the window that matched neither cart nor amount. A payment
-- from someone runhub never mailed is most payments: not logged (explain_attribution answers).
-- Returns whether it wrote a credit (not when another session credited the payment meanwhile).
CREATE OR REPLACE FUNCTION runhub._record_attribution(p_payment runhub.business_events)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d          record := runhub._attribution_decision(p_payment);
    v_existing runhub.workflow_attributions;
    v_credited boolean := false;
    v_said     jsonb;
BEGIN
    IF d.method IS NOT NULL THEN
        INSERT INTO runhub.workflow_attributions (project_id, run_id, payment_event_id, message_id, method, confidence,
                                                  window_hours, sent_at, paid_at, amount_cents, currency)
        VALUES (p_payment.project_id, d.run_id, p_payment.id, d.message_id, d.method, runhub._confidence(d.method),
                d.window_hours, d.sent_at, p_payment.occurred_at, p_payment.amount_cents, p_payment.currency)
        ON CONFLICT (payment_event_id) DO NOTHING;
        v_credited := FOUND;
        IF v_credited AND d.link IS NULL THEN  -- the common case: nothing to log, the row says it all
            RETURN true;
        ELSIF v_credited THEN
            v_said := runhub._attribution_reason('attribution.attributed', jsonb_build_object(
                'runId', d.run_id, 'actionId', d.action_id, 'method', d.method, 'messageId', d.message_id))
                || jsonb_build_object('attributed', true, 'recorded', true);
        ELSE  -- credited meanwhile by another session (a backfill)
            SELECT * INTO v_existing FROM runhub.workflow_attributions WHERE payment_event_id = p_payment.id;
            v_said := runhub._attribution_reason('attribution.alreadyAttributed', jsonb_build_object(
                'runId', v_existing.run_id, 'method', v_existing.method)) || jsonb_build_object('attributed', true);
        END IF;
    ELSE
        v_said := d.reason || jsonb_build_object('attributed', false);
    END IF;
    IF d.link IS NOT NULL OR v_said ->> 'reason' IN ('attribution.currencyMismatch', 'attribution.noMatch') THEN
        RAISE LOG 'runhub %', jsonb_build_object('event', 'payment_attribution', 'paymentEventId', p_payment.id,
                                                 'projectId', p_payment.project_id)
                              || v_said || CASE WHEN d.link IS NOT NULL THEN jsonb_build_object('link', d.link) ELSE '{}' END;
    END IF;
    RETURN v_credited;
END
$$;

-- A credit's rules, the CHECK of workflow_attributions (one function: a table's CHECK expressions
-- are rebuilt for every INSERT statement; migration 0027). Written twice on purpose: the migration
-- needs it before its constraint, and every deploy must define it again or drop it as stale. Its
-- rules change only with a migration that checks the rows already stored.
CREATE OR REPLACE FUNCTION runhub._is_valid_credit(p_method text, p_confidence text, p_window_hours int,
                                                  p_sent_at timestamptz, p_paid_at timestamptz, p_amount_cents bigint)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN p_method IN ('wid_link', 'cart_match', 'amount_match', 'email_exact')
       AND p_confidence = CASE p_method WHEN 'wid_link' THEN 'high' WHEN 'cart_match' THEN 'medium' ELSE 'low' END
       AND p_window_hours BETWEEN 1 AND 8760
       AND p_sent_at <= p_paid_at AND p_paid_at - p_sent_at <= make_interval(hours => p_window_hours)
       AND p_amount_cents >= 0;
END
$$;

-- A method's confidence: a run link is certain, a cart nearly, an amount or an address alone a guess.
-- No SET clause: an expression inlined where it is used.
CREATE OR REPLACE FUNCTION runhub._confidence(p_method text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE p_method WHEN 'wid_link' THEN 'high' WHEN 'cart_match' THEN 'medium' ELSE 'low' END $$;

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
    PERFORM runhub._record_attribution(NEW);
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
        IF runhub._record_attribution(v_payment) THEN
            v_added := v_added + 1;
        END IF;
    END LOOP;
    RETURN v_added;
END
$$;

-- Why a payment was credited, or why not, in the words of the log (a dry run when it was not:
-- what recording it now would do). Any member.
CREATE OR REPLACE FUNCTION runhub.explain_attribution(project uuid, actor uuid, payment_event_id bigint)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_project ALIAS FOR project;
    p_actor ALIAS FOR actor;
    p_payment_event_id ALIAS FOR payment_event_id;
    v_payment  runhub.business_events;
    v_existing runhub.workflow_attributions;
    v_wid      text;
    v_link     jsonb;
    d          record;
BEGIN
    PERFORM runhub._authorize(p_project, p_actor);
    SELECT * INTO v_payment FROM runhub.business_events WHERE id = p_payment_event_id AND project_id = p_project;
    IF NOT FOUND THEN
        PERFORM runhub._raise('events.notFound', jsonb_build_object('eventId', p_payment_event_id));
    END IF;
    SELECT * INTO v_existing FROM runhub.workflow_attributions a WHERE a.payment_event_id = v_payment.id;
    IF FOUND THEN  -- credited: say so, and why its run link (if any) did not decide
        v_wid := runhub._payment_wid(v_payment.payload);
        IF v_wid IS NOT NULL AND v_existing.method <> 'wid_link' THEN
            v_link := runhub._link_why(v_payment.project_id, v_wid, v_payment.occurred_at);
        END IF;
        RETURN jsonb_build_object('paymentEventId', v_payment.id) || runhub._with_text(runhub._attribution_json(v_existing)
            || CASE WHEN v_link IS NOT NULL THEN jsonb_build_object('link', v_link) ELSE '{}' END);
    END IF;
    d := runhub._attribution_decision(v_payment);
    RETURN jsonb_build_object('paymentEventId', v_payment.id) || runhub._with_text(
        CASE WHEN d.method IS NOT NULL
             THEN runhub._attribution_reason('attribution.attributed', jsonb_build_object(
                      'runId', d.run_id, 'actionId', d.action_id, 'method', d.method,
                      'confidence', runhub._confidence(d.method), 'messageId', d.message_id,
                      'sentAt', runhub._iso(d.sent_at), 'windowHours', d.window_hours))
                  || jsonb_build_object('attributed', true, 'recorded', false)
             ELSE d.reason || jsonb_build_object('attributed', false) END
        || CASE WHEN d.link IS NOT NULL THEN jsonb_build_object('link', d.link) ELSE '{}' END);
END
$$;

-- A run that will send nothing more: finished, and (if cancelled while delivering) settled. No SET
-- clause: an expression inlined where it is used.
CREATE OR REPLACE FUNCTION runhub._run_settled(r runhub.workflow_runs)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT r.completed_at IS NOT NULL AND coalesce((r.result ->> 'pending')::int, 0) = 0 $$;

-- When a run's last mail went out: recorded once it settled, counted live while it delivers.
-- PL/pgSQL: its query's plan is cached for the session, where a SQL function with a SET clause,
-- called from another (_outcome), is planned again on every call.
CREATE OR REPLACE FUNCTION runhub._last_sent_at(r runhub.workflow_runs)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF runhub._run_settled(r) THEN
        RETURN r.last_sent_at;
    END IF;
    RETURN (SELECT max(o.sent_at) FROM runhub.workflow_run_recipients rc JOIN runhub.outbox o ON o.id = rc.id
             WHERE rc.run_id = r.id AND o.status = 'sent');
END
$$;

-- A run's Outcome (null when its action earns no money outcome): the credits of its mails, the
-- weakest confidence among them, the method of most of them (ties: the stronger), per method,
-- where the window ends, and final once it closed on a run that sends nothing more. A payment that
-- happened inside the window but is reported later still counts when it arrives. A run executed
-- with a holdout group adds `incremental`, what its mail caused (sql/44_lift.sql): every Outcome
-- shown (workflow_outcome, get_run, list_runs, list_actions, the digest's) carries it.
-- As a row (none for a run without one), with no SET clause, so that it inlines into a query over
-- many runs (the digest job's); _outcome is the same as a value.
CREATE OR REPLACE FUNCTION runhub._run_outcome(r runhub.workflow_runs)
RETURNS TABLE (outcome jsonb)
LANGUAGE sql STABLE
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
        || CASE WHEN r.holdout_percent > 0
                THEN coalesce((SELECT pg_catalog.jsonb_build_object('incremental', i.incremental)
                                 FROM runhub._incremental(r.id, r.project_id, NULL, NULL) AS i(incremental)
                                WHERE i.incremental IS NOT NULL), '{}')
                ELSE '{}' END
      FROM (SELECT runhub._last_sent_at(r) + make_interval(hours => r.outcome_window_hours) AS ends_at) w
      LEFT JOIN (SELECT a.method, count(*) AS conversions, sum(a.amount_cents) AS revenue,
                        array_position(ARRAY['wid_link', 'cart_match', 'amount_match', 'email_exact'], a.method) AS rank
                   FROM runhub.workflow_attributions a WHERE a.run_id = r.id GROUP BY a.method) m ON true
     WHERE r.outcome_window_hours IS NOT NULL
     GROUP BY w.ends_at
$$;

CREATE OR REPLACE FUNCTION runhub._outcome(r runhub.workflow_runs)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT o.outcome FROM runhub._run_outcome(r) o $$;

-- A run's Outcome, for any member; with `incremental` for a run executed with a holdout group.
CREATE OR REPLACE FUNCTION runhub.workflow_outcome(project uuid, actor uuid, run uuid)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_project ALIAS FOR project;
    p_actor ALIAS FOR actor;
    p_run ALIAS FOR run;
BEGIN
    PERFORM runhub._authorize(p_project, p_actor);
    RETURN runhub._outcome(runhub._require_run(p_project, p_run));
END
$$;
