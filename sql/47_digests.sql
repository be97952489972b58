-- Daily digests: each project that turned them on gets, at its chosen local hour, yesterday's
-- narrative (headline, KPIs, one anomaly, one suggested action, the last outcome) as a mail. SQL
-- gathers the facts; the rules are plpython/digest.py's (runhub._compose_digest); the renderer
-- writes the sentences in the owner's language. Local days are UTC ranges (local_day_range).

-- A local day's KPI facts: its events (runhub's own sends left out), revenue in the project's
-- currency, payments in others, payments, checkouts, leads and payment failures. One range scan.
CREATE OR REPLACE FUNCTION runhub._digest_day(p_project runhub.projects, p_range tstzrange)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_facts jsonb;
BEGIN
    SELECT jsonb_build_object(
        'events', count(*) FILTER (WHERE e.event_type NOT LIKE '%\_email\_sent'),
        'revenueCents', coalesce(sum(e.amount_cents) FILTER (WHERE e.event_type = 'payment_succeeded'
                                                                AND e.currency = p_project.currency), 0),
        'otherCurrencyPayments', count(*) FILTER (WHERE e.event_type = 'payment_succeeded' AND e.currency <> p_project.currency),
        'payments', count(*) FILTER (WHERE e.event_type = 'payment_succeeded'),
        'checkouts', count(*) FILTER (WHERE e.event_type = 'checkout_started'),
        'leads', count(*) FILTER (WHERE e.event_type = 'lead_created'),
        'paymentFailures', count(*) FILTER (WHERE e.event_type = 'payment_failed'))
      INTO v_facts
      FROM runhub.business_events e
     WHERE e.project_id = p_project.id AND e.occurred_at >= lower(p_range) AND e.occurred_at < upper(p_range);
    RETURN v_facts;
END
$$;

-- The actions the owner could be pointed to now, in registry order: whether each can run (its
-- prerequisites hold, its cooldown is over) and, for the first that can, how many its preview
-- would reach (the recipient builder itself); the rules pick the first that reaches anyone.
CREATE OR REPLACE FUNCTION runhub._digest_candidates(p_project runhub.projects)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    v_action    runhub.actions;
    v_available boolean;
    v_reach     bigint;
    v_found     boolean := false;
    v_out       jsonb := '[]';
BEGIN
    FOR v_action IN SELECT * FROM runhub.actions WHERE type = 'workflow' ORDER BY position LOOP
        v_available := NOT EXISTS (SELECT 1 FROM jsonb_array_elements(runhub._requirements(p_project, v_action)) r
                                    WHERE NOT (r ->> 'satisfied')::boolean)
                       AND coalesce(runhub._last_run_at(p_project.id, v_action.id)
                                    <= now() - make_interval(mins => (v_action.policy ->> 'cooldownMinutes')::int), true);
        v_reach := NULL;
        IF v_available AND NOT v_found THEN
            SELECT count(*) INTO v_reach
              FROM runhub._recipients(p_project.id, v_action.id,
                                      CASE v_action.id WHEN 'send_promo' THEN '{"segmentation": "recent_7d"}'::jsonb
                                                       ELSE '{}'::jsonb END, now()) r
             WHERE r.excluded_by IS NULL;
            v_found := v_reach > 0;
        END IF;
        v_out := v_out || jsonb_build_object('id', v_action.id, 'available', v_available, 'reach', v_reach);
    END LOOP;
    RETURN v_out;
END
$$;

-- The project's latest run with a money outcome that wrote its mail: the digest's proof point.
CREATE OR REPLACE FUNCTION runhub._digest_last_outcome(p_project uuid)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object('runId', r.id, 'actionId', r.action_id, 'actionLabel', a.label,
                              'completedAt', runhub._iso(r.completed_at), 'outcome', runhub._outcome(r))
      FROM runhub.workflow_runs r JOIN runhub.actions a ON a.id = r.action_id
     WHERE r.project_id = p_project AND r.executed_at IS NOT NULL AND r.outcome_window_hours IS NOT NULL
     ORDER BY r.requested_at DESC
     LIMIT 1
