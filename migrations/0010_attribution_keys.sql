-- Credits cost a payment less: a credit is keyed by its payment (the identity column and its
-- sequence, which nothing read, are gone), and its run has no foreign key, as recipients and
-- messages have none (0003): the key's check locked the run's row on every credited payment (a
-- write, and a MultiXact when the payments of one promotion arrive together). Deleting runs —
-- only a project's deletion does — deletes their credits set-based (runhub._delete_run_children).
-- depends: 0009_digests

ALTER TABLE runhub.workflow_attributions DROP CONSTRAINT workflow_attributions_run_id_fkey;
ALTER TABLE runhub.workflow_attributions DROP COLUMN id;
ALTER TABLE runhub.workflow_attributions
    ADD CONSTRAINT workflow_attributions_pkey PRIMARY KEY (payment_event_id),
    DROP CONSTRAINT workflow_attributions_payment_event_id_key;
