-- The pg_cron jobs this database wants. The loader registers them by name (runhub:<database>:<name>);
-- where pg_cron is missing it prints them so they can be scheduled by other means.
-- Schedules are UTC. in_cron_database: the job runs in cron.database_name rather than here.

CREATE OR REPLACE FUNCTION runhub.cron_jobs()
RETURNS TABLE (name text, schedule text, command text, in_cron_database boolean)
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    VALUES
    -- The fallback behind NOTIFY: runs whose wake-up was missed, and runs whose execution lease expired.
    ('process-runs', '* * * * *', 'SELECT runhub.cron_process_runs()', false),
    -- Daily digests: each project's comes at its local hour; the job serves every due one.
    ('run-due-digests', '5 * * * *', 'CALL runhub.run_due_digests()', false),
    -- Previews only matter for the 15 minutes create_run accepts them.
    ('purge-previews', '41 * * * *',
     $cmd$DELETE FROM runhub.previews p WHERE p.created_at < now() - interval '1 day'
           AND NOT EXISTS (SELECT 1 FROM runhub.workflow_runs r WHERE r.preview_id = p.id)$cmd$, false),
    -- The outbox keeps what is in play and 30 days of finished mail.
    ('purge-finished-mail', '47 3 * * *', 'CALL runhub.purge_finished_mail()', false),
    -- pg_cron keeps every run's details forever unless told otherwise.
    ('purge-cron-history', '17 3 * * *',
     $cmd$DELETE FROM cron.job_run_details WHERE end_time < now() - interval '7 days'$cmd$, true)
$$;
