-- Workflows: the action registry, customers derived from events, suppressions, previews, runs,
-- their recipients and the outbox the sender drains.
-- depends: 0002_business_events

-- Per-project counter of create_run calls. A sequence because it must not roll back: every call
-- counts, even one refused (and so rolled back) by a later rule.
ALTER TABLE runhub.projects ADD COLUMN trigger_counter regclass;

-- IANA zone names a project may use, refreshed from pg_timezone_names by every deploy
-- (sql/05_timezones.sql): reading pg_timezone_names scans the zoneinfo folder, ~10 ms a call.
CREATE TABLE runhub.timezones (
    name text PRIMARY KEY
);

-- The action registry: data owned by the back end (rows are upserted by sql/30_actions.sql).
CREATE TABLE runhub.actions (
    id               text    PRIMARY KEY CHECK (id ~ '^[a-z][a-z0-9_]{0,39}$'),
    label            text    NOT NULL,
    type             text    NOT NULL CHECK (type IN ('workflow', 'navigate')),
    risk             text    NOT NULL CHECK (risk IN ('low', 'medium', 'high')),
    required_role    text    NOT NULL CHECK (required_role IN ('owner', 'admin', 'member')),
    confirm_required boolean NOT NULL,
    supports_preview boolean NOT NULL,
    ui               jsonb   NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(ui) = 'object'),
    outcome          jsonb   CHECK (jsonb_typeof(outcome) = 'object'),
    requires         jsonb   NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(requires) = 'array'),
    policy           jsonb   NOT NULL CHECK (jsonb_typeof(policy) = 'object'),
    exclusions       text[]  NOT NULL DEFAULT '{}',
    template         text    NOT NULL,
    sent_event_type  text    NOT NULL CHECK (sent_event_type ~ '^[a-z][a-z0-9_]{0,63}$'),
    position         int     NOT NULL DEFAULT 0
);

-- One row per customer e-mail per project, maintained from business_events on insert, so that
-- audiences are read from an index instead of re-aggregating the event history.
CREATE TABLE runhub.customers (
    project_id       uuid        NOT NULL REFERENCES runhub.projects (id) ON DELETE CASCADE,
    email            text        NOT NULL,
    name             text,
    locale           text,
    first_seen_at    timestamptz NOT NULL,
    last_seen_at     timestamptz NOT NULL,  -- latest event of theirs (our own sends excluded)
    signed_up_at     timestamptz,           -- latest user_signed_up
    last_engaged_at  timestamptz,           -- latest event other than a sign-up or one of our sends
    last_paid_at     timestamptz,           -- latest payment_succeeded
    PRIMARY KEY (project_id, email)
);
CREATE INDEX customers_last_seen ON runhub.customers (project_id, last_seen_at DESC);
CREATE INDEX customers_signed_up ON runhub.customers (project_id, signed_up_at DESC) WHERE signed_up_at IS NOT NULL;

-- Payments by checkout correlation id: "did this checkout convert?"
CREATE INDEX business_events_payment_correlation ON runhub.business_events (project_id, correlation_id)
    WHERE event_type = 'payment_succeeded' AND correlation_id IS NOT NULL;

-- Addresses no workflow may e-mail again (unsubscribes, hard bounces, manual suppressions).
CREATE TABLE runhub.suppressions (
    project_id  uuid        NOT NULL REFERENCES runhub.projects (id) ON DELETE CASCADE,
    email       text        NOT NULL CHECK (email = lower(email)),
    reason      text        NOT NULL CHECK (reason IN ('unsubscribed', 'bounced', 'complained', 'manual')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, email)
);

-- Previews: create_run requires a recent one of the same action and params by the same actor.
CREATE TABLE runhub.previews (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id       uuid        NOT NULL REFERENCES runhub.projects (id) ON DELETE CASCADE,
    actor            uuid        NOT NULL,
    action_id        text        NOT NULL REFERENCES runhub.actions (id),
    params           jsonb       NOT NULL,
    params_hash      text        NOT NULL,
    recipient_count  int         NOT NULL,
    blocked          jsonb,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX previews_lookup ON runhub.previews (project_id, action_id, actor, params_hash, created_at DESC);
CREATE INDEX previews_created ON runhub.previews (created_at);

CREATE TABLE runhub.workflow_runs (
    id                        uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id                uuid        NOT NULL REFERENCES runhub.projects (id) ON DELETE CASCADE,
    action_id                 text        NOT NULL REFERENCES runhub.actions (id),
    status                    text        NOT NULL DEFAULT 'queued'
                              CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    requested_at              timestamptz NOT NULL DEFAULT now(),  -- server truth
    client_requested_at       timestamptz,                         -- diagnostics only
    started_at                timestamptz,
    executed_at               timestamptz,  -- recipients and messages written; the sender takes over
    completed_at              timestamptz,
    idempotency_key           text        NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    params                    jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(params) = 'object'),
    preview_id                uuid        REFERENCES runhub.previews (id) ON DELETE SET NULL,
    recipient_count_estimate  int,
    attempts                  int         NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    lease_owner               text,
    lease_expires_at          timestamptz,
    last_heartbeat_at         timestamptz,
    cancel_requested_at       timestamptz,
    result                    jsonb,
    triggered_by              uuid        NOT NULL,
    triggered_by_role         text        NOT NULL CHECK (triggered_by_role IN ('owner', 'admin', 'member')),
    created_at                timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, action_id, idempotency_key),
    -- Lifecycle: a running run has started and either holds an execution lease or has handed its
    -- messages to the sender; a finished run has completed_at and a result; a queued one neither.
    CONSTRAINT workflow_runs_running_state CHECK (status <> 'running'
        OR (started_at IS NOT NULL AND (lease_expires_at IS NOT NULL OR executed_at IS NOT NULL))),
    CONSTRAINT workflow_runs_finished_state CHECK ((status IN ('succeeded', 'failed', 'cancelled'))
        = (completed_at IS NOT NULL)),
    CONSTRAINT workflow_runs_result_state CHECK (status NOT IN ('succeeded', 'failed') OR result IS NOT NULL),
    CONSTRAINT workflow_runs_queued_state CHECK (status <> 'queued' OR (executed_at IS NULL AND lease_owner IS NULL))
);
CREATE INDEX workflow_runs_queued ON runhub.workflow_runs (requested_at) WHERE status = 'queued';
CREATE INDEX workflow_runs_executing ON runhub.workflow_runs (lease_expires_at)
    WHERE status = 'running' AND executed_at IS NULL;
