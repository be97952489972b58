-- A million shops per node: nothing per project in the catalog. The create_run rate count leaves
-- the per-project sequences (projects.create_run_counter: one relation, one file, one lock in every
-- pg_dump per shop) for rows of runhub.create_run_counts, one per project that has called
-- create_run: the minute of runhub's clock it counts and the calls counted in it.
--
-- The existing sequences are not touched here: reading or dropping each would hold one lock per
-- project in the deploy's one transaction (out of shared memory past ~12,000 projects on stock
-- settings). After the deploy commits, `runhub deploy` retires them in batches of their own
-- transactions (runhub._retire_create_run_counters, sql/10_projects.sql): each project's count of
-- the current minute moves into its row, its sequence is dropped and create_run_counter set null.
-- Until its turn comes, a project's first create_run retires its own counter the same way, so no
-- count of the current minute is lost. New projects get no sequence: the column is null for them,
-- and kept only for projects not yet retired.
-- depends: 0017_create_run_counter

CREATE TABLE runhub.create_run_counts (
    project_id  uuid    PRIMARY KEY REFERENCES runhub.projects (id) ON DELETE CASCADE,
    minute      bigint  NOT NULL,                 -- minute since the epoch on runhub._now()
    calls       integer NOT NULL CHECK (calls > 0)
) WITH (fillfactor = 70);  -- room on each page, so the count's update stays a HOT one
ALTER TABLE runhub.create_run_counts ENABLE ROW LEVEL SECURITY;  -- no role reads it; owner only

ALTER TABLE runhub.projects ALTER COLUMN create_run_counter DROP NOT NULL;
COMMENT ON COLUMN runhub.projects.create_run_counter IS
    'Before migration 0018: the project''s create_run counter sequence. Null once retired, and for every project created since';

-- The owner created those sequences from inside create_project; it creates nothing at run time now.
REVOKE CREATE ON SCHEMA runhub FROM runhub_owner;
