-- Business events: the append-only signal stream (checkouts, payments, leads, signups, sends).
-- depends: 0001_foundation

CREATE TABLE runhub.business_events (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id       uuid        NOT NULL REFERENCES runhub.projects (id) ON DELETE CASCADE,
    event_type       text        NOT NULL CHECK (event_type ~ '^[a-z][a-z0-9_]{0,63}$'),
    occurred_at      timestamptz NOT NULL,               -- when it happened, per the sender
    received_at      timestamptz NOT NULL DEFAULT now(), -- when we stored it: server truth
    idempotency_key  text        NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    correlation_id   text        CHECK (length(correlation_id) BETWEEN 1 AND 255),
    customer_email   text        CHECK (customer_email = lower(btrim(customer_email))),
    customer_name    text        CHECK (length(customer_name) <= 200),
    customer_locale  text        CHECK (customer_locale ~ '^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$'),
    amount_cents     bigint      CHECK (amount_cents BETWEEN 0 AND 9007199254740991),
    currency         char(3)     REFERENCES runhub.currencies (code),
    payload          jsonb       NOT NULL DEFAULT '{}'
                     CHECK (jsonb_typeof(payload) = 'object' AND octet_length(payload::text) <= 32768),
    CHECK ((amount_cents IS NULL) = (currency IS NULL)),
    UNIQUE (project_id, idempotency_key)
);

-- Timeline order (occurred_at DESC, id DESC) and ingestion order (id DESC), each per project.
CREATE INDEX business_events_timeline ON runhub.business_events (project_id, occurred_at DESC, id DESC);
CREATE INDEX business_events_ingestion ON runhub.business_events (project_id, id DESC);
-- Recipient builders and attribution look events up by type within a time window.
CREATE INDEX business_events_type_time ON runhub.business_events (project_id, event_type, occurred_at DESC);

ALTER TABLE runhub.business_events ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON runhub.business_events TO runhub_reader;
