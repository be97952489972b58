-- Relay outages are the sender's problem, not the message's: each sender reports whether its SMTP
-- relay answers (runhub status shows "relay unreachable since ..."), and a message that loses its
-- point with age (a recovery mail after its cart's window, a digest after its day) expires instead
-- of waiting out an outage to arrive stale: the claim cancels it with the reason.
-- depends: 0011_digest_last_sent

ALTER TABLE runhub.outbox ADD COLUMN expires_at timestamptz;  -- null: it keeps its point

CREATE TABLE runhub.relay_status (
    worker      text        PRIMARY KEY,  -- the sender's worker id
    relay       text        NOT NULL,     -- host:port, no credentials
    down_since  timestamptz,              -- null: the relay answered last time
    last_error  text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
