-- When the sender started a message's current attempt (render, then SMTP), written before it does.
-- depends: 0004_sender

-- A lapsed lease then tells a message the lost sender was working on (it may be what kills it)
-- from one it only held in its local queue: only the first kind is given up after 8 attempts.
ALTER TABLE runhub.outbox ADD COLUMN started_at timestamptz;
