-- The sender: a deploy secret for signed unsubscribe links, and delivery bookkeeping on the outbox.
-- depends: 0003_workflows

-- Secrets generated once per database (gen_random_uuid draws on pg_strong_random). Nobody but the
-- owner reads them: the signing functions run with definer rights.
CREATE TABLE runhub.secrets (
    name        text        PRIMARY KEY,
    value       bytea       NOT NULL CHECK (octet_length(value) >= 16),
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO runhub.secrets (name, value)
VALUES ('unsubscribe', decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'));

-- What the SMTP server answered last, by code, for retries and error summaries.
ALTER TABLE runhub.outbox ADD COLUMN smtp_code int CHECK (smtp_code BETWEEN 200 AND 599);
