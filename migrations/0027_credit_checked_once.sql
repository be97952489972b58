-- A credit's rules checked by one function instead of six CHECK constraints: PostgreSQL rebuilds a
-- table's CHECK expressions for every INSERT statement (read back from the catalog and planned),
-- which cost a one-row insert into workflow_attributions ~35 µs of its ~65, paid by every credited
-- payment in the transaction that ingests it. The rules are the same; _is_valid_credit (also in
-- sql/45_attribution.sql, re-applied there) holds them, and the rows already stored passed them.
-- depends: 0026_outbox_keyed_by_recipient
CREATE OR REPLACE FUNCTION runhub._is_valid_credit(p_method text, p_confidence text, p_window_hours int,
                                                  p_sent_at timestamptz, p_paid_at timestamptz, p_amount_cents bigint)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN p_method IN ('wid_link', 'cart_match', 'amount_match', 'email_exact')
       AND p_confidence = CASE p_method WHEN 'wid_link' THEN 'high' WHEN 'cart_match' THEN 'medium' ELSE 'low' END
       AND p_window_hours BETWEEN 1 AND 8760
       AND p_sent_at <= p_paid_at AND p_paid_at - p_sent_at <= make_interval(hours => p_window_hours)
       AND p_amount_cents >= 0;
END
$$;
REVOKE ALL ON FUNCTION runhub._is_valid_credit(text, text, int, timestamptz, timestamptz, bigint) FROM PUBLIC;
ALTER TABLE runhub.workflow_attributions
    DROP CONSTRAINT workflow_attributions_amount_cents_check,
    DROP CONSTRAINT workflow_attributions_check,
    DROP CONSTRAINT workflow_attributions_check1,
    DROP CONSTRAINT workflow_attributions_confidence_check,
    DROP CONSTRAINT workflow_attributions_method_check,
    DROP CONSTRAINT workflow_attributions_window_hours_check,
    ADD CONSTRAINT workflow_attributions_valid
        CHECK (runhub._is_valid_credit(method, confidence, window_hours, sent_at, paid_at, amount_cents));
