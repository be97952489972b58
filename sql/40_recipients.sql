-- The one recipient builder, shared by preview and execution: who an action would e-mail right
-- now, and for everyone left out, the one exclusion that left them out.

-- The audience before exclusions: one row per customer e-mail. Windows come from the registry.
CREATE OR REPLACE FUNCTION runhub._audience(p_project uuid, p_action text, p_params jsonb, p_at timestamptz)
RETURNS TABLE (email text, name text, locale text, cart_id text, correlation_id text,
               amount_cents bigint, currency char(3), since timestamptz)
LANGUAGE sql STABLE
AS $$
    -- recover_abandoned: each customer's latest checkout in the window (timeline order).
    (SELECT DISTINCT ON (e.customer_email)
            e.customer_email,
            coalesce(e.customer_name, (SELECT c.name FROM runhub.customers c
                                        WHERE c.project_id = p_project AND c.email = e.customer_email)),
            coalesce(e.customer_locale, (SELECT c.locale FROM runhub.customers c
                                          WHERE c.project_id = p_project AND c.email = e.customer_email)),
            coalesce(e.payload ->> 'cartId', e.correlation_id), e.correlation_id,
            e.amount_cents, e.currency, e.occurred_at
       FROM runhub.business_events e
      WHERE p_action = 'recover_abandoned'
        AND e.project_id = p_project AND e.event_type = 'checkout_started' AND e.customer_email IS NOT NULL
        AND coalesce(e.payload ->> 'cartId', e.correlation_id) IS NOT NULL  -- no cart, nothing to link back to
        AND e.occurred_at > p_at - make_interval(hours => (
                SELECT (x.policy ->> 'windowHours')::int FROM runhub.actions x WHERE x.id = 'recover_abandoned'))
        AND e.occurred_at <= p_at
      ORDER BY e.customer_email, e.occurred_at DESC, e.id DESC)
    UNION ALL
    -- send_promo: customers and leads seen in the segmentation window.
    SELECT c.email, c.name, c.locale, NULL, NULL, NULL, NULL, c.last_seen_at
      FROM runhub.customers c
     WHERE p_action = 'send_promo' AND c.project_id = p_project
       AND c.last_seen_at > runhub._segment_since(p_params ->> 'segmentation', p_at)
    UNION ALL
    -- onboard_users: sign-ups in the window with nothing else from them since.
    SELECT c.email, c.name, c.locale, NULL, NULL, NULL, NULL, c.signed_up_at
      FROM runhub.customers c
     WHERE p_action = 'onboard_users' AND c.project_id = p_project
       AND c.signed_up_at > p_at - make_interval(days => (
               SELECT (x.policy ->> 'windowDays')::int FROM runhub.actions x WHERE x.id = 'onboard_users'))
       AND c.signed_up_at <= p_at
       AND (c.last_engaged_at IS NULL OR c.last_engaged_at <= c.signed_up_at)
$$;

-- The audience with each member's exclusion (null: included). Exclusions are tried in the order the
-- action lists them, and only those it lists: what is not listed is not enforced, and not shown.
-- Written for the planner: the flags are one-time subqueries, the set-wide exclusions hashed IN
-- lists built once, the per-checkout ones index probes. _audience and _recipients pin no
-- search_path so that they inline into the calling query (a SET clause forbids it: 3x slower on
-- 50,000 customers); every name in them is schema-qualified and they run with the caller's rights.
-- A recipient's address is looked up COLLATE "C", as its indexes hold it (migration 0015).
CREATE OR REPLACE FUNCTION runhub._recipients(p_project uuid, p_action text, p_params jsonb, p_at timestamptz)
RETURNS TABLE (email text, name text, locale text, cart_id text, amount_cents bigint, currency char(3),
               excluded_by text)
LANGUAGE sql STABLE
AS $$
    SELECT a.email, a.name, a.locale, a.cart_id, a.amount_cents, a.currency,
           CASE
           WHEN (SELECT 'converted' = ANY (x.exclusions) FROM runhub.actions x WHERE x.id = p_action) AND (
                    EXISTS (SELECT 1 FROM runhub.customers cu
                             WHERE cu.project_id = p_project AND cu.email = a.email AND cu.last_paid_at >= a.since)
                 OR EXISTS (SELECT 1 FROM runhub.business_events pe
                             WHERE pe.project_id = p_project AND pe.event_type = 'payment_succeeded'
                               AND pe.correlation_id = a.correlation_id AND pe.occurred_at >= a.since))
                THEN 'converted'
           WHEN (SELECT 'alreadyContacted' = ANY (x.exclusions) FROM runhub.actions x WHERE x.id = p_action) AND EXISTS (
                    SELECT 1 FROM runhub.workflow_run_recipients r
                     WHERE r.project_id = p_project AND r.email COLLATE "C" = a.email AND r.cart_id = a.cart_id
                       AND r.status IN ('queued', 'sent', 'held_out'))  -- held out for a cart stays so: a later run mailing it would blur the comparison
                THEN 'alreadyContacted'
           WHEN (SELECT 'alreadyOnboarded' = ANY (x.exclusions) FROM runhub.actions x WHERE x.id = p_action)
                AND a.email IN (SELECT r.email FROM runhub.workflow_run_recipients r
                                  JOIN runhub.workflow_runs w ON w.id = r.run_id
                                 WHERE r.project_id = p_project AND w.action_id = 'onboard_users'
                                   AND r.status IN ('queued', 'sent'))
                THEN 'alreadyOnboarded'
           WHEN (SELECT 'suppressed' = ANY (x.exclusions) FROM runhub.actions x WHERE x.id = p_action)
                AND a.email IN (SELECT s.email FROM runhub.suppressions s WHERE s.project_id = p_project)
                THEN 'suppressed'
           WHEN (SELECT 'frequencyCap' = ANY (x.exclusions) FROM runhub.actions x WHERE x.id = p_action)
                AND a.email IN (SELECT r.email FROM runhub.workflow_run_recipients r
                                 WHERE r.project_id = p_project AND r.status IN ('queued', 'sent')
                                   AND r.created_at > p_at - make_interval(hours => (
                                       SELECT runhub._frequency_cap_hours(p.settings) FROM runhub.projects p
                                        WHERE p.id = p_project)))
                THEN 'frequencyCap'
           END
      FROM runhub._audience(p_project, p_action,
                            p_params, p_at) a
$$;
