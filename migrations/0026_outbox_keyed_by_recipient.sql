-- A workflow message is keyed by its recipient: its id is its recipient's id, so the outbox's
-- unique index on recipient_id (an index entry for every message written) goes. Digests and other
-- mail take their ids from the recipients' sequence, so no id is ever both a recipient's and
-- another message's. The outbox's rows from before (at most 30 days of mail, and what is queued)
-- are renumbered, and the attributions and digests that name them follow. No sender may be at
-- work: a message being sent under its old id could not be recorded, and would go out twice.
-- depends: 0025_customer_name_times
LOCK TABLE runhub.outbox IN ACCESS EXCLUSIVE MODE;
DO $$
DECLARE
    v_sending bigint := (SELECT count(*) FROM runhub.outbox WHERE status = 'sending');
BEGIN
    IF v_sending > 0 THEN
        RAISE EXCEPTION 'stop every runhub sender before this upgrade (migration 0026): % message(s) are being sent', v_sending
            USING ERRCODE = 'object_in_use',
                  HINT = 'Stop the senders (SIGTERM returns what they hold), deploy again, then start them.';
    END IF;
END
$$;

CREATE TEMP TABLE outbox_renumbered ON COMMIT DROP AS
SELECT id AS old_id,
       coalesce(recipient_id, nextval('runhub.workflow_run_recipients_id_seq'::regclass)) AS new_id
  FROM runhub.outbox;

-- The references first (both append-only or kept as history: their own triggers would refuse).
ALTER TABLE runhub.workflow_attributions DISABLE TRIGGER USER;
UPDATE runhub.workflow_attributions a SET message_id = r.new_id
  FROM outbox_renumbered r WHERE a.message_id = r.old_id AND r.new_id <> r.old_id;
ALTER TABLE runhub.workflow_attributions ENABLE TRIGGER USER;
UPDATE runhub.digests d SET message_id = r.new_id
  FROM outbox_renumbered r WHERE d.message_id = r.old_id AND r.new_id <> r.old_id;

-- Then the rows, through negative ids: no two rows hold one id at any point.
ALTER TABLE runhub.outbox ALTER COLUMN id DROP IDENTITY;
UPDATE runhub.outbox o SET id = -r.new_id FROM outbox_renumbered r WHERE o.id = r.old_id;
UPDATE runhub.outbox SET id = -id;
ALTER TABLE runhub.outbox
    ALTER COLUMN id SET DEFAULT nextval('runhub.workflow_run_recipients_id_seq'::regclass),
    DROP CONSTRAINT outbox_recipient_id_key,
    ADD CONSTRAINT outbox_keyed_by_recipient CHECK (recipient_id IS NULL OR recipient_id = id);
