-- "Why did (not) this customer get the mail?": one address through the recipient builder, each rule
-- with its verdict and the value that decided it, in the owner's language.

-- An instant as an owner reads it: the project's local time to the minute.
CREATE OR REPLACE FUNCTION runhub._local_minute(p_timezone text, p_at timestamptz)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT to_char(p_at AT TIME ZONE p_timezone, 'YYYY-MM-DD HH24:MI') $$;

-- Whether the audience rule of the action takes the address, and why: {rule, passed, value, text}.
-- The same windows as runhub._audience (the registry's), read for one address.
CREATE OR REPLACE FUNCTION runhub._explain_audience(p_project runhub.projects, p_action runhub.actions,
                                                   p_params jsonb, p_email text, p_at timestamptz)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_customer runhub.customers;
    v_event    runhub.business_events;
    v_hours    int := (p_action.policy ->> 'windowHours')::int;
    v_days     int := (p_action.policy ->> 'windowDays')::int;
    v_since    timestamptz;
    v_passed   boolean;
    v_key      text;
    v_params   jsonb;
BEGIN
    SELECT * INTO v_customer FROM runhub.customers c WHERE c.project_id = p_project.id AND c.email = p_email;
    IF p_action.id = 'recover_abandoned' THEN
        SELECT * INTO v_event FROM runhub.business_events e
         WHERE e.project_id = p_project.id AND e.event_type = 'checkout_started' AND e.customer_email = p_email
           AND coalesce(e.payload ->> 'cartId', e.correlation_id) IS NOT NULL AND e.occurred_at <= p_at
         ORDER BY e.occurred_at DESC, e.id DESC LIMIT 1;
        v_passed := v_event.id IS NOT NULL AND v_event.occurred_at > p_at - make_interval(hours => v_hours);
        v_key := CASE WHEN v_event.id IS NULL THEN 'owner.explain.checkout.none'
                      WHEN v_passed THEN 'owner.explain.checkout.in' ELSE 'owner.explain.checkout.old' END;
        v_params := jsonb_strip_nulls(jsonb_build_object(
            'at', runhub._local_minute(p_project.timezone, v_event.occurred_at), 'hours', v_hours,
            'cartId', coalesce(v_event.payload ->> 'cartId', v_event.correlation_id)));
        RETURN jsonb_build_object('rule', 'recentCheckout', 'passed', v_passed,
                                  'value', jsonb_build_object('checkoutAt', runhub._iso(v_event.occurred_at)),
                                  'text', runhub._owner_text(p_project.locale, v_key, v_params));
    ELSIF p_action.id = 'send_promo' THEN
        v_since := runhub._segment_since(p_params ->> 'segmentation', p_at);
        v_passed := v_customer.last_seen_at > v_since;
        RETURN jsonb_build_object('rule', 'seenInSegment', 'passed', coalesce(v_passed, false),
                                  'value', jsonb_build_object('lastSeenAt', runhub._iso(v_customer.last_seen_at),
                                                              'segmentation', p_params ->> 'segmentation'),
                                  'text', runhub._owner_text(p_project.locale,
                                              CASE WHEN v_passed THEN 'owner.explain.seen.in' ELSE 'owner.explain.seen.out' END,
                                              jsonb_build_object('at', runhub._local_minute(p_project.timezone, v_customer.last_seen_at))));
    END IF;
    -- onboard_users
    v_passed := v_customer.signed_up_at > p_at - make_interval(days => v_days) AND v_customer.signed_up_at <= p_at
                AND (v_customer.last_engaged_at IS NULL OR v_customer.last_engaged_at <= v_customer.signed_up_at);
    v_key := CASE WHEN v_customer.signed_up_at IS NULL THEN 'owner.explain.signup.none'
                  WHEN v_passed THEN 'owner.explain.signup.in'
                  WHEN v_customer.signed_up_at <= p_at - make_interval(days => v_days) THEN 'owner.explain.signup.old'
                  ELSE 'owner.explain.signup.active' END;
    RETURN jsonb_build_object('rule', 'recentSignUp', 'passed', coalesce(v_passed, false),
                              'value', jsonb_build_object('signedUpAt', runhub._iso(v_customer.signed_up_at),
                                                          'lastActiveAt', runhub._iso(v_customer.last_engaged_at)),
                              'text', runhub._owner_text(p_project.locale, v_key, jsonb_strip_nulls(jsonb_build_object(
                                  'at', runhub._local_minute(p_project.timezone, v_customer.signed_up_at), 'days', v_days,
                                  'activeAt', runhub._local_minute(p_project.timezone, v_customer.last_engaged_at)))));
END
$$;

-- Each exclusion the action lists, in its order, with whether it applies to the address and the
-- fact that decides it: {exclusion, applies, value, text}. The same conditions as
-- runhub._recipients, read for one address (p_since and p_cart: its audience row's).
CREATE OR REPLACE FUNCTION runhub._explain_exclusions(p_project runhub.projects, p_action runhub.actions,
                                                     p_email text, p_since timestamptz, p_cart text,
                                                     p_correlation text, p_at timestamptz)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_cap      int := runhub._frequency_cap_hours(p_project.settings);
    v_out      jsonb := '[]';
    v_x        text;
    v_at       timestamptz;
    v_extra    jsonb;
    v_applies  boolean;
BEGIN
    FOREACH v_x IN ARRAY p_action.exclusions LOOP
        v_at := NULL;
        v_extra := '{}';
        CASE v_x
        WHEN 'converted' THEN
            SELECT max(t) INTO v_at FROM (
                SELECT cu.last_paid_at AS t FROM runhub.customers cu
                 WHERE cu.project_id = p_project.id AND cu.email = p_email AND cu.last_paid_at >= p_since
                UNION ALL
                SELECT pe.occurred_at FROM runhub.business_events pe
                 WHERE pe.project_id = p_project.id AND pe.event_type = 'payment_succeeded'
                   AND pe.correlation_id = p_correlation AND pe.occurred_at >= p_since) paid;
        WHEN 'alreadyContacted' THEN
            SELECT max(r.created_at) INTO v_at FROM runhub.workflow_run_recipients r
             WHERE r.project_id = p_project.id AND r.email COLLATE "C" = p_email AND r.cart_id = p_cart
               AND r.status IN ('queued', 'sent');
        WHEN 'alreadyOnboarded' THEN
            SELECT max(r.created_at) INTO v_at FROM runhub.workflow_run_recipients r
              JOIN runhub.workflow_runs w ON w.id = r.run_id
             WHERE r.project_id = p_project.id AND r.email COLLATE "C" = p_email AND w.action_id = 'onboard_users'
               AND r.status IN ('queued', 'sent');
        WHEN 'suppressed' THEN
            SELECT s.created_at, jsonb_build_object('reason', s.reason) INTO v_at, v_extra FROM runhub.suppressions s
             WHERE s.project_id = p_project.id AND s.email = p_email;
        WHEN 'frequencyCap' THEN
            SELECT r.created_at, jsonb_build_object('action', runhub._text(p_project.locale, 'digest.actionLabel.' || w.action_id),
                                                    'actionId', w.action_id)
              INTO v_at, v_extra
              FROM runhub.workflow_run_recipients r JOIN runhub.workflow_runs w ON w.id = r.run_id
             WHERE r.project_id = p_project.id AND r.email = p_email AND r.status IN ('queued', 'sent')
               AND r.created_at > p_at - make_interval(hours => v_cap)
             ORDER BY r.created_at DESC LIMIT 1;
            v_extra := coalesce(v_extra, '{}') || jsonb_build_object('hours', v_cap);
        END CASE;
        v_applies := v_at IS NOT NULL;
        v_out := v_out || jsonb_build_object(
            'exclusion', v_x, 'applies', v_applies,
            'value', jsonb_strip_nulls(jsonb_build_object('at', runhub._iso(v_at)) || (coalesce(v_extra, '{}') - 'action')),
            'text', runhub._owner_text(p_project.locale, 'owner.explain.' || v_x || CASE WHEN v_applies THEN '.yes' ELSE '.no' END,
                                       jsonb_strip_nulls(coalesce(v_extra, '{}') - 'actionId'
                                           || jsonb_build_object('at', runhub._local_minute(p_project.timezone, v_at))
                                           -- a suppression's reason in the owner's words (value keeps its code)
                                           || CASE WHEN v_extra ? 'reason' THEN jsonb_build_object('reason', runhub._text(
                                                  p_project.locale, 'owner.suppressionReason.' || (v_extra ->> 'reason'))) ELSE '{}' END)));
    END LOOP;
    RETURN v_out;
END
$$;

-- Why an address would (not) get an action's mail now, as an admin: the audience rule and every
-- exclusion the action lists with its verdict and the value that decided it, the verdict itself
-- coming from the recipient builder preview and execution use (runhub._recipients). An address
-- that is no customer is answered, not refused.
CREATE OR REPLACE FUNCTION runhub.explain_recipient(project uuid, actor uuid, action text, email text,
                                                    params jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_project ALIAS FOR project;
    p_actor ALIAS FOR actor;
    p_action ALIAS FOR action;
    p_email ALIAS FOR email;
    p_params ALIAS FOR params;
    v_role     text := runhub._authorize(p_project, p_actor, 'admin');
    v_action   runhub.actions := runhub._require_action(p_action);
    v_project  runhub.projects;
    v_params   jsonb := runhub._workflow_params(p_action, p_params);
    v_email    text := runhub._address(p_email);
    v_at       timestamptz := now();
    v_row      record;
    v_found    boolean;
    v_audience jsonb;
    v_excluded jsonb := '[]';
    v_mailed   boolean;
    v_text     jsonb;
BEGIN
    IF v_email IS NULL THEN
        PERFORM runhub._invalid('common.invalidInput', 'email', 'is not a deliverable e-mail address (ASCII local part, host name, at most 254 characters)');
    END IF;
    SELECT * INTO v_project FROM runhub.projects WHERE id = p_project;
    -- The verdict: the builder's own row for the address (none: not in the audience).
    SELECT r.excluded_by, a.since, a.cart_id, a.correlation_id INTO v_row
      FROM runhub._recipients(p_project, p_action, v_params, v_at) r
      JOIN runhub._audience(p_project, p_action, v_params, v_at) a ON a.email = r.email
     WHERE r.email = v_email;
    v_found := FOUND;
    IF NOT v_found AND NOT EXISTS (SELECT 1 FROM runhub.customers c WHERE c.project_id = p_project AND c.email = v_email) THEN
        RETURN jsonb_build_object('email', v_email, 'actionId', p_action, 'customer', false, 'mailed', false,
                                  'excludedBy', NULL, 'text', runhub._owner_text(v_project.locale, 'owner.explain.notACustomer'),
                                  'audience', NULL, 'exclusions', '[]'::jsonb);
    END IF;
    v_audience := runhub._explain_audience(v_project, v_action, v_params, v_email, v_at);
    IF v_found THEN  -- the builder tries the exclusions on members of the audience only
        v_excluded := runhub._explain_exclusions(v_project, v_action, v_email, v_row.since, v_row.cart_id,
                                                 v_row.correlation_id, v_at);
    END IF;
    v_mailed := v_found AND v_row.excluded_by IS NULL;
    v_text := CASE WHEN v_mailed THEN runhub._owner_text(v_project.locale, 'owner.explain.mailed')
                   ELSE runhub._owner_text(v_project.locale, 'owner.explain.leftOut', jsonb_build_object('why',
                            CASE WHEN NOT v_found THEN v_audience -> 'text' ->> 'text'
                                 ELSE (SELECT x -> 'text' ->> 'text' FROM jsonb_array_elements(v_excluded) x
                                        WHERE x ->> 'exclusion' = v_row.excluded_by) END)) END;
    RETURN jsonb_build_object(
        'email', v_email, 'actionId', p_action, 'customer', true, 'mailed', v_mailed,
        'excludedBy', CASE WHEN v_found THEN v_row.excluded_by END, 'text', v_text,
        'audience', v_audience, 'exclusions', v_excluded);
END
$$;
