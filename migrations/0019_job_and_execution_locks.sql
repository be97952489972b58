-- Locks no other role can take. runhub serialized its jobs and each project's executions with
-- advisory locks on fixed, guessable keys, and pg_advisory_lock is PUBLIC: any login (a dashboard's
-- runhub_reader) could hold 'runhub.digest_batch' and make every digest job answer busy, or a
-- project's 'runhub.execute:' key and stall process_runs with claimed runs. Row locks on these
-- tables replace them: only their owner (runhub's SECURITY DEFINER functions) and superusers may
-- lock a row of them (SELECT ... FOR UPDATE needs UPDATE on the table, and no runhub role has any
-- privilege on either).
-- depends: 0018_create_run_counts

-- One row per job that must not run twice at once; a run holds its row (FOR UPDATE SKIP LOCKED:
-- another run finds it taken and returns at once).
CREATE TABLE runhub.job_locks (
    job text PRIMARY KEY CHECK (job IN ('digests', 'process_runs_sweep'))
);
INSERT INTO runhub.job_locks (job) VALUES ('digests'), ('process_runs_sweep');

-- One row per project that has had a run executed (made on first need): an execution holds its
-- project's row, so executions of one project run one at a time.
CREATE TABLE runhub.execution_locks (
    project_id uuid PRIMARY KEY REFERENCES runhub.projects (id) ON DELETE CASCADE
);
ALTER TABLE runhub.execution_locks ENABLE ROW LEVEL SECURITY;  -- no role reads it; owner only
