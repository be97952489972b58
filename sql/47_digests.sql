-- Daily digests: each project that turned them on gets, at its chosen local hour, yesterday's
-- narrative (headline, KPIs, one anomaly, one suggested action, the last outcome) as a mail. SQL
-- gathers the facts; the rules are plpython/digest.py's (runhub._compose_digest); the renderer
-- writes the sentences in the owner's language. Local days are UTC ranges (local_day_range).

-- A local day's KPI facts: its events (runhub's own sends left out), revenue in the project's
-- currency, payments in others, payments, checkouts, leads and payment failures. One range scan.
-- No SET clause: it inlines into _digest_facts' query (names schema-qualified, caller's rights).
CREATE OR REPLACE FUNCTION runhub._digest_day(p_project uuid, p_currency char(3), p_range tstzrange)
RETURNS TABLE (facts jsonb)
LANGUAGE sql STABLE
AS $$
    SELECT jsonb_build_object(
        'events', count(*) FILTER (WHERE e.event_type NOT LIKE '%\_email\_sent'),
        'revenueCents', coalesce(sum(e.amount_cents) FILTER (WHERE e.event_type = 'payment_succeeded'
                                                                AND e.currency = p_currency), 0),
        'otherCurrencyPayments', count(*) FILTER (WHERE e.event_type = 'payment_succeeded' AND e.currency <> p_currency),
        'payments', count(*) FILTER (WHERE e.event_type = 'payment_succeeded'),
        'checkouts', count(*) FILTER (WHERE e.event_type = 'checkout_started'),
        'leads', count(*) FILTER (WHERE e.event_type = 'lead_created'),
        'paymentFailures', count(*) FILTER (WHERE e.event_type = 'payment_failed'))
      FROM runhub.business_events e
     WHERE e.project_id = p_project AND e.occurred_at >= lower(p_range) AND e.occurred_at < upper(p_range)
$$;

-- Whether the action can run in the project now: each prerequisite holds (_requirement_checks)
-- and its cooldown is over (runs that hold it counted as _last_run_at counts them). No SET clause:
-- it inlines into _digest_facts' query, one action at a time.
CREATE OR REPLACE FUNCTION runhub._action_ready(p_project uuid, p_settings jsonb, p_action text)
RETURNS TABLE (ready boolean)
LANGUAGE sql STABLE
AS $$
    SELECT NOT EXISTS (SELECT 1 FROM runhub._requirement_checks(p_project, p_settings, x.requires) c WHERE NOT c.satisfied)
           AND coalesce((SELECT max(r.requested_at) FROM runhub.workflow_runs r
                          WHERE r.project_id = p_project AND r.action_id = x.id AND r.status IN ('queued', 'running', 'succeeded'))
                        <= now() - make_interval(mins => (x.policy ->> 'cooldownMinutes')::int), true)
      FROM runhub.actions x
     WHERE x.id = p_action
$$;

