-- The sender's side of the outbox: claim due messages with a lease, record each outcome as the
-- SMTP server gave it, retry with backoff, and end a run when its last message is final.
-- A message is marked sent only by record_sent, which the daemon calls after the server said 250.

-- The signed token of a one-click unsubscribe link for this address.
CREATE OR REPLACE FUNCTION runhub.unsubscribe_token(p_project uuid, p_email text)
RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT runhub._sign_unsubscribe(s.value, p_project, lower(p_email))
      FROM runhub.secrets s WHERE s.name = 'unsubscribe'
$$;

-- Act on a one-click unsubscribe: suppress the token's address for its project (idempotent).
CREATE OR REPLACE FUNCTION runhub.unsubscribe(p_token text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_parts text[] := runhub._verify_unsubscribe((SELECT value FROM runhub.secrets WHERE name = 'unsubscribe'), p_token);
BEGIN
    IF v_parts IS NULL OR NOT EXISTS (SELECT 1 FROM runhub.projects WHERE id::text = v_parts[1]) THEN
        PERFORM runhub._raise('mail.invalidUnsubscribeToken', '{}');
    END IF;
    PERFORM runhub.suppress(v_parts[1]::uuid, v_parts[2], 'unsubscribed');
END
$$;

-- A message as the sender renders it: its envelope and everything its template says.
CREATE OR REPLACE FUNCTION runhub._message_json(o runhub.outbox)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        'id', o.id, 'messageId', o.message_id, 'projectId', o.project_id, 'runId', o.run_id,
        'template', o.template, 'locale', o.locale, 'toEmail', o.to_email, 'toName', o.to_name,
        'attempts', o.attempts,
        'unsubscribeToken', CASE WHEN o.run_id IS NOT NULL THEN runhub.unsubscribe_token(o.project_id, o.to_email) END,
        'variables', o.variables || jsonb_strip_nulls(jsonb_build_object(
            'projectName', p.name, 'shopUrl', p.settings ->> 'shopUrl',
            'customerName', rc.name, 'link', rc.link, 'cartId', rc.cart_id,
            'amountCents', rc.amount_cents, 'currency', rc.currency,
            'subject', r.params ->> 'subject', 'content', r.params ->> 'content')))
      FROM runhub.projects p
      LEFT JOIN runhub.workflow_run_recipients rc ON rc.id = o.recipient_id
      LEFT JOIN runhub.workflow_runs r ON r.id = o.run_id
     WHERE p.id = o.project_id
$$;

-- Claim up to p_max due messages for p_worker: queued ones whose time has come, and ones whose
-- sender's lease expired (it crashed mid-send: the retry keeps the Message-ID). Messages to an
-- address suppressed since they were queued are cancelled instead of returned (the minute sweep
-- ends their runs if nothing else is left).
CREATE OR REPLACE FUNCTION runhub.claim_messages(p_worker text, p_max int DEFAULT 50, p_lease_seconds int DEFAULT 120)
RETURNS SETOF jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM runhub._check_claim(p_worker, p_max, p_lease_seconds, 3600);
    PERFORM runhub._give_up_lost_messages();
    RETURN QUERY
    WITH due AS (
        SELECT o.id,
               CASE WHEN o.run_id IS NULL THEN NULL
                    WHEN EXISTS (SELECT 1 FROM runhub.workflow_runs r WHERE r.id = o.run_id AND r.status = 'cancelled')
                    THEN 'run cancelled'
                    WHEN EXISTS (SELECT 1 FROM runhub.suppressions s WHERE s.project_id = o.project_id AND s.email = o.to_email)
                    THEN 'suppressed' END AS cancel_reason
          FROM runhub.outbox o
         WHERE (o.status = 'queued' AND o.next_attempt_at <= clock_timestamp())
            OR (o.status = 'sending' AND o.lease_expires_at < clock_timestamp())
         ORDER BY o.next_attempt_at
         LIMIT p_max
         FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE runhub.outbox o
           SET status = CASE WHEN due.cancel_reason IS NOT NULL THEN 'cancelled' ELSE 'sending' END,
               last_error = coalesce(due.cancel_reason, o.last_error),
               attempts = o.attempts + CASE WHEN due.cancel_reason IS NOT NULL THEN 0 ELSE 1 END,
               lease_owner = CASE WHEN due.cancel_reason IS NOT NULL THEN NULL ELSE p_worker END,
               lease_expires_at = CASE WHEN due.cancel_reason IS NOT NULL THEN NULL
                                       ELSE clock_timestamp() + make_interval(secs => p_lease_seconds) END
          FROM due
         WHERE o.id = due.id
        RETURNING o.*
    ), settled AS (
        UPDATE runhub.workflow_run_recipients rc SET status = 'cancelled', updated_at = now()
          FROM claimed c WHERE c.status = 'cancelled' AND rc.id = c.recipient_id
    )
    SELECT runhub._message_json(c) FROM claimed c WHERE c.status = 'sending';
