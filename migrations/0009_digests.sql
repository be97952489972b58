-- Daily digests: one per project and local day (the unique key is what keeps two jobs, or a job
-- retried, from sending a day twice), and the timing of each job run (runhub status shows them).
-- depends: 0008_attributions

CREATE TABLE runhub.digests (
    project_id  uuid        NOT NULL REFERENCES runhub.projects (id) ON DELETE CASCADE,
    day         date        NOT NULL,  -- the project's local calendar day it covers
    status      text        NOT NULL CHECK (status IN ('queued', 'skipped', 'failed')),
    message_id  bigint,                -- runhub.outbox(id) of the queued mail
    reason      text,                  -- why skipped or failed
    content     jsonb,                 -- the DigestContent queued
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, day),
    CHECK ((status = 'queued') = (message_id IS NOT NULL))
);

CREATE TABLE runhub.job_runs (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job          text        NOT NULL,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL,
    duration_ms  numeric     NOT NULL,
    counts       jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX job_runs_recent ON runhub.job_runs (job, started_at DESC);

ALTER TABLE runhub.digests ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON runhub.digests TO runhub_reader;