-- What digests are made of, for many projects at once (a batch of the digest job; one project for
-- generate_digest): per (project, local day), the facts the rules compose a DigestContent from,
-- {project, date, weekday, day, previous, weekBefore, candidates, lastOutcome} — or, where the day
-- had no activity (no digest), its KPI facts alone. One statement for the whole batch:
--   day, previous, weekBefore: _digest_day of the day, the day before, the same weekday a week before;
--   candidates: the actions the digest may recommend, in the order it prefers them (money now, then
--     people waiting: runhub._constants()' recommendationOrder, which tests/sql/47_digests.sql holds
--     this list to), each tried until one reaches
--     anyone: whether it can run now (_action_ready) and, if it can, how many it would reach (the
--     recipient builder itself, as its preview counts); those after the first that reaches anyone
--     are not tried (available and reach null);
--   lastOutcome: the project's latest run with a money outcome that wrote its mail (its Outcome
--     with the incremental figure, for a run executed with a holdout group).
-- PL/pgSQL with a generic plan: planned once a session, where planning it took as long as a
-- batch of 200 projects' KPI queries (its shape does not depend on the values: index lookups).
CREATE OR REPLACE FUNCTION runhub._digest_facts(p_projects uuid[], p_days date[])
RETURNS TABLE (project_id uuid, day date, facts jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET jit = off
AS $$
BEGIN
    RETURN QUERY
    WITH batch AS MATERIALIZED (
        SELECT p.id, p.name, p.timezone, p.currency, p.locale, p.industry, p.settings, u.day
          FROM unnest(p_projects, p_days) AS u(id, day)
          JOIN runhub.projects p ON p.id = u.id
    ), zones AS MATERIALIZED (  -- a batch's projects share a few dozen zones: each zone's days once
        SELECT z.timezone, z.day,
               runhub._local_day_range(z.day, z.timezone) AS day_range,
               runhub._local_day_range(z.day - 1, z.timezone) AS previous_range,
               runhub._local_day_range(z.day - 7, z.timezone) AS week_range
          FROM (SELECT DISTINCT b.timezone, b.day FROM batch b) z
    ), ranges AS MATERIALIZED (  -- apart: an inlined _digest_day would compute its range twice
        SELECT b.*, z.day_range, z.previous_range, z.week_range
          FROM batch b JOIN zones z ON z.timezone = b.timezone AND z.day = b.day
    ), t AS MATERIALIZED (
        SELECT r.*, d0.facts AS day_facts, d1.facts AS previous_facts, d7.facts AS week_facts,
               (d0.facts ->> 'events')::bigint > 0 AS active  -- a digest to write: it needs the rest
          FROM ranges r
         CROSS JOIN LATERAL runhub._digest_day(r.id, r.currency, r.day_range) d0
         CROSS JOIN LATERAL runhub._digest_day(r.id, r.currency, r.previous_range) d1
         CROSS JOIN LATERAL runhub._digest_day(r.id, r.currency, r.week_range) d7
    )
    -- Per project, laterals only (no join between sets whose sizes a generic plan cannot know); each
    -- gated inside (a left join's ON clause would still run it): the candidates tried in turn.
    SELECT t.id, t.day,
           jsonb_build_object(
               'project', jsonb_build_object('id', t.id, 'name', t.name, 'timezone', t.timezone, 'currency', t.currency,
                                             'locale', t.locale, 'industry', t.industry),
               'date', to_char(t.day, 'YYYY-MM-DD'), 'weekday', extract(isodow FROM t.day),
               'day', t.day_facts, 'previous', t.previous_facts, 'weekBefore', t.week_facts)
           || CASE WHEN t.active THEN jsonb_build_object(
                  'candidates', jsonb_build_array(
                      jsonb_build_object('id', 'recover_abandoned', 'available', a1.ready, 'reach', r1.n),
                      jsonb_build_object('id', 'onboard_users', 'available', a2.ready, 'reach', r2.n),
                      jsonb_build_object('id', 'send_promo', 'available', a3.ready, 'reach', r3.n)),
                  'lastOutcome', lo.outcome) ELSE '{}' END
      FROM t
      LEFT JOIN LATERAL (SELECT a.ready FROM runhub._action_ready(t.id, t.settings, 'recover_abandoned') a
                          WHERE t.active) a1 ON true
      LEFT JOIN LATERAL (SELECT count(*) AS n FROM runhub._recipients(t.id, 'recover_abandoned', '{}', now()) r
                          WHERE a1.ready AND r.excluded_by IS NULL) r1 ON a1.ready
      LEFT JOIN LATERAL (SELECT a.ready FROM runhub._action_ready(t.id, t.settings, 'onboard_users') a
                          WHERE t.active AND coalesce(r1.n, 0) = 0) a2 ON true
      LEFT JOIN LATERAL (SELECT count(*) AS n FROM runhub._recipients(t.id, 'onboard_users', '{}', now()) r
                          WHERE a2.ready AND r.excluded_by IS NULL) r2 ON a2.ready
      LEFT JOIN LATERAL (SELECT a.ready FROM runhub._action_ready(t.id, t.settings, 'send_promo') a
                          WHERE t.active AND coalesce(r1.n, 0) = 0 AND coalesce(r2.n, 0) = 0) a3 ON true
      LEFT JOIN LATERAL (SELECT count(*) AS n FROM runhub._recipients(t.id, 'send_promo', '{"segmentation": "recent_7d"}', now()) r
                          WHERE a3.ready AND r.excluded_by IS NULL) r3 ON a3.ready
      LEFT JOIN LATERAL (
           SELECT r AS run FROM runhub.workflow_runs r
            WHERE t.active AND r.project_id = t.id AND r.executed_at IS NOT NULL AND r.outcome_window_hours IS NOT NULL
            ORDER BY r.requested_at DESC
            LIMIT 1) lr ON true
      LEFT JOIN LATERAL (
           SELECT jsonb_build_object('runId', (lr.run).id, 'actionId', (lr.run).action_id, 'actionLabel', a.label,
                                     'completedAt', runhub._iso((lr.run).completed_at), 'outcome', o.outcome) AS outcome
             FROM runhub._run_outcome(lr.run) o JOIN runhub.actions a ON a.id = (lr.run).action_id
            WHERE (lr.run).id IS NOT NULL) lo ON true;  -- (not "lr.run IS NOT NULL": true only when no field is null)
END
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
    RETURN (SELECT runhub._compose_digest(f.facts) FROM runhub._digest_facts(ARRAY[v_project.id], ARRAY[p_day]) f);
END
$$;

-- One project's due digest (the batch's way when its set-based way failed): yesterday in its time
-- zone (once, however overdue it is) as of p_now (the batch's now), queued as a mail unless that day
-- was done already or had no activity — a day that fails is logged and skipped, never retried in a
-- loop (digest_batch's claim has advanced its next time). Returns 'queued', 'skipped', 'failed' or
-- 'done' (that day was done).
CREATE OR REPLACE FUNCTION runhub._run_digest(p_project runhub.projects, p_now timestamptz)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v_day     date := (p_now AT TIME ZONE p_project.timezone)::date - 1;  -- a local wall-clock timestamp's date
    v_content jsonb;
    v_message bigint;
    v_status  text;
    v_error   text;
BEGIN
    IF EXISTS (SELECT 1 FROM runhub.digests WHERE project_id = p_project.id AND day = v_day) THEN
        RETURN 'done';
    END IF;
    BEGIN
        v_content := runhub.generate_digest(p_project.id, v_day);
        IF v_content IS NULL THEN
            v_status := 'skipped';
        ELSE
            INSERT INTO runhub.outbox (project_id, template, locale, to_email, variables, message_id, expires_at)
            VALUES (p_project.id, 'digest', p_project.locale, p_project.digest_recipient, v_content,
                    format('<digest.%s.%s@runhub>', p_project.id, v_day),
                    upper(runhub._local_day_range(v_day + 1, p_project.timezone)))  -- as _serve_digests
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
        PERFORM pg_notify('runhub_outbox', 'digest');
    END IF;
    RETURN v_status;
END
$$;

-- A batch's due digests served set-based: a statement per step for all of p_claimed (claimed and
-- advanced by the caller), not a pass of every step per project. Yesterday in each one's time
-- zone as of p_now (the batch's now), unless that day was done, is gathered (_digest_facts),
-- composed by the rules in one call, queued as mail and recorded. Any error rolls all of it back
-- and raises: the caller then serves the batch one project at a time (_run_digest), so that only
-- the project at fault fails. Custom plans: the digests table grows by a batch each time (a plan
-- cached while it was small would scan it). Returns {served, queued, skipped, failed, done}.
CREATE OR REPLACE FUNCTION runhub._serve_digests(p_claimed runhub.projects[], p_now timestamptz)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
SET jit = off
AS $$
DECLARE
    v_ids    uuid[];
    v_days   date[];
    v_counts jsonb;
BEGIN
    SELECT coalesce(array_agg(c.id), '{}'), coalesce(array_agg(y.day), '{}') INTO v_ids, v_days
      FROM unnest(p_claimed) c
     CROSS JOIN LATERAL (SELECT (p_now AT TIME ZONE c.timezone)::date - 1 AS day) y  -- a local wall-clock timestamp's date
     WHERE NOT EXISTS (SELECT 1 FROM runhub.digests d WHERE d.project_id = c.id AND d.day = y.day);
    WITH facts AS MATERIALIZED (
        SELECT f.project_id, f.day, f.facts, row_number() OVER () AS n FROM runhub._digest_facts(v_ids, v_days) f
    ), composed AS MATERIALIZED (
        SELECT f.project_id, f.day, nullif(x.content::jsonb, 'null') AS content, c.locale, c.digest_recipient, c.timezone
          FROM runhub._compose_digest_batch((SELECT '[' || string_agg(f.facts::text, ',' ORDER BY f.n) || ']' FROM facts f))
               WITH ORDINALITY AS x(content, n)
          JOIN facts f ON f.n = x.n
          JOIN unnest(p_claimed) c ON c.id = f.project_id
    ), mail AS (
        INSERT INTO runhub.outbox (project_id, template, locale, to_email, variables, message_id, expires_at)
        SELECT w.project_id, 'digest', w.locale, w.digest_recipient, w.content, format('<digest.%s.%s@runhub>', w.project_id, w.day),
               upper(runhub._local_day_range(w.day + 1, w.timezone))  -- stale once the day after its day is over
          FROM composed w WHERE w.content IS NOT NULL
        RETURNING id, project_id
    ), recorded AS (
        INSERT INTO runhub.digests (project_id, day, status, message_id, reason, content)
        SELECT w.project_id, w.day, CASE WHEN w.content IS NULL THEN 'skipped' ELSE 'queued' END, m.id,
               CASE WHEN w.content IS NULL THEN 'no activity' END, w.content
          FROM composed w LEFT JOIN mail m ON m.project_id = w.project_id
        ON CONFLICT (project_id, day) DO NOTHING  -- the NOT EXISTS above and the row locks make this unreachable
        RETURNING status
    )
    SELECT jsonb_build_object('served', cardinality(p_claimed), 'done', cardinality(p_claimed) - cardinality(v_ids),
                              'queued', count(*) FILTER (WHERE r.status = 'queued'),
                              'skipped', count(*) FILTER (WHERE r.status = 'skipped'), 'failed', 0)
      INTO v_counts
      FROM recorded r;
    IF (v_counts ->> 'queued')::int > 0 THEN
        PERFORM pg_notify('runhub_outbox', 'digest');
    END IF;
    RETURN v_counts;
END
$$;

-- Claim up to p_max projects whose digest is due at p_now, most overdue first: lock them, skipping
-- those another job holds, and advance their next time; returns their rows as they were claimed.
-- One generic plan, an ordered scan of projects_digest_due that stops after p_max: a custom plan is
-- no better, and the plan cache would keep making one per call once the statistics say nothing is
-- due (cheaper than the generic plan's estimate), 1.2 ms of planning a call at a million shops.
CREATE OR REPLACE FUNCTION runhub._claim_due_digests(p_now timestamptz, p_max int)
RETURNS runhub.projects[]
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_claimed runhub.projects[];
BEGIN
    -- Claimed and advanced in one write: each next time moves past now, whatever its day brings.
    -- A due project's next time is the first of its hour after now (its due time is past), the same
    -- for every project of its zone and hour: computed once for each.
    WITH due AS MATERIALIZED (
        SELECT d.id, d.timezone, d.digest_hour FROM runhub.projects d
         WHERE d.digest_next_at <= p_now
         ORDER BY d.digest_next_at
         LIMIT p_max
         FOR NO KEY UPDATE SKIP LOCKED  -- NO KEY: ingest's foreign-key share locks do not skip it
    ), slots AS MATERIALIZED (
        SELECT s.timezone, s.digest_hour, runhub.next_digest_at(s.timezone, s.digest_hour, p_now) AS next_at
          FROM (SELECT DISTINCT d.timezone, d.digest_hour FROM due d) s
    ), claimed AS (
        UPDATE runhub.projects p
           SET digest_next_at = s.next_at
          FROM due d JOIN slots s ON s.timezone = d.timezone AND s.digest_hour = d.digest_hour
         WHERE p.id = d.id
        RETURNING p)
    SELECT coalesce(array_agg(c.p), '{}') INTO v_claimed FROM claimed c;
    RETURN v_claimed;
END
$$;

-- One batch of the digest job: up to p_max projects whose digest is due, most overdue first,
-- claimed (their next time advanced), served set-based (_serve_digests) — or, when that fails, one by one (_run_digest), the project
-- at fault logged and skipped — the batch timed and counted into runhub.job_runs (the row
-- p_job_run, or a new one). Under the job's lock (runhub._try_job_lock): while one job's batch runs, another's returns
-- busy at once. "Now" is the transaction's start on runhub's clock (now() + runhub._clock_offset(),
-- sql/12_clock.sql): what is due, the next times and the days served all read it. Returns
-- {jobRun, served, queued, skipped, failed, done, busy}.
CREATE OR REPLACE FUNCTION runhub.digest_batch(max int DEFAULT 1000, job_run bigint DEFAULT NULL)  -- 1000: digestBatch
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    p_max ALIAS FOR max;
    p_job_run ALIAS FOR job_run;
    v_started timestamptz := clock_timestamp();
    v_now     timestamptz := now() + runhub._clock_offset();
    v_claimed runhub.projects[];
    v_project runhub.projects;
    v_counts  jsonb := '{"served": 0, "queued": 0, "skipped": 0, "failed": 0, "done": 0}';
    v_status  text;
    v_error   text;
    v_run     bigint := p_job_run;
BEGIN
    IF p_max IS NULL OR p_max NOT BETWEEN 1 AND runhub._constant('maxDigestBatch') THEN
        PERFORM runhub._invalid('common.invalidInput', 'max', format('must be 1 to %s', runhub._constant('maxDigestBatch')));
    END IF;
    IF NOT runhub._try_job_lock('digests') THEN
        RETURN v_counts || jsonb_build_object('jobRun', p_job_run, 'busy', true);
    END IF;
    v_claimed := runhub._claim_due_digests(v_now, p_max);
    IF cardinality(v_claimed) > 0 THEN
        BEGIN
            v_counts := runhub._serve_digests(v_claimed, v_now);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_error = MESSAGE_TEXT;
            RAISE LOG 'runhub %', jsonb_build_object('event', 'digest_batch_one_by_one', 'projects', cardinality(v_claimed),
                                                     'error', left(v_error, 500));
            FOREACH v_project IN ARRAY v_claimed LOOP
                v_status := runhub._run_digest(v_project, v_now);
                v_counts := v_counts || jsonb_build_object(v_status, (v_counts ->> v_status)::int + 1,
                                                           'served', (v_counts ->> 'served')::int + 1);
            END LOOP;
        END;
    END IF;
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
-- makes it return at once. queued: how many digests it queued. A batch is 1,000 projects (planning
-- and writing a batch costs as much as a few hundred of its projects), or the setting
-- runhub.digest_batch_size (1 to 10000; e.g. ALTER DATABASE ... SET runhub.digest_batch_size = 200).
-- A procedure, so that it can commit between batches: that rules out SECURITY DEFINER and a SET
-- clause, so it runs with its caller's rights and does nothing but call digest_batch (so its two
-- bounds are written here as digits, not read from runhub._constant, which no runhub role may call:
-- tests/sql/47_digests.sql holds them, and digest_batch's default, to digestBatch and
-- maxDigestBatch); with no
-- search_path of its own, every type and operator it names is schema-qualified (a caller's
-- pg_temp.jsonb, say, comes first in the caller's path).
CREATE OR REPLACE PROCEDURE runhub.run_due_digests(INOUT queued pg_catalog.int4 DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
    v_size  pg_catalog.text := pg_catalog.current_setting('runhub.digest_batch_size', true);
    c_batch pg_catalog.int4 := CASE WHEN v_size OPERATOR(pg_catalog.~) '^ *[0-9]{1,5} *$'
                                    THEN least(greatest(v_size::pg_catalog.int4, 1), 10000) ELSE 1000 END;  -- maxDigestBatch, digestBatch
    v_batch pg_catalog.jsonb;
    v_run   pg_catalog.int8;
BEGIN
    queued := 0;
    LOOP
        v_batch := runhub.digest_batch(c_batch, v_run);
        COMMIT;
        v_run := (v_batch OPERATOR(pg_catalog.->>) 'jobRun')::pg_catalog.int8;
        queued := queued OPERATOR(pg_catalog.+) (v_batch OPERATOR(pg_catalog.->>) 'queued')::pg_catalog.int4;
        EXIT WHEN (v_batch OPERATOR(pg_catalog.->>) 'busy')::pg_catalog.bool
               OR (v_batch OPERATOR(pg_catalog.->>) 'served')::pg_catalog.int4 OPERATOR(pg_catalog.<) c_batch;
    END LOOP;
END
$$;
