-- The action registry. The rows are code: every deploy upserts them, so the registry a database
-- serves is always the one its functions were written for.

INSERT INTO runhub.actions AS a (id, label, type, risk, required_role, confirm_required, supports_preview,
                                 ui, outcome, requires, policy, exclusions, template, sent_event_type, position)
VALUES
    ('recover_abandoned', 'Recover abandoned checkouts', 'workflow', 'medium', 'admin', true, true,
     '{}',
     '{"model": "last_touch_48h", "windowHours": 48, "metrics": ["recovered_revenue", "conversions"], "holdout": true}',
     '[{"type": "hasIntegration", "integration": "payments"},
       {"type": "hasSetting", "setting": "shopUrl"},
       {"type": "hasEvents", "eventType": "checkout_started", "minCount": 1}]',
     '{"cooldownMinutes": 60, "maxRecipients": 1000, "minRecipients": 1, "requirePreview": true,
       "previewMaxAgeMinutes": 15, "warnAtRecipients": 500, "windowHours": 24}',
     '{converted,alreadyContacted,suppressed,frequencyCap}', 'recovery', 'recovery_email_sent', 1),
    ('send_promo', 'Send a promotion or update', 'workflow', 'high', 'owner', true, true,
     '{"modalId": "sendPromo"}',
     '{"model": "last_touch_48h", "windowHours": 48, "metrics": ["attributed_revenue", "orders"], "holdout": true}',
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

-- What each exclusion means, in the words a preview shows: {key, params, text}, the text in the
-- locale. The recipient builder enforces exactly the exclusions an action lists, and the preview
-- describes exactly those: one definition, two uses. PL/pgSQL, as _criteria: a SQL function with
-- a SET clause is planned at every call (a preview makes several).
CREATE OR REPLACE FUNCTION runhub._exclusion_text(p_locale text, p_exclusion text, p_frequency_cap_hours int)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_exclusion NOT IN ('converted', 'alreadyContacted', 'alreadyOnboarded', 'suppressed', 'frequencyCap') THEN
        RETURN NULL;
    END IF;
    RETURN runhub._owner_text(p_locale, 'owner.exclusion.' || p_exclusion,
                              CASE WHEN p_exclusion = 'frequencyCap' THEN jsonb_build_object('hours', p_frequency_cap_hours)
                                   ELSE '{}' END);
END
$$;

-- The audience of an action with these params, as a sentence built from the same policy windows
-- the recipient builder filters with: {key, params, text}, the text in the locale.
CREATE OR REPLACE FUNCTION runhub._criteria(p_locale text, p_action text, p_policy jsonb, p_params jsonb)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN CASE p_action
        WHEN 'recover_abandoned' THEN runhub._owner_text(p_locale, 'owner.criteria.recoverAbandoned',
                                          jsonb_build_object('hours', (p_policy ->> 'windowHours')::int))
        WHEN 'send_promo' THEN runhub._owner_text(p_locale, CASE p_params ->> 'segmentation'
                                          WHEN 'recent_7d' THEN 'owner.criteria.sendPromo.recent7d'
                                          WHEN 'recent_30d' THEN 'owner.criteria.sendPromo.recent30d'
                                          ELSE 'owner.criteria.sendPromo.all' END)
        WHEN 'onboard_users' THEN runhub._owner_text(p_locale, 'owner.criteria.onboardUsers',
                                          jsonb_build_object('days', (p_policy ->> 'windowDays')::int))
    END;
END
$$;

-- The words for one exclusion, in a locale (default English): what a preview's label says.
CREATE OR REPLACE FUNCTION runhub.exclusion_label(exclusion text, frequency_cap_hours int, locale text DEFAULT 'en')
RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER  -- it reads runhub.texts, which the app's login may not
SET search_path = pg_catalog, pg_temp
AS $$ SELECT runhub._exclusion_text(exclusion_label.locale, exclusion_label.exclusion, exclusion_label.frequency_cap_hours) ->> 'text' $$;

-- The audience of an action under a policy and params, in a locale (default English): what a
-- preview's criteria say.
CREATE OR REPLACE FUNCTION runhub.criteria_text(action text, policy jsonb, params jsonb, locale text DEFAULT 'en')
RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER  -- it reads runhub.texts, which the app's login may not
SET search_path = pg_catalog, pg_temp
AS $$ SELECT runhub._criteria(criteria_text.locale, criteria_text.action, criteria_text.policy, criteria_text.params) ->> 'text' $$;

-- The project's frequency cap in hours (setting frequencyCapHours, default 16). No SET clause: an
-- expression inlined where it is used (the recipient builder).
CREATE OR REPLACE FUNCTION runhub._frequency_cap_hours(p_settings jsonb)
RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT coalesce((p_settings ->> 'frequencyCapHours')::int, 16) $$;

-- The share of an action's eligible recipients held out of its mail (percent): the project's
-- holdoutPercent (default defaultHoldoutPercent) for the actions whose outcome is money (registry
-- outcome.holdout), else 0. No SET clause: inlined.
CREATE OR REPLACE FUNCTION runhub._holdout_percent(p_settings jsonb, p_outcome jsonb)
RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN (p_outcome ->> 'holdout')::boolean
                THEN coalesce((p_settings ->> 'holdoutPercent')::int, runhub._constant('defaultHoldoutPercent'))
                ELSE 0 END
$$;

-- Whether a recipient of a run is held out: the first 32 bits of a keyed hash of the run and the
-- address below the percent's share of 2^32. The same run and address always answer alike (a
-- re-executed run holds out the same people), whatever order the addresses come in, and without
-- the database's key (runhub.secrets 'holdout') nobody can tell who will be. No SET clause:
-- inlined into the execution's one statement; STABLE as convert_to is (declared IMMUTABLE, a
-- function calling a STABLE one is not inlined but run as a query of its own for every recipient).
CREATE OR REPLACE FUNCTION runhub._held_out(p_key bytea, p_run uuid, p_email text, p_percent int)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT p_percent > 0
       AND ('x' || pg_catalog.left(pg_catalog.encode(pg_catalog.sha256(
                p_key || pg_catalog.convert_to(p_run::text || ':' || p_email, 'UTF8')), 'hex'), 8))::bit(32)::bigint
           < (p_percent::bigint * 4294967296) / 100
$$;

-- The key of the holdout hash (for the execution, which runs as runhub's owner).
CREATE OR REPLACE FUNCTION runhub._holdout_key()
RETURNS bytea
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT s.value FROM runhub.secrets s WHERE s.name = 'holdout' $$;

-- Since when a customer must have been seen to be in send_promo's segmentation (recent_7d,
-- recent_30d, or all): the one definition, for the recipient builder, explain_recipient and the
-- hasRecipients prerequisite. No SET clause: inlined where it is used.
CREATE OR REPLACE FUNCTION runhub._segment_since(p_segmentation text, p_at timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE p_segmentation WHEN 'recent_7d' THEN p_at - interval '7 days'
                               WHEN 'recent_30d' THEN p_at - interval '30 days'
                               ELSE '-infinity' END
$$;

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
                 WHERE c.project_id = p_project AND c.last_seen_at > runhub._segment_since('recent_30d', now()))
        ELSE false END
      FROM jsonb_array_elements(p_requires) WITH ORDINALITY AS x(r, ord)
$$;