END
$$;

-- Messages whose sender's lease lapsed c_max_attempts times without an outcome (the sender dies on
-- them, or they hang it) are failed rather than handed to the next sender forever.
CREATE OR REPLACE FUNCTION runhub._give_up_lost_messages()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c_max_attempts CONSTANT int := 8;
    v_run uuid;
BEGIN
    FOR v_run IN
        WITH lost AS (
            UPDATE runhub.outbox o
               SET status = 'failed', lease_owner = NULL, lease_expires_at = NULL,
                   last_error = format('no outcome after %s attempts: the sender was lost each time', o.attempts)
             WHERE o.status = 'sending' AND o.lease_expires_at < clock_timestamp() AND o.attempts >= c_max_attempts
            RETURNING o.recipient_id, o.run_id),
        failed AS (
            UPDATE runhub.workflow_run_recipients rc SET status = 'failed', updated_at = now()
              FROM lost WHERE rc.id = lost.recipient_id)
        SELECT DISTINCT run_id FROM lost WHERE run_id IS NOT NULL
    LOOP
        PERFORM runhub._complete_run_if_done(v_run);
    END LOOP;
END
$$;

-- End the delivering runs that have nothing left to send (for the minute sweep).
CREATE OR REPLACE FUNCTION runhub._complete_done_runs()
RETURNS int
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_run  uuid;
    v_done int := 0;
BEGIN
    FOR v_run IN SELECT r.id FROM runhub.workflow_runs r
                  WHERE r.executed_at IS NOT NULL
                    AND (r.status = 'running' OR (r.status = 'cancelled' AND (r.result ->> 'pending')::int > 0))
                    AND NOT EXISTS (SELECT 1 FROM runhub.workflow_run_recipients rc
                                     WHERE rc.run_id = r.id AND rc.status = 'queued') LOOP
        PERFORM runhub._complete_run_if_done(v_run);
        v_done := v_done + 1;
    END LOOP;
    RETURN v_done;
END
$$;

-- Extend p_worker's leases on messages it is still sending; returns how many it still holds.
CREATE OR REPLACE FUNCTION runhub.heartbeat_messages(p_worker text, p_ids bigint[], p_lease_seconds int DEFAULT 120)
RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_held int;
BEGIN
    IF p_lease_seconds IS NULL OR p_lease_seconds NOT BETWEEN 5 AND 3600 THEN
        PERFORM runhub._invalid('common.invalidInput', 'leaseSeconds', 'must be 5 to 3600');
    END IF;
    UPDATE runhub.outbox SET lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds)
     WHERE id = ANY (p_ids) AND status = 'sending' AND lease_owner = p_worker AND lease_expires_at > clock_timestamp();
    GET DIAGNOSTICS v_held = ROW_COUNT;
    RETURN v_held;
END
$$;

-- Give back messages p_worker claimed but will not send (it is shutting down): due again now.
CREATE OR REPLACE FUNCTION runhub.release_messages(p_worker text, p_ids bigint[])
RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_released int;
BEGIN
    UPDATE runhub.outbox
       SET status = 'queued', attempts = greatest(attempts - 1, 0), lease_owner = NULL, lease_expires_at = NULL,
           next_attempt_at = clock_timestamp()
     WHERE id = ANY (p_ids) AND status = 'sending' AND lease_owner = p_worker;
    GET DIAGNOSTICS v_released = ROW_COUNT;
    RETURN v_released;  -- a released message of a cancelled run is cancelled by the next claim
END
$$;

