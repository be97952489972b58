-- The pg_cron jobs this database wants. The loader registers them by name (runhub:<database>:<name>);
-- where pg_cron is missing it prints them so they can be scheduled by other means.
-- Schedules are UTC. in_cron_database: the job runs in cron.database_name rather than here.

CREATE OR REPLACE FUNCTION runhub.cron_jobs()
RETURNS TABLE (name text, schedule text, command text, in_cron_database boolean)
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    VALUES
    -- pg_cron keeps every run's details forever unless told otherwise.
    ('purge-cron-history', '17 3 * * *',
     $cmd$DELETE FROM cron.job_run_details WHERE end_time < now() - interval '7 days'$cmd$, true)
$$;