$$;

-- The digest of a project's local calendar day (the plan's DigestContent, camelCase), or null when
-- the day had no activity. Compared with the day before (deltas) and the same weekday a week
-- before (anomalies). For the digest job and `runhub digest preview`; no runhub role may call it.
CREATE OR REPLACE FUNCTION runhub.generate_digest(p_project uuid, p_day date)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_project runhub.projects := runhub._require_project(p_project);
BEGIN
    IF p_day IS NULL OR NOT isfinite(p_day) THEN
        PERFORM runhub._invalid('common.invalidInput', 'day', 'is required: a calendar date');
    END IF;
    RETURN runhub._compose_digest(jsonb_build_object(
        'project', jsonb_build_object('id', v_project.id, 'name', v_project.name, 'timezone', v_project.timezone,
                                      'currency', v_project.currency, 'locale', v_project.locale,
                                      'industry', v_project.industry),
        'date', to_char(p_day, 'YYYY-MM-DD'), 'weekday', extract(isodow FROM p_day),
        'day', runhub._digest_day(v_project, runhub.local_day_range(p_day, v_project.timezone)),
        'previous', runhub._digest_day(v_project, runhub.local_day_range(p_day - 1, v_project.timezone)),
        'weekBefore', runhub._digest_day(v_project, runhub.local_day_range(p_day - 7, v_project.timezone)),
        'candidates', runhub._digest_candidates(v_project),
        'lastOutcome', runhub._digest_last_outcome(v_project.id)));
END
$$;

-- One project's due digest: yesterday in its time zone (once, however overdue it is), queued as a
-- mail unless that day was done already or had no activity, and its next time advanced past now
-- whatever happened — a day that fails is logged and skipped, never retried in a loop.
-- Returns 'queued', 'skipped', 'failed' or 'done' (that day was done before).
CREATE OR REPLACE FUNCTION runhub._run_digest(p_project runhub.projects)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_day     date := (now() AT TIME ZONE p_project.timezone)::date - 1;  -- a local wall-clock timestamp's date
    v_content jsonb;
    v_message bigint;
    v_status  text;
    v_error   text;
BEGIN
    UPDATE runhub.projects
       SET digest_next_at = runhub.next_digest_at(p_project.timezone, p_project.digest_hour,
                                                  greatest(p_project.digest_next_at, now()))
     WHERE id = p_project.id;
    IF EXISTS (SELECT 1 FROM runhub.digests WHERE project_id = p_project.id AND day = v_day) THEN
        RETURN 'done';
    END IF;
    BEGIN
        v_content := runhub.generate_digest(p_project.id, v_day);
        IF v_content IS NULL THEN
            v_status := 'skipped';
        ELSE
            INSERT INTO runhub.outbox (project_id, template, locale, to_email, variables, message_id)
            VALUES (p_project.id, 'digest', p_project.locale, p_project.digest_recipient, v_content,
                    format('<digest.%s.%s@runhub>', p_project.id, v_day))
            RETURNING id INTO v_message;
            v_status := 'queued';
        END IF;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_error = MESSAGE_TEXT;
        v_status := 'failed';
        RAISE LOG 'runhub %', jsonb_build_object('event', 'digest_failed', 'projectId', p_project.id, 'day', v_day,
                                                 'error', left(v_error, 500));
    END;
    INSERT INTO runhub.digests (project_id, day, status, message_id, reason, content)
    VALUES (p_project.id, v_day, v_status, v_message,
            CASE v_status WHEN 'skipped' THEN 'no activity' WHEN 'failed' THEN left(v_error, 500) END, v_content)
    ON CONFLICT (project_id, day) DO NOTHING;  -- the EXISTS above and the row lock make this unreachable
    IF v_status = 'queued' THEN
        UPDATE runhub.projects SET digest_last_sent_at = now() WHERE id = p_project.id;
        PERFORM pg_notify('runhub_outbox', 'digest');
    END IF;
    RETURN v_status;
