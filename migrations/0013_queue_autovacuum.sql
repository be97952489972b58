-- The queue tables change all day (claims, leases, heartbeats, outcomes): autovacuum visits them
-- after 1-2 % of their rows changed rather than the default 20 %, so dead rows do not pile up in
-- the index scans claims make. (Finished mail is purged by runhub.purge_finished_mail, daily.)
-- depends: 0012_relay_outages

ALTER TABLE runhub.outbox SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000,
                               autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE runhub.workflow_runs SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE runhub.workflow_run_recipients SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE runhub.projects SET (autovacuum_vacuum_scale_factor = 0.05);  -- the digest job updates every row daily
