-- The action registry. The rows are code: every deploy upserts them, so the registry a database
-- serves is always the one its functions were written for.

INSERT INTO runhub.actions AS a (id, label, type, risk, required_role, confirm_required, supports_preview,
                                 ui, outcome, requires, policy, exclusions, template, sent_event_type, position)
VALUES
    ('recover_abandoned', 'Recover abandoned checkouts', 'workflow', 'medium', 'admin', true, true,
     '{}',
     '{"model": "last_touch_48h", "windowHours": 48, "metrics": ["recovered_revenue", "conversions"]}',
     '[{"type": "hasIntegration", "integration": "payments"},
       {"type": "hasSetting", "setting": "shopUrl"},
       {"type": "hasEvents", "eventType": "checkout_started", "minCount": 1}]',
     '{"cooldownMinutes": 60, "maxRecipients": 1000, "minRecipients": 1, "requirePreview": true,
       "previewMaxAgeMinutes": 15, "warnAtRecipients": 500, "windowHours": 24}',
     '{converted,alreadyContacted,suppressed,frequencyCap}', 'recovery', 'recovery_email_sent', 1),
    ('send_promo', 'Send a promotion or update', 'workflow', 'high', 'owner', true, true,
     '{"modalId": "sendPromo"}',
     '{"model": "last_touch_48h", "windowHours": 48, "metrics": ["attributed_revenue", "orders"]}',
     '[{"type": "hasIntegration", "integration": "email"},
       {"type": "hasRecipients", "source": "customers_30d"}]',
     '{"cooldownMinutes": 60, "maxRecipients": 1000, "minRecipients": 1, "requirePreview": true,
       "previewMaxAgeMinutes": 15, "warnAtRecipients": 500}',
     '{suppressed,frequencyCap}', 'promo', 'promo_email_sent', 2),
    ('onboard_users', 'Welcome new sign-ups', 'workflow', 'low', 'member', true, true,
     '{}',
     '{"model": "last_touch_48h", "windowHours": 48, "metrics": ["activated_users", "conversions"]}',
     '[{"type": "hasIntegration", "integration": "email"},
       {"type": "hasEvents", "eventType": "user_signed_up", "minCount": 1}]',
     '{"cooldownMinutes": 60, "maxRecipients": 1000, "minRecipients": 1, "requirePreview": true,
       "previewMaxAgeMinutes": 15, "warnAtRecipients": 500, "windowDays": 7}',
     '{alreadyOnboarded,suppressed,frequencyCap}', 'onboarding', 'onboarding_email_sent', 3)
ON CONFLICT (id) DO UPDATE SET
    label = excluded.label, type = excluded.type, risk = excluded.risk, required_role = excluded.required_role,
    confirm_required = excluded.confirm_required, supports_preview = excluded.supports_preview,
    ui = excluded.ui, outcome = excluded.outcome, requires = excluded.requires, policy = excluded.policy,
    exclusions = excluded.exclusions, template = excluded.template,
    sent_event_type = excluded.sent_event_type, position = excluded.position
WHERE (a.*) IS DISTINCT FROM (excluded.*);

-- What each exclusion means, in the words a preview shows. The recipient builder enforces exactly
-- the exclusions an action lists, and the preview describes exactly those: one definition, two uses.
-- PL/pgSQL, as criteria_text: a SQL function with a SET clause is planned on every call (a preview
-- makes seven).
CREATE OR REPLACE FUNCTION runhub.exclusion_label(exclusion text, frequency_cap_hours int)
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_exclusion ALIAS FOR exclusion;
    p_frequency_cap_hours ALIAS FOR frequency_cap_hours;
BEGIN
    RETURN CASE p_exclusion
        WHEN 'converted'        THEN 'Customers who paid after their checkout'
        WHEN 'alreadyContacted' THEN 'Checkouts that already got a recovery e-mail'
        WHEN 'alreadyOnboarded' THEN 'Users who already got a welcome e-mail'
        WHEN 'suppressed'       THEN 'Unsubscribed, bounced or suppressed addresses'
        WHEN 'frequencyCap'     THEN format('Customers e-mailed by any workflow in the last %s hours', p_frequency_cap_hours)
    END;
END
$$;

-- The audience of an action with these params, as a plain-English sentence built from the same
-- policy windows the recipient builder filters with.
CREATE OR REPLACE FUNCTION runhub.criteria_text(action text, policy jsonb, params jsonb)
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_action ALIAS FOR action;
    p_policy ALIAS FOR policy;
    p_params ALIAS FOR params;
BEGIN
    RETURN CASE p_action
        WHEN 'recover_abandoned' THEN format(
            'Customers whose latest checkout in the last %s hours has no payment yet', p_policy ->> 'windowHours')
        WHEN 'send_promo' THEN CASE p_params ->> 'segmentation'
            WHEN 'recent_7d'  THEN 'Customers and leads seen in the last 7 days'
            WHEN 'recent_30d' THEN 'Customers and leads seen in the last 30 days'
            ELSE 'Every customer and lead this shop has seen' END
        WHEN 'onboard_users' THEN format(
            'People who signed up in the last %s days and have done nothing since', p_policy ->> 'windowDays')
    END;
END
$$;

-- The project's frequency cap in hours (setting frequencyCapHours, default 16). No SET clause: an
-- expression inlined where it is used (the recipient builder).
CREATE OR REPLACE FUNCTION runhub._frequency_cap_hours(p_settings jsonb)
RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT coalesce((p_settings ->> 'frequencyCapHours')::int, 16) $$;

-- Each prerequisite of an action (its registry `requires`) with whether the project meets it, in
-- the registry's order: the one definition, for the preview's checks (_requirements) and the
-- digest's whole batch of projects at once. No SET clause, so that it inlines into the calling
-- query (every name schema-qualified; it runs with the caller's rights).
CREATE OR REPLACE FUNCTION runhub._requirement_checks(p_project uuid, p_settings jsonb, p_requires jsonb)
RETURNS TABLE (requirement jsonb, ord bigint, satisfied boolean)
LANGUAGE sql STABLE
AS $$
    SELECT x.r, x.ord, CASE x.r ->> 'type'
        WHEN 'hasIntegration' THEN coalesce(p_settings -> 'integrations', '[]') ? (x.r ->> 'integration')
        WHEN 'hasSetting' THEN coalesce(p_settings ->> (x.r ->> 'setting'), '') <> ''
        WHEN 'hasEvents' THEN (SELECT count(*) FROM (
                SELECT 1 FROM runhub.business_events e
                 WHERE e.project_id = p_project AND e.event_type = x.r ->> 'eventType'
                 LIMIT coalesce((x.r ->> 'minCount')::int, 1)) n) >= coalesce((x.r ->> 'minCount')::int, 1)
        WHEN 'hasRecipients' THEN EXISTS (
                SELECT 1 FROM runhub.customers c
                 WHERE c.project_id = p_project AND c.last_seen_at > now() - interval '30 days')
        ELSE false END
      FROM jsonb_array_elements(p_requires) WITH ORDINALITY AS x(r, ord)
$$;