END
$$;

-- One batch of the digest job: up to p_max projects whose digest is due, most overdue first, each
-- served by _run_digest, the batch timed and counted into runhub.job_runs (the row p_job_run, or a
-- new one). Under an advisory lock: while one job's batch runs, another's returns busy at once.
-- Returns {jobRun, served, queued, skipped, failed, done, busy}.
CREATE OR REPLACE FUNCTION runhub.digest_batch(p_max int DEFAULT 200, p_job_run bigint DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    v_started timestamptz := clock_timestamp();
    v_project runhub.projects;
    v_counts  jsonb := '{"served": 0, "queued": 0, "skipped": 0, "failed": 0, "done": 0}';
    v_status  text;
    v_run     bigint := p_job_run;
BEGIN
    IF p_max IS NULL OR p_max NOT BETWEEN 1 AND 10000 THEN
        PERFORM runhub._invalid('common.invalidInput', 'max', 'must be 1 to 10000');
    END IF;
    IF NOT pg_try_advisory_xact_lock(hashtextextended('runhub.digest_batch', 0)) THEN
        RETURN v_counts || jsonb_build_object('jobRun', p_job_run, 'busy', true);
    END IF;
    FOR v_project IN SELECT * FROM runhub.projects
                      WHERE digest_next_at <= now()
                      ORDER BY digest_next_at
                      LIMIT p_max
                      FOR NO KEY UPDATE SKIP LOCKED LOOP  -- NO KEY: ingest's foreign-key share locks do not skip it
        v_status := runhub._run_digest(v_project);
        v_counts := v_counts || jsonb_build_object(v_status, (v_counts ->> v_status)::int + 1,
                                                   'served', (v_counts ->> 'served')::int + 1);
    END LOOP;
    IF v_run IS NULL AND (v_counts ->> 'served')::int > 0 THEN
        INSERT INTO runhub.job_runs (job, started_at, finished_at, duration_ms, counts)
        VALUES ('digests', v_started, v_started, 0, '{}') RETURNING id INTO v_run;
    END IF;
    UPDATE runhub.job_runs j  -- the run so far: its first batch's start to now, the counts summed
       SET finished_at = clock_timestamp(),
           duration_ms = round(extract(epoch FROM clock_timestamp() - j.started_at) * 1000, 1),
           counts = (SELECT jsonb_object_agg(k.key, coalesce((j.counts ->> k.key)::int, 0) + (v_counts ->> k.key)::int)
                       FROM jsonb_object_keys(v_counts) k(key))
     WHERE j.id = v_run;
    IF (v_counts ->> 'served')::int > 0 THEN
        RAISE LOG 'runhub %', jsonb_build_object('event', 'digests_served', 'jobRun', v_run) || v_counts;
    END IF;
    RETURN v_counts || jsonb_build_object('jobRun', v_run, 'busy', false);
END
$$;

-- The digest job (pg_cron hourly, and `runhub sender` as a catch-up): batches of digest_batch,
-- each committed on its own (a project's row is locked for one batch, not the whole run), until
-- none is due — ten thousand due projects are all served in one run. Another job already at work
-- makes it return at once. queued: how many digests it queued.
-- A procedure, so that it can commit between batches: that rules out SECURITY DEFINER and a SET
-- clause, so it runs with its caller's rights and does nothing but call digest_batch.
CREATE OR REPLACE PROCEDURE runhub.run_due_digests(INOUT queued int DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
    c_batch CONSTANT int := 200;
    v_batch jsonb;
    v_run   bigint;
BEGIN
    queued := 0;
    LOOP
        v_batch := runhub.digest_batch(c_batch, v_run);
        COMMIT;
        v_run := (v_batch ->> 'jobRun')::bigint;
        queued := queued + (v_batch ->> 'queued')::int;
        EXIT WHEN (v_batch ->> 'busy')::boolean OR (v_batch ->> 'served')::int < c_batch;
    END LOOP;
END
$$;
