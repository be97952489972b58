-- The two indexes over a run's recipients' addresses compare them byte for byte (collation "C")
-- instead of through the server's locale (strcoll for every comparison): writing a 1,000-recipient
-- run spent a fifth of its time there. Equality is the same under any deterministic collation, so the
-- same rows are unique and found; the column keeps the database's collation (what readers see and
-- how they sort is unchanged). A lookup by address uses these indexes only when it compares in "C":
-- runhub's probes say `email COLLATE "C" = ...` (sql/40_recipients.sql, 45_attribution.sql,
-- 50_workflows.sql). Built under the table's lock, as the indexes they replace.
-- depends: 0014_ingest_checks
ALTER TABLE runhub.workflow_run_recipients DROP CONSTRAINT workflow_run_recipients_run_id_email_key;
CREATE UNIQUE INDEX workflow_run_recipients_run_email
    ON runhub.workflow_run_recipients (run_id, email COLLATE "C");
DROP INDEX runhub.workflow_run_recipients_contact;
CREATE INDEX workflow_run_recipients_contact
    ON runhub.workflow_run_recipients (project_id, email COLLATE "C", created_at DESC);
