-- Holdout groups: a share of a money action's eligible recipients is left unmailed, so the
-- outcome can compare who was mailed with who was not (issue: incrementality). A held-out
-- recipient has its own status and no message; a run records the percent it was executed with.
-- depends: 0022_texts

ALTER TABLE runhub.workflow_run_recipients DROP CONSTRAINT workflow_run_recipients_status_check;
ALTER TABLE runhub.workflow_run_recipients ADD CONSTRAINT workflow_run_recipients_status_check
    CHECK (status IN ('queued', 'sent', 'failed', 'cancelled', 'held_out'));

-- null: executed before holdouts, or an action without one (its recipients were all mailed).
ALTER TABLE runhub.workflow_runs ADD COLUMN holdout_percent smallint CHECK (holdout_percent BETWEEN 0 AND 50);

-- The key of the assignment's hash: nobody outside can tell from an address who will be held out.
INSERT INTO runhub.secrets (name, value)
VALUES ('holdout', decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'))
ON CONFLICT (name) DO NOTHING;
