-- The sender's side of the outbox: claim due messages with a lease, record each outcome as the
-- SMTP server gave it, retry with backoff, and end a run when its last message is final.
-- A message is marked sent only by record_sent, which the daemon calls after the server said 250.

-- What a cancellation's last_error says, as a reason of runhub.outbox_cancellations: expired (the
-- claim: too late to be of use), suppressed (the claim, or a suppression), run_cancelled (the
-- claim, or cancel_run). No SET clause: inlined where it is used.
CREATE OR REPLACE FUNCTION runhub._cancellation_reason(p_last_error text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN pg_catalog.starts_with(p_last_error, 'expired') THEN 'expired'
                WHEN pg_catalog.starts_with(p_last_error, 'suppressed') THEN 'suppressed'
                ELSE 'run_cancelled' END
$$;

-- The one rule of a message's lease: p_worker holds p_message while it is sending under p_worker's
-- lease and the lease has not lapsed (a lapsed one is anyone's: claim_messages takes it back). Every
-- call that acts on claimed messages acts only on those its worker holds. No SET clause: an
-- expression inlined where it is used (the planner turns p_message.status into the column).
CREATE OR REPLACE FUNCTION runhub._holds_message(p_message runhub.outbox, p_worker text)
RETURNS boolean
LANGUAGE sql VOLATILE
AS $$
    SELECT p_message.status = 'sending' AND p_message.lease_owner = p_worker
       AND p_message.lease_expires_at > pg_catalog.clock_timestamp()
$$;

-- The key new unsubscribe tokens are signed with: the newest one not revoked (rotation adds it
-- before revoking any other, so there always is one).
CREATE OR REPLACE FUNCTION runhub._unsubscribe_signing_key()
RETURNS TABLE (kid int, secret bytea)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT k.kid, k.secret FROM runhub.unsubscribe_keys k WHERE k.revoked_at IS NULL ORDER BY k.kid DESC LIMIT 1
$$;

-- The signed token of a one-click unsubscribe link for this address, under the newest key.
CREATE OR REPLACE FUNCTION runhub.unsubscribe_token(project uuid, email text)
RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT runhub._sign_unsubscribe(k.kid, k.secret, unsubscribe_token.project, a.address)
      FROM runhub._unsubscribe_signing_key() k, runhub._address(unsubscribe_token.email) a(address)
     WHERE unsubscribe_token.project IS NOT NULL AND a.address IS NOT NULL  -- a token for no address is no token
$$;

-- For operators (`runhub rotate-secret`; no runhub role may call it): a new key signs unsubscribe
-- tokens from now on while the older ones still verify. p_revoke_previous revokes every older key
-- as well, after a leak: the links signed with them stop working. Returns the new key's id, the
-- ids revoked now and the ids that still verify.
CREATE OR REPLACE FUNCTION runhub.rotate_unsubscribe_key(p_revoke_previous boolean DEFAULT false)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_key_id  int;
    v_revoked int[];
BEGIN
    IF p_revoke_previous IS NULL THEN
        PERFORM runhub._invalid('common.invalidInput', 'revokePrevious', 'must be true or false');
    END IF;
    -- One rotation at a time, so each takes the next id; readers (signing, verifying) never wait.
    LOCK TABLE runhub.unsubscribe_keys IN SHARE ROW EXCLUSIVE MODE;
    -- 32 bytes from pg_strong_random, as migration 0004 made the first (244 random bits)
    INSERT INTO runhub.unsubscribe_keys (kid, secret)
    SELECT coalesce(max(k.kid), 0) + 1,
           decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex')
      FROM runhub.unsubscribe_keys k
    RETURNING kid INTO v_key_id;
    IF p_revoke_previous THEN
        WITH revoked AS (
            UPDATE runhub.unsubscribe_keys k SET revoked_at = now()
             WHERE k.kid < v_key_id AND k.revoked_at IS NULL
            RETURNING k.kid)
        SELECT array_agg(r.kid ORDER BY r.kid) INTO v_revoked FROM revoked r;
    END IF;
    RAISE LOG 'runhub %', jsonb_build_object('event', 'unsubscribe_key_rotated', 'keyId', v_key_id,
                                             'revokedKeyIds', coalesce(v_revoked, '{}'));
    RETURN jsonb_build_object(
        'keyId', v_key_id,
        'revokedKeyIds', to_jsonb(coalesce(v_revoked, '{}')),
        'activeKeyIds', (SELECT jsonb_agg(k.kid ORDER BY k.kid) FROM runhub.unsubscribe_keys k WHERE k.revoked_at IS NULL));
END
$$;

-- Act on a one-click unsubscribe: suppress the token's address for its project (idempotent). The
-- token must be intact and signed by the key it names (v1: key 1), not revoked.
CREATE OR REPLACE FUNCTION runhub.unsubscribe(token text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_token ALIAS FOR token;
    v_parts text[];  -- {project, email}; the project a canonical uuid
BEGIN
    IF octet_length(p_token) <= 2000 THEN  -- no token of ours is longer: not worth a trip to Python
        SELECT runhub._verify_unsubscribe(array_agg(k.kid ORDER BY k.kid), array_agg(k.secret ORDER BY k.kid), p_token)
          INTO v_parts
          FROM runhub.unsubscribe_keys k WHERE k.revoked_at IS NULL;
    END IF;
    IF v_parts IS NULL OR NOT EXISTS (SELECT 1 FROM runhub.projects WHERE id = v_parts[1]::uuid) THEN
        PERFORM runhub._raise('mail.invalidUnsubscribeToken', '{}');
    END IF;
    PERFORM runhub._suppress(v_parts[1]::uuid, lower(v_parts[2] COLLATE "C"), 'unsubscribed');
END
$$;

-- Messages as the sender renders them, in the order of p_ids: each one's envelope and everything
-- its template says. One PL/Python call signs the batch's unsubscribe links, under the newest key
-- (a call per message cost more than the rest of the claim).
CREATE OR REPLACE FUNCTION runhub._messages_json(p_ids bigint[])
RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_key    record;
    v_tokens text[];
BEGIN
    SELECT * INTO v_key FROM runhub._unsubscribe_signing_key();
    SELECT runhub._sign_unsubscribe_many(v_key.kid, v_key.secret,
                                         array_agg(o.project_id ORDER BY i.n), array_agg(lower(o.to_email COLLATE "C") ORDER BY i.n))
      INTO v_tokens  -- v_tokens[n] is p_ids[n]'s (null for no such message)
      FROM unnest(p_ids) WITH ORDINALITY AS i(id, n) LEFT JOIN runhub.outbox o ON o.id = i.id;
    RETURN QUERY
    SELECT jsonb_build_object(
        'id', o.id, 'messageId', o.message_id, 'projectId', o.project_id, 'runId', o.run_id,
        'template', o.template, 'locale', o.locale, 'toEmail', o.to_email, 'toName', o.to_name,
        -- workflow mail is the shop's: its name on the platform's address, replies to the shop
        'fromName', CASE WHEN o.run_id IS NOT NULL THEN coalesce(p.settings ->> 'senderName', p.name) END,
        'replyTo', CASE WHEN o.run_id IS NOT NULL THEN p.settings ->> 'replyTo' END,
        'attempts', o.attempts,
        'unsubscribeToken', CASE WHEN o.run_id IS NOT NULL THEN v_tokens[i.n] END,
        'variables', o.variables || jsonb_strip_nulls(jsonb_build_object(
            'projectName', p.name, 'shopUrl', p.settings ->> 'shopUrl',
            'customerName', rc.name, 'link', rc.link, 'cartId', rc.cart_id,
            'amountCents', rc.amount_cents, 'currency', rc.currency,
            'subject', r.params ->> 'subject', 'content', r.params ->> 'content')))
      FROM unnest(p_ids) WITH ORDINALITY AS i(id, n)
      JOIN runhub.outbox o ON o.id = i.id
      JOIN runhub.projects p ON p.id = o.project_id
      LEFT JOIN runhub.workflow_run_recipients rc ON rc.id = o.recipient_id
      LEFT JOIN runhub.workflow_runs r ON r.id = o.run_id
     ORDER BY i.n;
END
$$;

-- Claim up to p_max due messages for p_worker: queued ones whose time has come, and ones whose
-- sender's lease expired (it crashed mid-send: the retry keeps the Message-ID). Messages that
-- expired (expires_at: the mail lost its point, e.g. while the relay was down), of a cancelled run
-- or to an address suppressed since they were queued are cancelled instead of returned, the
-- reason in last_error (the minute sweep ends their runs if nothing else is left).
CREATE OR REPLACE FUNCTION runhub.claim_messages(worker text, max int DEFAULT 50, lease_seconds int DEFAULT 120)
RETURNS SETOF jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_worker ALIAS FOR worker;
    p_max ALIAS FOR max;
    p_lease_seconds ALIAS FOR lease_seconds;
    v_ids bigint[];
BEGIN
    PERFORM runhub._check_claim(p_worker, p_max, p_lease_seconds, 'maxMessageLeaseSeconds');
    PERFORM runhub._give_up_lost_messages();
    -- Two index scans that stop after p_max rows each (a sort of every due message would grow
    -- with the queue): due queued messages, and messages whose sender's lease lapsed.
    WITH queued_due AS (
        SELECT o.id, o.run_id, o.project_id, o.to_email, o.next_attempt_at, o.expires_at FROM runhub.outbox o
         WHERE o.status = 'queued' AND o.next_attempt_at <= clock_timestamp()
         ORDER BY o.next_attempt_at LIMIT p_max FOR UPDATE SKIP LOCKED
    ), lapsed AS (
        SELECT o.id, o.run_id, o.project_id, o.to_email, o.next_attempt_at, o.expires_at FROM runhub.outbox o
         WHERE o.status = 'sending' AND o.lease_expires_at < clock_timestamp()
         ORDER BY o.lease_expires_at LIMIT p_max FOR UPDATE SKIP LOCKED
    ), candidates AS (
        SELECT * FROM queued_due UNION ALL SELECT * FROM lapsed
    ), due AS (
        SELECT o.id,
               CASE WHEN o.expires_at <= clock_timestamp()
                    THEN format('expired at %s: too late to be of use', runhub._iso(o.expires_at))
                    WHEN o.run_id IS NULL THEN NULL
                    WHEN EXISTS (SELECT 1 FROM runhub.workflow_runs r WHERE r.id = o.run_id AND r.status = 'cancelled')
                    THEN 'run cancelled'
                    WHEN EXISTS (SELECT 1 FROM runhub.suppressions s WHERE s.project_id = o.project_id AND s.email = o.to_email)
                    THEN 'suppressed' END AS cancel_reason
          FROM candidates o
         ORDER BY o.next_attempt_at, o.id
         LIMIT p_max
    ), claimed AS (
        UPDATE runhub.outbox o
           SET status = CASE WHEN due.cancel_reason IS NOT NULL THEN 'cancelled' ELSE 'sending' END,
               last_error = coalesce(due.cancel_reason, o.last_error),
               lease_owner = CASE WHEN due.cancel_reason IS NOT NULL THEN NULL ELSE p_worker END,
               lease_expires_at = CASE WHEN due.cancel_reason IS NOT NULL THEN NULL
                                       ELSE clock_timestamp() + make_interval(secs => p_lease_seconds) END,
               started_at = NULL
          FROM due
         WHERE o.id = due.id
        RETURNING o.*
    ), settled AS (
        UPDATE runhub.workflow_run_recipients rc SET status = 'cancelled', updated_at = now()
          FROM claimed c WHERE c.status = 'cancelled' AND rc.id = c.recipient_id
    ), counted AS (
        UPDATE runhub.outbox_cancellations k SET count = k.count + c.n
          FROM (SELECT runhub._cancellation_reason(c.last_error) AS reason, count(*) AS n
                  FROM claimed c WHERE c.status = 'cancelled' GROUP BY 1) c
         WHERE k.reason = c.reason
    )
    SELECT array_agg(c.id ORDER BY c.next_attempt_at, c.id) INTO v_ids FROM claimed c WHERE c.status = 'sending';
    IF v_ids IS NOT NULL THEN
        RETURN QUERY SELECT * FROM runhub._messages_json(v_ids);
    END IF;
END
$$;

-- Messages whose sender was lost while sending them, on their c_max_attempts-th attempt (the sender
-- dies on them, or they hang it), are failed rather than handed to the next sender forever. Only
-- if the lost sender had started them (start_messages): those it merely held are claimed again.
CREATE OR REPLACE FUNCTION runhub._give_up_lost_messages()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c_max_attempts CONSTANT int := runhub._constant('maxSendAttempts');
    v_run uuid;
BEGIN
    FOR v_run IN
        WITH lost AS (
            UPDATE runhub.outbox o
               SET status = 'failed', lease_owner = NULL, lease_expires_at = NULL,
                   last_error = format('no outcome after %s attempts: the sender was lost each time', o.attempts)
             WHERE o.status = 'sending' AND o.lease_expires_at < clock_timestamp() AND o.attempts >= c_max_attempts
               AND o.started_at IS NOT NULL
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
CREATE OR REPLACE FUNCTION runhub.heartbeat_messages(worker text, ids bigint[], lease_seconds int DEFAULT 120)
RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_worker ALIAS FOR worker;
    p_ids ALIAS FOR ids;
    p_lease_seconds ALIAS FOR lease_seconds;
    v_held int;
BEGIN
    PERFORM runhub._check_lease(p_worker, p_lease_seconds, 'maxMessageLeaseSeconds');
    PERFORM runhub._check_ids(p_ids);
    UPDATE runhub.outbox o SET lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds)
     WHERE o.id = ANY (p_ids) AND runhub._holds_message(o, p_worker);
    GET DIAGNOSTICS v_held = ROW_COUNT;
    RETURN v_held;
END
$$;

-- p_worker is about to render and send these messages: an attempt each (attempts counts sends
-- begun, not claims: a crashed sender's queue is not charged), noted in started_at (see
-- _give_up_lost_messages). The sender calls it in the statement that records its previous
-- outcomes. Returns the ids it still holds a lease on; it must not send the others (their lease
-- lapsed, another sender may have them).
CREATE OR REPLACE FUNCTION runhub.start_messages(worker text, ids bigint[])
RETURNS SETOF bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan  -- as record_sent_many: a few rows by key, one plan
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    p_worker ALIAS FOR worker;
    p_ids ALIAS FOR ids;
BEGIN
    PERFORM runhub._check_worker(p_worker);
    PERFORM runhub._check_ids(p_ids);
    RETURN QUERY
    UPDATE runhub.outbox o SET started_at = clock_timestamp(), attempts = o.attempts + 1
     WHERE o.id = ANY (p_ids) AND runhub._holds_message(o, p_worker)
    RETURNING o.id;
END
$$;

-- Give back messages p_worker claimed but will not send (it is shutting down): due again now.
CREATE OR REPLACE FUNCTION runhub.release_messages(worker text, ids bigint[])
RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_worker ALIAS FOR worker;
    p_ids ALIAS FOR ids;
    v_released int;
BEGIN
    PERFORM runhub._check_worker(p_worker);
    PERFORM runhub._check_ids(p_ids);
    UPDATE runhub.outbox o
       SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL,
           next_attempt_at = clock_timestamp(), started_at = NULL
     WHERE o.id = ANY (p_ids) AND runhub._holds_message(o, p_worker);
    GET DIAGNOSTICS v_released = ROW_COUNT;
    RETURN v_released;  -- a released message of a cancelled run is cancelled by the next claim
END
$$;

-- p_worker started these messages but could not hand them to its SMTP relay (it did not answer,
-- or refused the session: TLS, AUTH, a 421 greeting): the relay's fault, not theirs. Due again now
-- without the attempt their start charged; p_reason kept in last_error. Returns how many.
CREATE OR REPLACE FUNCTION runhub.defer_messages(worker text, ids bigint[], reason text)
RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_worker ALIAS FOR worker;
    p_ids ALIAS FOR ids;
    p_reason ALIAS FOR reason;
    v_deferred int;
BEGIN
    PERFORM runhub._check_worker(p_worker);
    PERFORM runhub._check_ids(p_ids);
    UPDATE runhub.outbox o
       SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL, next_attempt_at = clock_timestamp(),
           attempts = CASE WHEN o.started_at IS NOT NULL THEN greatest(o.attempts - 1, 0) ELSE o.attempts END,
           started_at = NULL, last_error = left(p_reason, 500)
     WHERE o.id = ANY (p_ids) AND runhub._holds_message(o, p_worker);
    GET DIAGNOSTICS v_deferred = ROW_COUNT;
    RETURN v_deferred;
END
$$;

-- p_worker's SMTP relay (host:port) answers (p_error null) or not: kept per sender for `runhub
-- status` ("relay unreachable since ..."), the time it went down kept while it stays down.
CREATE OR REPLACE FUNCTION runhub.report_relay(worker text, relay text, error text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_worker ALIAS FOR worker;
    p_relay ALIAS FOR relay;
    p_error ALIAS FOR error;
BEGIN
    PERFORM runhub._check_worker(p_worker);
    IF p_relay IS NULL OR btrim(p_relay) = '' THEN
        PERFORM runhub._invalid('common.invalidInput', 'relay', 'is required: the relay''s host:port');
    END IF;
    INSERT INTO runhub.relay_status AS r (worker, relay, down_since, last_error, updated_at)
    VALUES (p_worker, left(p_relay, 200), CASE WHEN p_error IS NOT NULL THEN now() END, left(p_error, 500), now())
    ON CONFLICT (worker) DO UPDATE
       SET relay = excluded.relay, last_error = excluded.last_error, updated_at = now(),
           down_since = CASE WHEN p_error IS NULL THEN NULL ELSE coalesce(r.down_since, now()) END;
    DELETE FROM runhub.relay_status WHERE updated_at < now() - interval '7 days';  -- senders long gone
END
$$;

-- The server accepted these messages (SMTP 250 each), recorded in one transaction (see
-- record_sent): p_replies[i] is the server's reply to p_ids[i]. The sender records its workers'
-- outcomes together (one commit for several mails). Only a message p_worker is sending under a
-- lease it still holds is recorded ('sent'); any other id - unknown, queued, sent already, another
-- worker's, a lapsed lease - answers 'lease_lost' and changes nothing, so a sender login can
-- neither mark a mail sent that it never claimed nor learn which ids exist. Returns each id with
-- its answer, in the order given.
CREATE OR REPLACE FUNCTION runhub.record_sent_many(worker text, ids bigint[], replies text[])
RETURNS TABLE (id bigint, status text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- Every statement here touches a few rows by key, whatever the batch: one plan, planned once
-- (planning cost more than running), and by index even on a small table (a generic plan does not
-- know the batch is small, and would scan a young outbox whole).
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    p_worker ALIAS FOR worker;
    p_ids ALIAS FOR ids;
    p_replies ALIAS FOR replies;
    v_runs   uuid[];
    v_run    uuid;
    v_sent   bigint[];
    v_events runhub.business_events[];
BEGIN
    PERFORM runhub._check_worker(p_worker);
    PERFORM runhub._check_ids(p_ids);
    IF p_ids IS NULL OR p_replies IS NULL OR array_ndims(p_replies) > 1 OR cardinality(p_replies) <> cardinality(p_ids) THEN
        PERFORM runhub._invalid('common.invalidInput', 'ids', 'must come with one reply each');
    END IF;
    -- The input in id order, so rows are taken in id order: two overlapping batches (a lease
    -- lapsed and a second sender took the message) wait for each other rather than deadlock.
    WITH input AS (
        SELECT DISTINCT ON (i.id) i.id, i.reply FROM unnest(p_ids, p_replies) AS i(id, reply) ORDER BY i.id
    ), sent AS (
        UPDATE runhub.outbox o
           SET status = 'sent', sent_at = now(), smtp_code = 250, smtp_reply = left(i.reply, 500),
               lease_owner = NULL, lease_expires_at = NULL
          FROM input i
         WHERE o.id = i.id AND runhub._holds_message(o, p_worker)
        RETURNING o.id, o.recipient_id, o.run_id, o.message_id
    ), recipients AS (
        UPDATE runhub.workflow_run_recipients rc SET status = 'sent', updated_at = now()
          FROM sent WHERE rc.id = sent.recipient_id
        RETURNING rc.*, sent.message_id
    ), sent_events AS (
        -- What attribution needs, once per message however often it went out (_store_events).
        SELECT array_agg(runhub._event_row(
                   rc.project_id, a.sent_event_type, now(), 'mail:' || rc.message_id, rc.cart_id, rc.email, rc.name,
                   NULL, rc.amount_cents, rc.currency,
                   jsonb_strip_nulls(jsonb_build_object(
                       'workflowRunId', rc.run_id, 'recipientEmail', rc.email, 'cartId', rc.cart_id,
                       'abandonedAmountCents', rc.amount_cents, 'currency', rc.currency,
                       'recoveryLink', rc.link, 'messageId', rc.message_id)))) AS events
          FROM recipients rc
          JOIN runhub.workflow_runs r ON r.id = rc.run_id
          JOIN runhub.actions a ON a.id = r.action_id
    )
    SELECT array_agg(DISTINCT sent.run_id ORDER BY sent.run_id) FILTER (WHERE sent.run_id IS NOT NULL),
           coalesce(array_agg(sent.id), '{}'), (SELECT e.events FROM sent_events e)
      INTO v_runs, v_sent, v_events
      FROM sent;
    IF v_events IS NOT NULL THEN
        PERFORM runhub._store_events(v_events);
    END IF;
    -- After the recipients are updated: each run's lock is taken in id order, once per batch.
    FOREACH v_run IN ARRAY coalesce(v_runs, '{}') LOOP
        PERFORM runhub._complete_run_if_done(v_run);
    END LOOP;
    RAISE LOG 'runhub %', jsonb_build_object('event', 'messages_sent', 'worker', p_worker, 'ids', p_ids);
    RETURN QUERY
    SELECT i.id, CASE WHEN i.id = ANY (v_sent) THEN 'sent' ELSE 'lease_lost' END
      FROM unnest(p_ids) WITH ORDINALITY AS i(id, n)
     ORDER BY i.n;
END
$$;

-- The server accepted the message (SMTP 250). Recorded only while p_worker holds its lease (see
-- record_sent_many): a sender paused past its lease may see its mail go out twice, never a mail
-- marked sent that it did not send. Appends the *_email_sent business event once. Returns 'sent',
-- or 'lease_lost' (for an unknown id too).
CREATE OR REPLACE FUNCTION runhub.record_sent(id bigint, worker text, smtp_reply text DEFAULT NULL)
RETURNS text
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.status FROM runhub.record_sent_many(record_sent.worker, ARRAY[record_sent.id], ARRAY[record_sent.smtp_reply]) r
$$;

-- The server refused the message, or the connection failed. A 4xx (or no answer) is retried with
-- exponential backoff and jitter, up to 8 attempts; a 5xx fails it for good, and a hard bounce
-- (550, 551, 553 or an enhanced 5.1.x status) suppresses the address for the project.
CREATE OR REPLACE FUNCTION runhub.record_failure(id bigint, worker text, smtp_code int, smtp_reply text)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_id ALIAS FOR id;
    p_worker ALIAS FOR worker;
    p_smtp_code ALIAS FOR smtp_code;
    p_smtp_reply ALIAS FOR smtp_reply;
    c_max_attempts CONSTANT int := runhub._constant('maxSendAttempts');
    v_message   runhub.outbox;
    v_permanent boolean := p_smtp_code BETWEEN 500 AND 599;
    v_status    text;
BEGIN
    PERFORM runhub._check_worker(p_worker);
    IF p_smtp_code IS NOT NULL AND p_smtp_code NOT BETWEEN 400 AND 599 THEN
        PERFORM runhub._invalid('common.invalidInput', 'smtpCode', 'a failure is a 4xx or 5xx reply, or null');
    END IF;
    SELECT * INTO v_message FROM runhub.outbox WHERE id = p_id FOR UPDATE;
    IF NOT FOUND OR runhub._holds_message(v_message, p_worker) IS NOT TRUE THEN
        RETURN 'lease_lost';  -- unknown, not sending, another worker's or lapsed: one answer for all
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
            PERFORM runhub._suppress(v_message.project_id, lower(v_message.to_email COLLATE "C"), 'bounced');
        END IF;
        PERFORM runhub._complete_run_if_done(v_message.run_id);
    END IF;
    RAISE LOG 'runhub %', jsonb_build_object('event', CASE v_status WHEN 'failed' THEN 'message_failed' ELSE 'message_retry' END,
        'runId', v_message.run_id, 'messageId', v_message.message_id, 'smtpCode', p_smtp_code, 'attempts', v_message.attempts);
    RETURN v_status;
END
$$;

-- End a delivering run once none of its messages is queued or being sent: succeeded if any mail
-- went out (or its every recipient was held out), failed if none did, with totals and the errors summarized. Locks the run, so the last
-- two outcomes recorded at once cannot both miss the end.
CREATE OR REPLACE FUNCTION runhub._complete_run_if_done(p_run uuid)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_run       runhub.workflow_runs;
    v_totals    jsonb;
    v_last_sent timestamptz;
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
    -- Its attribution window ends this long after its last mail: fixed now, read by every outcome.
    v_last_sent := (SELECT max(o.sent_at) FROM runhub.workflow_run_recipients rc JOIN runhub.outbox o ON o.id = rc.id
                     WHERE rc.run_id = p_run AND o.status = 'sent');
    IF v_run.status = 'cancelled' THEN  -- keep it cancelled; settle its final counts
        UPDATE runhub.workflow_runs SET result = v_totals || jsonb_build_object('errorSummary', v_run.result ->> 'errorSummary'),
                                        last_sent_at = v_last_sent
         WHERE id = p_run;
        RETURN;
    END IF;
    UPDATE runhub.workflow_runs
       SET status = CASE WHEN (v_totals ->> 'successful')::int > 0 THEN 'succeeded'
                         -- everyone held out: the run did what it was asked (nobody to mail)
                         WHEN coalesce((v_totals ->> 'heldOut')::int, 0) = (v_totals ->> 'totalRecipients')::int THEN 'succeeded'
                         ELSE 'failed' END,
           completed_at = now(), result = jsonb_strip_nulls(v_totals), last_sent_at = v_last_sent
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
              FROM runhub.workflow_run_recipients rc JOIN runhub.outbox o ON o.id = rc.id
             WHERE rc.run_id = p_run AND o.status IN ('failed', 'cancelled')
             GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 3) top
$$;

-- Finished mail (sent, failed or cancelled) older than p_keep is deleted, 5,000 rows a transaction
-- (oldest ids first: an index scan that stops at once), so the outbox holds what is in play and
-- recent history. Queued and sending rows are never touched, and a delete locks only finished rows:
-- claims (SKIP LOCKED on queued ones) never wait for it. Run daily by pg_cron (purge-finished-mail);
-- a procedure, so that it commits between batches (no SET clause: it runs with its caller's rights).
-- Mail attribution may still credit (within its run's outcome window) stays. Credits, recipients
-- and digests keep their own rows. purged: how many it deleted.
CREATE OR REPLACE PROCEDURE runhub.purge_finished_mail(INOUT purged bigint DEFAULT NULL, keep interval DEFAULT '30 days')
LANGUAGE plpgsql
AS $$
DECLARE
    c_batch CONSTANT int := 5000;
    v_gone  int;
BEGIN
    IF keep IS NULL OR keep < interval '1 day' THEN
        RAISE EXCEPTION 'runhub.purge_finished_mail: keep must be at least a day, not %', keep USING ERRCODE = '22023';
    END IF;
    purged := 0;
    LOOP
        DELETE FROM runhub.outbox
         WHERE id IN (SELECT o.id FROM runhub.outbox o
                       WHERE o.status IN ('sent', 'failed', 'cancelled')
                         AND coalesce(o.sent_at, o.created_at) < now() - keep
                         -- a touch attribution may still credit stays for its run's whole window
                         AND NOT EXISTS (SELECT 1 FROM runhub.workflow_runs r
                                          WHERE r.id = o.run_id AND o.sent_at >= now() - make_interval(hours => r.outcome_window_hours))
                       ORDER BY o.id
                       LIMIT c_batch);
        GET DIAGNOSTICS v_gone = ROW_COUNT;
        purged := purged + v_gone;
        COMMIT;
        EXIT WHEN v_gone < c_batch;
    END LOOP;
END
$$;

-- Whether the sender has nothing to do: no run to execute, no digest due, no message due or being sent (for
-- `runhub sender --until-idle`, which connects as runhub_sender and so cannot read the tables).
CREATE OR REPLACE FUNCTION runhub.sender_idle()
RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT NOT EXISTS (SELECT 1 FROM runhub.workflow_runs
                        WHERE status = 'queued' OR (status = 'running' AND executed_at IS NULL))
       AND NOT EXISTS (SELECT 1 FROM runhub.projects WHERE digest_next_at <= now())
       AND NOT EXISTS (SELECT 1 FROM runhub.outbox
                        WHERE (status = 'queued' AND next_attempt_at <= now()) OR status = 'sending')
$$;