CREATE INDEX workflow_runs_project_action ON runhub.workflow_runs (project_id, action_id, requested_at DESC);
CREATE INDEX workflow_runs_project_requested ON runhub.workflow_runs (project_id, requested_at DESC);

-- Recipients and their messages are written a thousand at a time, only by execute_run, which holds
-- the run's row lock: they carry no foreign keys (a per-row check doubles the cost of execution).
-- Deleting a run (with its project) deletes them by the statement triggers in sql/60_runs.sql.
CREATE TABLE runhub.workflow_run_recipients (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id        uuid        NOT NULL,  -- no FK: see below
    project_id    uuid        NOT NULL,  -- the run's project, copied for the contact index
    email         text        NOT NULL,
    name          text,
    locale        text,
    cart_id       text,
    amount_cents  bigint,
    currency      char(3),
    link          text,
    status        text        NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'sent', 'failed', 'cancelled')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (run_id, email)
);
-- The frequency cap and "already contacted" look a customer's recent workflow mail up here.
CREATE INDEX workflow_run_recipients_contact ON runhub.workflow_run_recipients (project_id, email, created_at DESC);

-- One message per recipient (and, later, per digest). The Message-ID is fixed when the message is
-- written, so a retry after a crash reuses it. A workflow message belongs to its recipient
-- (recipient_id) and run; other mail to its project only.
CREATE TABLE runhub.outbox (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id        uuid        NOT NULL,
    run_id            uuid,
    recipient_id      bigint,
    template          text        NOT NULL,
    locale            text        NOT NULL,
    to_email          text        NOT NULL,
    to_name           text,
    variables         jsonb       NOT NULL DEFAULT '{}',
    message_id        text        NOT NULL,  -- <run.recipient@...> for workflow mail: unique by construction
    status            text        NOT NULL DEFAULT 'queued'
                      CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'cancelled')),
    attempts          int         NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    lease_owner       text,
    lease_expires_at  timestamptz,
    last_error        text,
    smtp_reply        text,
    sent_at           timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- One message per recipient, so per run and address (the recipient is unique on both); reach a
    -- run's messages through its recipients.
    UNIQUE (recipient_id),
    CONSTRAINT outbox_workflow_message CHECK ((run_id IS NULL) = (recipient_id IS NULL)),
    CONSTRAINT outbox_sending_state CHECK (status <> 'sending' OR lease_expires_at IS NOT NULL),
    CONSTRAINT outbox_sent_state CHECK ((status = 'sent') = (sent_at IS NOT NULL))
);
CREATE INDEX outbox_due ON runhub.outbox (next_attempt_at) WHERE status = 'queued';
CREATE INDEX outbox_sending ON runhub.outbox (lease_expires_at) WHERE status = 'sending';
CREATE INDEX outbox_project_other ON runhub.outbox (project_id) WHERE run_id IS NULL;  -- digests and other non-workflow mail

ALTER TABLE runhub.customers ENABLE ROW LEVEL SECURITY;
ALTER TABLE runhub.suppressions ENABLE ROW LEVEL SECURITY;
ALTER TABLE runhub.workflow_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE runhub.workflow_run_recipients ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON runhub.actions, runhub.customers, runhub.suppressions, runhub.workflow_runs,
                runhub.workflow_run_recipients TO runhub_reader;

-- Customers of events ingested before this migration.
INSERT INTO runhub.customers (project_id, email, name, locale, first_seen_at, last_seen_at,
                              signed_up_at, last_engaged_at, last_paid_at)
SELECT project_id, customer_email,
       (array_agg(customer_name ORDER BY occurred_at DESC) FILTER (WHERE customer_name IS NOT NULL))[1],
       (array_agg(customer_locale ORDER BY occurred_at DESC) FILTER (WHERE customer_locale IS NOT NULL))[1],
       min(occurred_at), max(occurred_at),
       max(occurred_at) FILTER (WHERE event_type = 'user_signed_up'),
       max(occurred_at) FILTER (WHERE event_type <> 'user_signed_up'),
       max(occurred_at) FILTER (WHERE event_type = 'payment_succeeded')
  FROM runhub.business_events
 WHERE customer_email IS NOT NULL AND event_type !~ '_email_sent$'
 GROUP BY project_id, customer_email;

-- Trigger counters of projects created before this migration (create_project makes new ones).
DO $$
DECLARE
    v_project uuid;
    v_name    text;
BEGIN
    FOR v_project IN SELECT id FROM runhub.projects LOOP
        v_name := 'trigger_counter_' || replace(v_project::text, '-', '');
        EXECUTE format('CREATE SEQUENCE runhub.%I', v_name);
        UPDATE runhub.projects SET trigger_counter = format('runhub.%I', v_name)::regclass WHERE id = v_project;
    END LOOP;
END
$$;
ALTER TABLE runhub.projects ALTER COLUMN trigger_counter SET NOT NULL;
