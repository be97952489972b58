-- Workflows, execution side: claiming runs with a lease, executing them on fresh data (the
-- execution-time policy layer), heartbeats, and the sweep that pg_cron runs every minute.

-- Refuse a bad worker name (every function of the sender's takes one, stores it or logs it).
CREATE OR REPLACE FUNCTION runhub._check_worker(p_worker text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_worker IS NULL OR length(p_worker) NOT BETWEEN 1 AND 200 THEN
        PERFORM runhub._invalid('common.invalidInput', 'worker', 'is required: 1 to 200 characters');
    END IF;
END
$$;

-- Refuse a bad worker name, or a lease outside minLeaseSeconds to runhub._constants()'s p_max_lease
-- (the claims and the heartbeats of runs and of messages).
CREATE OR REPLACE FUNCTION runhub._check_lease(p_worker text, p_lease_seconds int, p_max_lease text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_min int := runhub._constant('minLeaseSeconds');
    v_max int := runhub._constant(p_max_lease);
BEGIN
    PERFORM runhub._check_worker(p_worker);
    IF p_lease_seconds IS NULL OR p_lease_seconds NOT BETWEEN v_min AND v_max THEN
        PERFORM runhub._invalid('common.invalidInput', 'leaseSeconds', format('must be %s to %s', v_min, v_max));
    END IF;
END
$$;

-- Refuse a claim's bad arguments (shared by claim_runs and claim_messages).
CREATE OR REPLACE FUNCTION runhub._check_claim(p_worker text, p_max int, p_lease_seconds int, p_max_lease text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM runhub._check_lease(p_worker, p_lease_seconds, p_max_lease);
    IF p_max IS NULL OR p_max NOT BETWEEN 1 AND runhub._constant('maxClaimBatch') THEN
        PERFORM runhub._invalid('common.invalidInput', 'max', format('must be 1 to %s', runhub._constant('maxClaimBatch')));
    END IF;
END
$$;

-- Refuse a list of message ids no claim could have given: nested, holding a null, or longer than a
-- claim (maxClaimBatch); null is none. The sender's batch calls are bounded by this, not by a
-- statement_timeout its login could lift.
CREATE OR REPLACE FUNCTION runhub._check_ids(p_ids bigint[])
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF array_ndims(p_ids) > 1 THEN  -- apart: array_position refuses a multidimensional array
        PERFORM runhub._invalid('common.invalidInput', 'ids', format('must be a list of up to %s ids, none null', runhub._constant('maxClaimBatch')));
    END IF;
    IF cardinality(p_ids) > runhub._constant('maxClaimBatch') OR array_position(p_ids, NULL) IS NOT NULL THEN
        PERFORM runhub._invalid('common.invalidInput', 'ids', format('must be a list of up to %s ids, none null', runhub._constant('maxClaimBatch')));
    END IF;
END
$$;

-- Claim up to p_max runs for p_worker: queued ones, and running ones whose execution lease expired
-- (their worker died before writing the messages). One statement, SKIP LOCKED.
CREATE OR REPLACE FUNCTION runhub.claim_runs(worker text, max int DEFAULT 10, lease_seconds int DEFAULT 300)
RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_worker ALIAS FOR worker;
    p_max ALIAS FOR max;
    p_lease_seconds ALIAS FOR lease_seconds;
    c_max_attempts CONSTANT int := runhub._constant('maxExecutionAttempts');
BEGIN
    PERFORM runhub._check_claim(p_worker, p_max, p_lease_seconds, 'maxRunLeaseSeconds');
    -- A run whose execution kept failing (its worker died or it raised, c_max_attempts times) is
    -- given up rather than claimed forever.
    PERFORM runhub._fail_run(r.id, 'workflows.executionError', jsonb_build_object('attempts', r.attempts),
                             format('Execution did not finish in %s attempts', r.attempts))
       FROM runhub.workflow_runs r
      WHERE r.status = 'running' AND r.executed_at IS NULL AND r.lease_expires_at < clock_timestamp()
        AND r.attempts >= c_max_attempts
        FOR UPDATE SKIP LOCKED;
    RETURN QUERY
    -- As claim_messages: two index scans that stop after p_max rows each, not a sort of all.
    WITH queued AS (
        SELECT r.id, r.requested_at FROM runhub.workflow_runs r
         WHERE r.status = 'queued'
         ORDER BY r.requested_at LIMIT p_max FOR UPDATE SKIP LOCKED
    ), lapsed AS (
        SELECT r.id, r.requested_at FROM runhub.workflow_runs r
         WHERE r.status = 'running' AND r.executed_at IS NULL AND r.lease_expires_at < clock_timestamp()
         ORDER BY r.lease_expires_at LIMIT p_max FOR UPDATE SKIP LOCKED
    ), claimable AS (
        SELECT c.id FROM (SELECT * FROM queued UNION ALL SELECT * FROM lapsed) c
         ORDER BY c.requested_at LIMIT p_max)
    UPDATE runhub.workflow_runs r
       SET status = 'running', started_at = coalesce(r.started_at, now()), attempts = r.attempts + 1,
           lease_owner = p_worker, lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds),
           last_heartbeat_at = clock_timestamp()
      FROM claimable c
     WHERE r.id = c.id
    RETURNING r.id;
END
$$;

-- Hold the execution locks of these projects until the transaction ends: executions of one
-- project run one at a time, so the frequency cap spans all its workflows. Rows of
-- runhub.execution_locks (made on first need), taken in project order, so two batches wait for
-- each other rather than deadlock; no role but the owner can take them (migration 0019).
CREATE OR REPLACE FUNCTION runhub._lock_executions(p_projects uuid[])
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO runhub.execution_locks (project_id)
    SELECT DISTINCT p FROM unnest(p_projects) p ORDER BY 1
    ON CONFLICT (project_id) DO NOTHING;
    PERFORM 1 FROM runhub.execution_locks l WHERE l.project_id = ANY (p_projects) ORDER BY l.project_id FOR UPDATE;
END
$$;

-- Take a job's lock for this transaction if no other run of it holds it: true when taken.
CREATE OR REPLACE FUNCTION runhub._try_job_lock(p_job text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM 1 FROM runhub.job_locks WHERE job = p_job FOR UPDATE SKIP LOCKED;
    RETURN FOUND;
END
$$;

-- Extend p_worker's lease on a run it is executing; false when it no longer holds it.
CREATE OR REPLACE FUNCTION runhub.heartbeat_run(run uuid, worker text, lease_seconds int DEFAULT 300)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_run ALIAS FOR run;
    p_worker ALIAS FOR worker;
    p_lease_seconds ALIAS FOR lease_seconds;
BEGIN
    PERFORM runhub._check_lease(p_worker, p_lease_seconds, 'maxRunLeaseSeconds');
    UPDATE runhub.workflow_runs
       SET lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds),
           last_heartbeat_at = clock_timestamp()
     WHERE id = p_run AND status = 'running' AND executed_at IS NULL
       AND lease_owner = p_worker AND lease_expires_at > clock_timestamp();
    RETURN FOUND;
END
$$;

-- A URL query value: UTF-8 bytes outside RFC 3986's unreserved set, percent-encoded.
-- PL/pgSQL, not SQL: called once per recipient of a recovery, a SQL function with a SET clause is
-- planned at every call; a cart id of unreserved characters only (the common case) is its own encoding.
CREATE OR REPLACE FUNCTION runhub._url_encode(p_text text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_text ~ '^[A-Za-z0-9._~-]*$' THEN
        RETURN p_text;
    END IF;
    RETURN (SELECT coalesce(string_agg(CASE WHEN chr(b) ~ '^[A-Za-z0-9._~-]$' AND b < 128 THEN chr(b)
                                            ELSE '%' || upper(lpad(to_hex(b), 2, '0')) END, '' ORDER BY i), '')
              FROM (SELECT i, get_byte(convert_to(p_text, 'UTF8'), i) AS b
                      FROM generate_series(0, octet_length(convert_to(p_text, 'UTF8')) - 1) AS i) bytes);
END
$$;

-- End a run that execution refused or could not finish, with its reason.
CREATE OR REPLACE FUNCTION runhub._fail_run(p_run uuid, p_reason text, p_params jsonb, p_summary text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE runhub.workflow_runs
       SET status = 'failed', completed_at = now(), lease_owner = NULL, lease_expires_at = NULL,
           result = jsonb_build_object('totalRecipients', 0, 'successful', 0, 'failed', 0,
                                       'errorSummary', p_summary, 'reason', p_reason, 'reasonParams', p_params)
     WHERE id = p_run;
    RAISE LOG 'runhub %', jsonb_build_object('event', 'workflow_run_failed', 'runId', p_run,
                                             'reason', p_reason, 'errorSummary', p_summary);
END
$$;

-- Execute a run p_worker has claimed: on fresh data, build the recipients, apply the
-- execution-time policy (role, cooldown, recipient count), and write one recipient row and one
-- outbox message each, in this transaction. Does nothing unless p_worker still holds the lease.
-- Returns the run's status afterwards, or 'lease_lost'.
CREATE OR REPLACE FUNCTION runhub.execute_run(run uuid, worker text)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
SET plan_cache_mode = force_custom_plan
AS $$
#variable_conflict use_column
DECLARE
    p_run ALIAS FOR run;
    p_worker ALIAS FOR worker;
    v_run      runhub.workflow_runs;
    v_action   runhub.actions;
    v_project  runhub.projects;
    v_role      text;
    v_count     int;
    v_decision  jsonb;
    v_link_base text;
    v_shop_link text;
    v_template  text;
    v_expires_at timestamptz;
    v_holdout   int;
    v_holdout_key bytea := runhub._holdout_key();
BEGIN
    PERFORM runhub._check_worker(p_worker);
    SELECT * INTO v_run FROM runhub.workflow_runs WHERE id = p_run FOR UPDATE;
    IF NOT FOUND OR v_run.status <> 'running' OR v_run.executed_at IS NOT NULL
       OR v_run.lease_owner IS DISTINCT FROM p_worker OR v_run.lease_expires_at <= clock_timestamp() THEN
        RAISE LOG 'runhub %', jsonb_build_object('event', 'workflow_run_lease_lost', 'runId', p_run, 'worker', p_worker);
        RETURN 'lease_lost';
    END IF;
    RAISE LOG 'runhub %', jsonb_build_object('event', 'workflow_run_started', 'runId', p_run,
        'projectId', v_run.project_id, 'actionId', v_run.action_id, 'attempt', v_run.attempts);
    -- Executions of one project one at a time: the frequency cap spans all its workflows.
    PERFORM runhub._lock_executions(ARRAY[v_run.project_id]);
    SELECT * INTO v_action FROM runhub.actions WHERE id = v_run.action_id;
    SELECT * INTO v_project FROM runhub.projects WHERE id = v_run.project_id;
    SELECT m.role INTO v_role FROM runhub.project_members m
     WHERE m.project_id = v_run.project_id AND m.user_id = v_run.triggered_by;
    v_link_base := rtrim(v_project.settings ->> 'shopUrl', '/') || '/checkout?wid=' || p_run || '&cart=';
    -- Promotions and updates link to the shop with the run id, so a payment can name the run.
    v_shop_link := CASE WHEN v_run.action_id = 'send_promo' THEN rtrim(v_project.settings ->> 'shopUrl', '/') || '/?wid=' || p_run END;
    v_template := CASE WHEN v_run.action_id = 'send_promo' AND (v_run.params ->> 'isUpdate')::boolean
                       THEN 'update' ELSE v_action.template END;
    -- A recovery mail is about carts of the action's window: once a window has passed since now it
    -- has lost its point (a relay down that long), and expires rather than arrive stale.
    v_expires_at := CASE WHEN v_action.policy ? 'windowHours'
                         THEN now() + make_interval(hours => (v_action.policy ->> 'windowHours')::int) END;
    v_holdout := runhub._holdout_percent(v_project.settings, v_action.outcome);
    BEGIN
        -- One statement writes each recipient and its message (expressions inline rather than
        -- helper calls: they run once per recipient). The message carries what is fixed now
        -- (template, locale, address, Message-ID); what it says comes from its recipient, run and
        -- project when the sender renders it.
        WITH eligible AS (
            SELECT r.*, runhub._held_out(v_holdout_key, p_run, r.email, v_holdout) AS held_out
              FROM runhub._recipients(v_run.project_id, v_run.action_id, v_run.params, now()) r
             WHERE r.excluded_by IS NULL
        ), recipients AS (
            INSERT INTO runhub.workflow_run_recipients (run_id, project_id, email, name, locale, cart_id,
                                                        amount_cents, currency, link, status)
            SELECT p_run, v_run.project_id, e.email, e.name,
                   CASE WHEN split_part(e.locale, '-', 1) = ANY (runhub._locales())
                        THEN split_part(e.locale, '-', 1) ELSE v_project.locale END,
                   e.cart_id, e.amount_cents, e.currency,
                   CASE WHEN e.held_out THEN NULL  -- no mail, so no link
                        WHEN v_run.action_id = 'recover_abandoned'
                        THEN v_link_base || runhub._url_encode(coalesce(e.cart_id, ''))
                        ELSE v_shop_link END,
                   CASE WHEN e.held_out THEN 'held_out' ELSE 'queued' END
              FROM eligible e
             ORDER BY e.email
            RETURNING id, project_id, email, name, locale, status
        ), messages AS (  -- held-out recipients get none: never mailed, no *_email_sent event
            INSERT INTO runhub.outbox (id, project_id, run_id, recipient_id, template, locale, to_email, to_name,
                                       message_id, expires_at)  -- keyed by its recipient (migration 0026)
            SELECT rc.id, rc.project_id, p_run, rc.id, v_template, rc.locale, rc.email, rc.name,
                   '<' || p_run || '.' || rc.id || '@runhub>',
                   v_expires_at
              FROM recipients rc
             WHERE rc.status = 'queued'
        )
        SELECT count(*) INTO v_count FROM recipients;  -- the policy's count: everyone chosen, mailed or not
        -- On today's facts: the actor's role now, prerequisites (a shopUrl removed since), cooldown, count.
        v_decision := runhub._evaluate_policy(runhub._policy_facts(v_project, v_action, v_role, v_count,
            runhub._last_run_at(v_run.project_id, v_run.action_id, p_run, v_run.requested_at)));
        IF NOT (v_decision ->> 'allowed')::boolean THEN
            RAISE EXCEPTION USING ERRCODE = 'RH001', MESSAGE = v_decision::text;  -- undo what was written
        END IF;
    EXCEPTION WHEN SQLSTATE 'RH001' THEN
        PERFORM runhub._fail_run(p_run, v_decision ->> 'reason', v_decision -> 'reasonParams',
                                 runhub._hint(v_decision ->> 'reason', v_decision -> 'reasonParams'));
        RETURN 'failed';
    END;

    UPDATE runhub.workflow_runs
       SET executed_at = now(), lease_owner = NULL, lease_expires_at = NULL,
           holdout_percent = CASE WHEN (v_action.outcome ->> 'holdout')::boolean THEN v_holdout END
     WHERE id = p_run;
    PERFORM runhub._complete_run_if_done(p_run);  -- everyone held out: nothing to send, done now
    PERFORM pg_notify('runhub_outbox', p_run::text);
    RAISE LOG 'runhub %', jsonb_build_object('event', 'workflow_run_recipients_written', 'runId', p_run,
                                             'recipientCount', v_count);
    RETURN 'running';
END
$$;

-- Claim and execute up to p_max runs in this transaction (for the daemon and the cron sweep).
-- A run whose execution raises is released for a retry, and failed after 5 attempts.
-- An execution holds its project's lock (execute_run) to the end of the transaction, so a batch
-- takes every project lock it will need up front, in one global order (the lock keys, sorted):
-- two batches that reach the same projects in opposite orders wait for each other, never deadlock.
CREATE OR REPLACE FUNCTION runhub.process_runs(max int DEFAULT 10)
RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_max ALIAS FOR max;
    c_max_attempts CONSTANT int := runhub._constant('maxExecutionAttempts');
    v_worker text := format('process_runs/%s/%s', pg_backend_pid(), txid_current());
    v_runs   uuid[];
    v_run    uuid;
    v_done   int := 0;
    v_error  text;
BEGIN
    v_runs := ARRAY(SELECT runhub.claim_runs(v_worker, p_max));
    PERFORM runhub._lock_executions(ARRAY(SELECT r.project_id FROM runhub.workflow_runs r WHERE r.id = ANY (v_runs)));
    FOREACH v_run IN ARRAY v_runs LOOP
        BEGIN
            PERFORM runhub.execute_run(v_run, v_worker);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_error = MESSAGE_TEXT;
            RAISE LOG 'runhub %', jsonb_build_object('event', 'workflow_run_error', 'runId', v_run, 'error', v_error);
            IF (SELECT attempts FROM runhub.workflow_runs WHERE id = v_run) >= c_max_attempts THEN
                PERFORM runhub._fail_run(v_run, 'workflows.executionError', jsonb_build_object('error', v_error),
                                         'Execution failed ' || c_max_attempts || ' times; last error: ' || v_error);
            ELSE  -- let the lease lapse a little later: another sweep retries it
                UPDATE runhub.workflow_runs SET lease_expires_at = clock_timestamp() + interval '30 seconds'
                 WHERE id = v_run;
            END IF;
        END;
        v_done := v_done + 1;
    END LOOP;
    RETURN v_done;
END
$$;

-- The minute sweep: picks up runs whose NOTIFY was missed and runs whose lease expired. Overlapping
-- sweeps (pg_cron replays missed runs) skip instead of queueing up.
CREATE OR REPLACE FUNCTION runhub.cron_process_runs()
RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT runhub._try_job_lock('process_runs_sweep') THEN
        RETURN 0;
    END IF;
    PERFORM runhub._complete_done_runs();  -- runs whose last messages were cancelled, not sent
    RETURN runhub.process_runs(100);
END
$$;

-- Runs that have been running for over staleRunMinutes (30, sql/00_constants.sql): flagged for review.
CREATE OR REPLACE VIEW runhub.stale_runs AS
    SELECT r.id, r.project_id, r.action_id, r.started_at, r.executed_at, r.attempts, r.lease_owner,
           r.lease_expires_at, now() - r.started_at AS running_for
      FROM runhub.workflow_runs r
     WHERE r.status = 'running' AND r.started_at < now() - make_interval(mins => runhub._constant('staleRunMinutes'));

-- Recipients, messages and credits have no foreign keys (see migrations 0003 and 0010): deleting
-- runs, or a project, deletes them here, set-based.
CREATE OR REPLACE FUNCTION runhub._delete_run_children()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    WITH gone AS (
        DELETE FROM runhub.workflow_run_recipients r USING deleted_runs d WHERE r.run_id = d.id RETURNING r.id)
    DELETE FROM runhub.outbox o USING gone g WHERE o.id = g.id;
    DELETE FROM runhub.workflow_attributions a USING deleted_runs d WHERE a.run_id = d.id;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER workflow_runs_delete_children
    AFTER DELETE ON runhub.workflow_runs
    REFERENCING OLD TABLE AS deleted_runs
    FOR EACH STATEMENT EXECUTE FUNCTION runhub._delete_run_children();

CREATE OR REPLACE FUNCTION runhub._delete_project_mail()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM runhub.outbox o USING deleted_projects d WHERE o.project_id = d.id AND o.run_id IS NULL;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER projects_delete_mail
    AFTER DELETE ON runhub.projects
    REFERENCING OLD TABLE AS deleted_projects
    FOR EACH STATEMENT EXECUTE FUNCTION runhub._delete_project_mail();