-- The server accepted the message (SMTP 250). Recorded even if the lease lapsed meanwhile: the mail
-- is out, and forgetting it would send it again. Appends the *_email_sent business event once.
CREATE OR REPLACE FUNCTION runhub.record_sent(p_id bigint, p_worker text, p_smtp_reply text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_message runhub.outbox;
BEGIN
    UPDATE runhub.outbox
       SET status = 'sent', sent_at = now(), smtp_code = 250, smtp_reply = left(p_smtp_reply, 500),
           lease_owner = NULL, lease_expires_at = NULL
     WHERE id = p_id AND status IN ('sending', 'queued')
    RETURNING * INTO v_message;
    IF NOT FOUND THEN
        RETURN coalesce((SELECT status FROM runhub.outbox WHERE id = p_id), 'unknown');
    END IF;
    IF v_message.recipient_id IS NOT NULL THEN
        UPDATE runhub.workflow_run_recipients SET status = 'sent', updated_at = now() WHERE id = v_message.recipient_id;
        PERFORM runhub._append_sent_event(v_message);
        PERFORM runhub._complete_run_if_done(v_message.run_id);
    END IF;
    RAISE LOG 'runhub %', jsonb_build_object('event', 'message_sent', 'runId', v_message.run_id,
        'messageId', v_message.message_id, 'attempts', v_message.attempts, 'worker', p_worker);
    RETURN 'sent';
END
$$;

-- The business event for an accepted workflow mail, with what attribution needs.
CREATE OR REPLACE FUNCTION runhub._append_sent_event(p_message runhub.outbox)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO runhub.business_events (project_id, event_type, occurred_at, idempotency_key, correlation_id,
                                        customer_email, customer_name, amount_cents, currency, payload)
    SELECT p_message.project_id, a.sent_event_type, now(), 'mail:' || p_message.message_id, rc.cart_id,
           rc.email, rc.name, rc.amount_cents, rc.currency,
           jsonb_strip_nulls(jsonb_build_object(
               'workflowRunId', rc.run_id, 'recipientEmail', rc.email, 'cartId', rc.cart_id,
               'abandonedAmountCents', rc.amount_cents, 'currency', rc.currency,
               'recoveryLink', rc.link, 'messageId', p_message.message_id))
      FROM runhub.workflow_run_recipients rc
      JOIN runhub.workflow_runs r ON r.id = rc.run_id
      JOIN runhub.actions a ON a.id = r.action_id
     WHERE rc.id = p_message.recipient_id
    ON CONFLICT (project_id, idempotency_key) DO NOTHING
$$;

-- The server refused the message, or the connection failed. A 4xx (or no answer) is retried with
-- exponential backoff and jitter, up to 8 attempts; a 5xx fails it for good, and a hard bounce
-- (550, 551, 553 or an enhanced 5.1.x status) suppresses the address for the project.
CREATE OR REPLACE FUNCTION runhub.record_failure(p_id bigint, p_worker text, p_smtp_code int, p_smtp_reply text)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c_max_attempts CONSTANT int := 8;
    v_message   runhub.outbox;
    v_permanent boolean := p_smtp_code BETWEEN 500 AND 599;
    v_status    text;
BEGIN
    IF p_smtp_code IS NOT NULL AND p_smtp_code NOT BETWEEN 400 AND 599 THEN
        PERFORM runhub._invalid('common.invalidInput', 'smtpCode', 'a failure is a 4xx or 5xx reply, or null');
    END IF;
    SELECT * INTO v_message FROM runhub.outbox WHERE id = p_id FOR UPDATE;
    IF NOT FOUND OR v_message.status <> 'sending' OR v_message.lease_owner IS DISTINCT FROM p_worker THEN
        RETURN 'lease_lost';
    END IF;
    v_status := CASE WHEN v_permanent OR v_message.attempts >= c_max_attempts THEN 'failed'
                     WHEN EXISTS (SELECT 1 FROM runhub.workflow_runs r WHERE r.id = v_message.run_id AND r.status = 'cancelled')
                     THEN 'cancelled'  -- the server did not take it and the run was cancelled: no retry
                     ELSE 'queued' END;
    UPDATE runhub.outbox
       SET status = v_status, smtp_code = p_smtp_code, smtp_reply = left(p_smtp_reply, 500),
           last_error = left(CASE WHEN p_smtp_reply LIKE p_smtp_code || '%' THEN p_smtp_reply
                                  ELSE concat_ws(' ', p_smtp_code, coalesce(p_smtp_reply, 'no reply')) END, 500),
           lease_owner = NULL, lease_expires_at = NULL,
           -- 30 s, 1, 2, 4 ... minutes, capped at 1 h, each with up to 50% jitter
           next_attempt_at = clock_timestamp() + make_interval(secs =>
               least(3600, 30 * 2 ^ greatest(v_message.attempts - 1, 0)) * (0.5 + random() / 2))
     WHERE id = p_id;
    IF v_status = 'cancelled' THEN
        UPDATE runhub.workflow_run_recipients SET status = 'cancelled', updated_at = now() WHERE id = v_message.recipient_id;
        PERFORM runhub._complete_run_if_done(v_message.run_id);
    ELSIF v_status = 'failed' AND v_message.recipient_id IS NOT NULL THEN
        UPDATE runhub.workflow_run_recipients SET status = 'failed', updated_at = now() WHERE id = v_message.recipient_id;
        IF p_smtp_code IN (550, 551, 553) OR p_smtp_reply ~ '^(\d{3}[ -])?5\.1\.\d{1,3}(\s|$)' THEN
            PERFORM runhub.suppress(v_message.project_id, v_message.to_email, 'bounced');
        END IF;
        PERFORM runhub._complete_run_if_done(v_message.run_id);
    END IF;
    RAISE LOG 'runhub %', jsonb_build_object('event', CASE v_status WHEN 'failed' THEN 'message_failed' ELSE 'message_retry' END,
        'runId', v_message.run_id, 'messageId', v_message.message_id, 'smtpCode', p_smtp_code, 'attempts', v_message.attempts);
    RETURN v_status;
END
$$;

-- End a delivering run once none of its messages is queued or being sent: succeeded if any mail
-- went out, failed if none did, with totals and the errors summarized. Locks the run, so the last
-- two outcomes recorded at once cannot both miss the end.
CREATE OR REPLACE FUNCTION runhub._complete_run_if_done(p_run uuid)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_run    runhub.workflow_runs;
    v_totals jsonb;
BEGIN
    SELECT * INTO v_run FROM runhub.workflow_runs WHERE id = p_run FOR UPDATE;
    IF NOT FOUND OR v_run.executed_at IS NULL OR v_run.status NOT IN ('running', 'cancelled') THEN
        RETURN;
    END IF;
    -- A recipient stays queued until its message is final (sent, failed or cancelled). Each
    -- caller updated its recipient before taking the run's lock, so the last one sees all others.
    IF EXISTS (SELECT 1 FROM runhub.workflow_run_recipients rc WHERE rc.run_id = p_run AND rc.status = 'queued') THEN
        RETURN;
    END IF;
    v_totals := runhub._run_totals(p_run) - 'pending' || jsonb_build_object('errorSummary', runhub._error_summary(p_run));
    IF v_run.status = 'cancelled' THEN  -- keep it cancelled; settle its final counts
        UPDATE runhub.workflow_runs SET result = v_totals || jsonb_build_object('errorSummary', v_run.result ->> 'errorSummary')
         WHERE id = p_run;
        RETURN;
    END IF;
    UPDATE runhub.workflow_runs
       SET status = CASE WHEN (v_totals ->> 'successful')::int > 0 THEN 'succeeded' ELSE 'failed' END,
           completed_at = now(), result = jsonb_strip_nulls(v_totals)
     WHERE id = p_run;
    RAISE LOG 'runhub %', jsonb_build_object('event', 'workflow_run_completed', 'runId', p_run, 'result', v_totals);
END
$$;

-- The failures of a run in a line: the three most common replies with their counts.
CREATE OR REPLACE FUNCTION runhub._error_summary(p_run uuid)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg(format('%s x %s', n, error), '; ' ORDER BY n DESC, error)
      FROM (SELECT left(coalesce(o.last_error, o.status), 120) AS error, count(*) AS n
              FROM runhub.workflow_run_recipients rc JOIN runhub.outbox o ON o.recipient_id = rc.id
             WHERE rc.run_id = p_run AND o.status IN ('failed', 'cancelled')
             GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 3) top
$$;
