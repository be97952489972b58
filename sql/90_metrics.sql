-- What monitoring reads: runhub's queues, runs, relays and jobs as figures, for `runhub metrics`
-- and the sender's Prometheus endpoint (runhub_loader/metrics.py names and explains each). Every
-- figure comes from an index or a small table, so a scrape costs the same at a million shops.

CREATE OR REPLACE FUNCTION runhub.metrics()
RETURNS TABLE (name text, labels jsonb, value double precision)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH runs AS (
        SELECT count(*) FILTER (WHERE r.status = 'queued') AS queued,
               count(*) FILTER (WHERE r.status = 'running' AND r.executed_at IS NULL) AS executing,
               count(*) FILTER (WHERE r.status = 'running' AND r.executed_at IS NOT NULL) AS delivering,
               (SELECT count(*) FROM runhub.stale_runs) AS stuck,  -- what runhub status lists
               extract(epoch FROM now() - min(r.requested_at) FILTER (WHERE r.status = 'queued')) AS oldest_queued
          FROM runhub.workflow_runs r WHERE r.status IN ('queued', 'running')
    ), queued AS (
        SELECT count(*) FILTER (WHERE o.next_attempt_at <= now()) AS due,
               count(*) FILTER (WHERE o.next_attempt_at > now()) AS retrying,
               extract(epoch FROM now() - min(o.next_attempt_at) FILTER (WHERE o.next_attempt_at <= now())) AS oldest_due
          FROM runhub.outbox o WHERE o.status = 'queued'
    ), digests AS (
        SELECT count(*) AS due, extract(epoch FROM now() - min(p.digest_next_at)) AS lag
          FROM runhub.projects p WHERE p.digest_next_at <= now()
    ), last_job AS (
        SELECT j.started_at, j.duration_ms FROM runhub.job_runs j
         WHERE j.job = 'digests' ORDER BY j.started_at DESC LIMIT 1
    )
    SELECT 'runhub_runs', jsonb_build_object('state', s.state), s.n::float8
      FROM runs, LATERAL (VALUES ('queued', runs.queued), ('executing', runs.executing), ('delivering', runs.delivering)) s(state, n)
    UNION ALL SELECT 'runhub_runs_stuck', '{}', runs.stuck FROM runs
    UNION ALL SELECT 'runhub_run_oldest_queued_seconds', '{}', coalesce(runs.oldest_queued, 0) FROM runs
    UNION ALL SELECT 'runhub_outbox_messages', jsonb_build_object('state', s.state), s.n::float8
      FROM queued, LATERAL (VALUES ('due', queued.due), ('retrying', queued.retrying),
                                   ('sending', (SELECT count(*) FROM runhub.outbox o WHERE o.status = 'sending'))) s(state, n)
    UNION ALL SELECT 'runhub_outbox_oldest_due_seconds', '{}', coalesce(queued.oldest_due, 0) FROM queued
    UNION ALL SELECT 'runhub_outbox_cancelled_total', jsonb_build_object('reason', k.reason), k.count
      FROM runhub.outbox_cancellations k
    UNION ALL SELECT 'runhub_relay_up', jsonb_build_object('worker', r.worker, 'relay', r.relay),
                     CASE WHEN r.down_since IS NULL THEN 1 ELSE 0 END
      FROM runhub.relay_status r WHERE r.updated_at > now() - interval '1 hour'
    UNION ALL SELECT 'runhub_digests_due', '{}', digests.due FROM digests
    UNION ALL SELECT 'runhub_digest_lag_seconds', '{}', coalesce(digests.lag, 0) FROM digests
    UNION ALL SELECT 'runhub_digest_job_last_run_timestamp_seconds', '{}', extract(epoch FROM last_job.started_at) FROM last_job
    UNION ALL SELECT 'runhub_digest_job_last_duration_seconds', '{}', last_job.duration_ms / 1000 FROM last_job
$$;
