-- How many messages runhub cancelled instead of sending, by why, since it was installed: a
-- counter for monitoring (runhub.metrics(), Prometheus). The outbox itself cannot answer it — its
-- finished rows are purged after 30 days — and counting them would scan it. A claim, cancel_run and
-- a suppression add to these rows only when they cancel something.
-- depends: 0020_named_parameters

CREATE TABLE runhub.outbox_cancellations (
    reason text   PRIMARY KEY CHECK (reason IN ('expired', 'run_cancelled', 'suppressed')),
    count  bigint NOT NULL DEFAULT 0 CHECK (count >= 0)
);
INSERT INTO runhub.outbox_cancellations (reason) VALUES ('expired'), ('run_cancelled'), ('suppressed');
