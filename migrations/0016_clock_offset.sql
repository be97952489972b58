-- runhub's clock: runhub._now() (sql/12_clock.sql) is clock_timestamp() shifted by the interval
-- held here, where the create_run rate limit and the digest job read the time. One row, zero in
-- production. Tests shift it to put "now" at a known second of a minute instead of sleeping for a
-- fresh one. Only its owner (runhub_owner, granted to nobody) and superusers may change it: no
-- grant to any runhub role, and deliberately no setting a session could SET, since a client that
-- moved the clock could step past the rate limit.
-- depends: 0015_recipient_email_bytes

CREATE TABLE runhub.clock_offset (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),  -- one row at most
    shift     interval NOT NULL DEFAULT '0'
);
INSERT INTO runhub.clock_offset DEFAULT VALUES;
