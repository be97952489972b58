-- Outcomes: payments credited to the workflow mail that earned them. Each run keeps the attribution
-- window its action had when it was created (changing the registry never recounts a past run) and,
-- once settled, when its last mail went out (where its window ends).
-- depends: 0007_unsubscribe_keys

ALTER TABLE runhub.workflow_runs
    ADD COLUMN outcome_window_hours int CHECK (outcome_window_hours BETWEEN 1 AND 8760),  -- null: no money outcome
    ADD COLUMN last_sent_at timestamptz;  -- set when the run settles (null then: it sent nothing)

-- Runs made before this migration: the window their action has now, and their last mail.
UPDATE runhub.workflow_runs r
   SET outcome_window_hours = (a.outcome ->> 'windowHours')::int
  FROM runhub.actions a
 WHERE a.id = r.action_id
   AND EXISTS (SELECT 1 FROM jsonb_array_elements_text(a.outcome -> 'metrics') m WHERE m LIKE '%\_revenue');
UPDATE runhub.workflow_runs r
   SET last_sent_at = (SELECT max(o.sent_at) FROM runhub.workflow_run_recipients rc
                         JOIN runhub.outbox o ON o.recipient_id = rc.id
                        WHERE rc.run_id = r.id AND o.status = 'sent')
 WHERE r.completed_at IS NOT NULL;

-- One row per attributed payment (never more: the unique key), append-only like business_events,
-- saying what matched and why. The touch is a message runhub's sender had accepted (outbox), never
-- a client's event.
CREATE TABLE runhub.workflow_attributions (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id        uuid        NOT NULL,  -- the run's (a project's deletion takes its runs, and so this)
    run_id            uuid        NOT NULL REFERENCES runhub.workflow_runs (id) ON DELETE CASCADE,
    -- No FK to business_events: TRUNCATE must still meet its append-only refusal, and the only way an
    -- event goes (its project's deletion) takes the credit with it through its run. (Foreign keys
    -- cost every payment a lookup each; the run's is the one that carries a deletion.)
    payment_event_id  bigint      NOT NULL UNIQUE,
    message_id        bigint      NOT NULL,  -- the touch: runhub.outbox(id) (no FK, as the outbox has none)
    method            text        NOT NULL CHECK (method IN ('wid_link', 'cart_match', 'amount_match', 'email_exact')),
    confidence        text        NOT NULL CHECK (confidence IN ('high', 'medium', 'low')),
    window_hours      int         NOT NULL CHECK (window_hours BETWEEN 1 AND 8760),
    sent_at           timestamptz NOT NULL,  -- when the touch went out
    paid_at           timestamptz NOT NULL,  -- the payment's occurred_at
    amount_cents      bigint      NOT NULL CHECK (amount_cents >= 0),
    currency          char(3)     NOT NULL,  -- the payment's, checked at ingest
    attributed_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (sent_at <= paid_at AND paid_at - sent_at <= make_interval(hours => window_hours)),
    CHECK (confidence = CASE method WHEN 'wid_link' THEN 'high' WHEN 'cart_match' THEN 'medium' ELSE 'low' END)
);
CREATE INDEX workflow_attributions_run ON runhub.workflow_attributions (run_id);

ALTER TABLE runhub.workflow_attributions ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON runhub.workflow_attributions TO runhub_reader;
