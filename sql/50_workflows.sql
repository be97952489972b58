-- Workflows, trigger side: the registry as the actor sees it, preview, create_run, reading and
-- cancelling runs, suppressions. Policy decisions come from runhub._evaluate_policy (plpython/policy.py).

-- The action or PT404.
CREATE OR REPLACE FUNCTION runhub._require_action(p_action text)
RETURNS runhub.actions
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_action runhub.actions;
BEGIN
    SELECT * INTO v_action FROM runhub.actions WHERE id = p_action;
    IF NOT FOUND THEN
        PERFORM runhub._raise('workflows.actionNotFound', jsonb_build_object('actionId', p_action));
    END IF;
    RETURN v_action;
END
$$;

-- Raise the refusal of a policy decision, if it refuses.
CREATE OR REPLACE FUNCTION runhub._enforce(p_decision jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT (p_decision ->> 'allowed')::boolean THEN
        PERFORM runhub._raise(p_decision ->> 'reason', coalesce(p_decision -> 'reasonParams', '{}'));
    END IF;
    RETURN p_decision;
END
$$;

-- Authorization comes first: a member below the action's required role is refused before any
-- other rule is looked at. The policy says why; a role that ranks high enough (_role_rank, the
-- policy's ROLE_RANK: tests/unit/test_policy_rules.py) needs no call to it.
CREATE OR REPLACE FUNCTION runhub._authorize_action(p_role text, p_action runhub.actions)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF runhub._role_rank(p_role) < runhub._role_rank(p_action.required_role) THEN
        PERFORM runhub._enforce(runhub._evaluate_policy(
            jsonb_build_object('role', p_role, 'requiredRole', p_action.required_role)));
    END IF;
END
$$;

-- Params of an action, validated and with defaults filled in (what is stored on the run).
CREATE OR REPLACE FUNCTION runhub._workflow_params(p_action text, p_params jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c_max_bytes CONSTANT int := runhub._constant('maxWorkflowParamsBytes');
    v_params jsonb := coalesce(p_params, '{}');
    v_key    text;
    v_bytes  int;
    v_allowed text[] := CASE p_action WHEN 'send_promo' THEN ARRAY['subject', 'content', 'segmentation', 'isUpdate']
                                      ELSE ARRAY[]::text[] END;
BEGIN
    IF jsonb_typeof(v_params) <> 'object' THEN
        PERFORM runhub._invalid('workflows.invalidParams', 'params', 'must be a JSON object');
    END IF;
    v_bytes := octet_length(v_params::text);
    IF v_bytes > c_max_bytes THEN
        PERFORM runhub._raise('workflows.paramsTooLarge', jsonb_build_object('bytes', v_bytes, 'maxBytes', c_max_bytes));
    END IF;
    SELECT k INTO v_key FROM jsonb_object_keys(v_params) k WHERE k <> ALL (v_allowed) ORDER BY k LIMIT 1;
    IF v_key IS NOT NULL THEN
        PERFORM runhub._raise('workflows.unknownParam', jsonb_build_object('field', v_key, 'actionId', p_action));
    END IF;
    IF p_action <> 'send_promo' THEN
        RETURN v_params;
    END IF;
    IF jsonb_typeof(v_params -> 'subject') IS DISTINCT FROM 'string'
       OR length(runhub._trim(v_params ->> 'subject')) NOT BETWEEN 1 AND 200 THEN
        PERFORM runhub._invalid('workflows.invalidParams', 'subject', 'is required: 1 to 200 characters');
    END IF;
    IF jsonb_typeof(v_params -> 'content') IS DISTINCT FROM 'string'
       OR length(runhub._trim(v_params ->> 'content')) NOT BETWEEN 1 AND 20000 THEN
        PERFORM runhub._invalid('workflows.invalidParams', 'content', 'is required: 1 to 20000 characters');
    END IF;
    IF v_params ? 'segmentation' AND (jsonb_typeof(v_params -> 'segmentation') <> 'string'
       OR v_params ->> 'segmentation' NOT IN ('recent_7d', 'recent_30d', 'all')) THEN
        PERFORM runhub._invalid('workflows.invalidParams', 'segmentation', 'must be recent_7d, recent_30d or all');
    END IF;
    IF v_params ? 'isUpdate' AND jsonb_typeof(v_params -> 'isUpdate') <> 'boolean' THEN
        PERFORM runhub._invalid('workflows.invalidParams', 'isUpdate', 'must be true or false');
    END IF;
    RETURN jsonb_build_object('segmentation', 'recent_30d', 'isUpdate', false) || v_params;
END
$$;

-- Each prerequisite of the action with whether the project meets it (runhub._requirement_checks).
-- PL/pgSQL, as _last_run_at and _policy_facts: their plans are cached for the session, where a SQL
-- function with a SET clause is planned again on every call (preview, create_run, execution).
CREATE OR REPLACE FUNCTION runhub._requirements(p_project runhub.projects, p_action runhub.actions)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan  -- planned once a session: a custom plan a call cost a preview 1 ms
AS $$
BEGIN
    RETURN (SELECT coalesce(jsonb_agg(c.requirement || jsonb_build_object('satisfied', c.satisfied) ORDER BY c.ord), '[]')
              FROM runhub._requirement_checks(p_project.id, p_project.settings, p_action.requires) c);
END
$$;

-- When the action last ran in the project (queued, running or succeeded: failed and cancelled runs
-- sent nothing and do not hold the cooldown), other than p_except.
CREATE OR REPLACE FUNCTION runhub._last_run_at(p_project uuid, p_action text, p_except uuid DEFAULT NULL,
                                               p_before timestamptz DEFAULT 'infinity')
RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT max(r.requested_at) FROM runhub.workflow_runs r
             WHERE r.project_id = p_project AND r.action_id = p_action AND r.status IN ('queued', 'running', 'succeeded')
               AND r.id IS DISTINCT FROM p_except AND r.requested_at < p_before);
END
$$;

-- Count one create_run call against the project's limit of 10 per minute of runhub's clock
-- (runhub._now()), in its runhub.create_run_counts row. Callers hold the project row lock, so calls
-- of one project are counted one at a time. The count is a row, so it commits or rolls back with
-- the call: a call that create_run refuses (this limit's PT429 included) is not counted. A project
-- whose count is still in its pre-0018 sequence retires it first (runhub._retire_create_run_counter).
CREATE OR REPLACE FUNCTION runhub._count_create_run_call(p_project runhub.projects)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c_limit  CONSTANT int := runhub._constant('createRunsPerMinute');
    v_epoch  numeric := extract(epoch FROM runhub._now());
    v_minute bigint := floor(v_epoch / 60);
    v_count  int;
BEGIN
    IF p_project.create_run_counter IS NOT NULL THEN
        PERFORM runhub._retire_create_run_counter(p_project.id, p_project.create_run_counter);
    END IF;
    INSERT INTO runhub.create_run_counts AS c (project_id, minute, calls) VALUES (p_project.id, v_minute, 1)
    ON CONFLICT (project_id) DO UPDATE
       SET minute = excluded.minute,
           calls = CASE WHEN c.minute = excluded.minute THEN c.calls + 1 ELSE 1 END
    RETURNING c.calls INTO v_count;
    RETURN jsonb_build_object('count', v_count, 'limit', c_limit, 'windowSeconds', 60,
                              'retryAfterSeconds', ceil((v_minute + 1) * 60 - v_epoch));
END
$$;

-- The facts a policy layer decides on, for runhub._evaluate_policy: the one definition, for
-- list_actions (no recipient count: availability), preview, create_run and execute_run.
CREATE OR REPLACE FUNCTION runhub._policy_facts(p_project runhub.projects, p_action runhub.actions, p_role text,
                                                p_recipient_count int, p_last_run_at timestamptz)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN jsonb_build_object(
        'policy', p_action.policy, 'requiredRole', p_action.required_role, 'role', p_role,
        'requirements', runhub._requirements(p_project, p_action),
        'lastRunAt', runhub._iso(p_last_run_at), 'now', runhub._iso(now()),
        -- whether the run that holds the cooldown is still queued (it has sent nothing yet)
        'lastRunQueued', p_last_run_at IS NOT NULL AND EXISTS (
            SELECT 1 FROM runhub.workflow_runs r
             WHERE r.project_id = p_project.id AND r.action_id = p_action.id AND r.requested_at = p_last_run_at
               AND r.status = 'queued'))
        || CASE WHEN p_recipient_count IS NOT NULL
                THEN jsonb_build_object('recipientCount', p_recipient_count) ELSE '{}' END;
END
$$;

-- Who the action would e-mail now: exact count, counts per exclusion, and the first five in e-mail
-- order, all from one pass of the recipient builder. The five addresses are sorted out of that
-- pass: for a promotion, among those before the project's 257th customer in e-mail order (its
-- audience may be every customer: sorting them all costs as much as the pass); for the carts of
-- the recovery window and the sign-ups of the onboarding one, among all of them (they are few).
-- A customer audience's names (a promotion's, an onboarding's) are sorted out with its addresses,
-- as pairs (a customer row's name: no lookup; one sort); a recovery's come from the builder read
-- for its five only (a cart's name can cost a lookup a row: for every cart, were they sorted out
-- of the pass); a second, ordered pass only when a promotion's first 256 customers held fewer
-- than five. The queries are planned for the action and project at hand (custom plans
-- prune the builder's other branches); jit off because compiling costs more than they take.
CREATE OR REPLACE FUNCTION runhub._audience_summary(p_project uuid, p_action text, p_params jsonb)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET jit = off
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    c_window CONSTANT int := 256;  -- a promotion's sample is sorted among this many customers
    v_bound  text;                 -- the sample is sorted among included addresses below it (null: all)
    v_counts jsonb;
    v_first  text;
    v_emails text[];               -- a recovery's: its first five included addresses
    v_pairs  text[];               -- a customer audience's: its first five {address, name}
    v_sorted int;                  -- how many the pass sorted out (at most five)
    v_sample jsonb;
BEGIN
    IF p_action = 'send_promo' THEN  -- an audience of up to every customer
        v_bound := (SELECT c.email FROM runhub.customers c WHERE c.project_id = p_project
                     ORDER BY c.email OFFSET c_window LIMIT 1);
    END IF;
    SELECT jsonb_build_object(
               'count', count(*) FILTER (WHERE a.excluded_by IS NULL),
               'excludedCounts', jsonb_build_object(
                   'converted', count(*) FILTER (WHERE a.excluded_by = 'converted'),
                   'alreadyContacted', count(*) FILTER (WHERE a.excluded_by = 'alreadyContacted'),
                   'alreadyOnboarded', count(*) FILTER (WHERE a.excluded_by = 'alreadyOnboarded'),
                   'suppressed', count(*) FILTER (WHERE a.excluded_by = 'suppressed'),
                   'frequencyCap', count(*) FILTER (WHERE a.excluded_by = 'frequencyCap'))),
           min(a.email) FILTER (WHERE a.excluded_by IS NULL),
           -- one of the two, as the action is (the other's filter is planned away): a customer
           -- audience's candidates with their names; a recovery's addresses
           (array_agg(ARRAY[a.email, a.name] ORDER BY a.email)
                FILTER (WHERE a.excluded_by IS NULL AND p_action IN ('send_promo', 'onboard_users')
                        AND (v_bound IS NULL OR a.email < v_bound)))[1:5],
           (array_agg(a.email ORDER BY a.email)
                FILTER (WHERE a.excluded_by IS NULL AND p_action NOT IN ('send_promo', 'onboard_users')))[1:5]
      INTO v_counts, v_first, v_pairs, v_emails
      FROM (SELECT r.email, r.excluded_by, CASE WHEN p_action IN ('send_promo', 'onboard_users') THEN r.name END AS name
              FROM runhub._recipients(p_project, p_action, p_params, now()) r
            OFFSET 0) a;  -- each row's exclusion computed once, not once per aggregate
    IF (v_counts ->> 'count')::int = 0 THEN
        RETURN v_counts || jsonb_build_object('sample', '[]'::jsonb);
    ELSIF p_action IN ('send_promo', 'onboard_users') THEN
        v_sorted := coalesce(array_length(v_pairs, 1), 0);
        v_sample := coalesce((SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object('email', v_pairs[i][1], 'name', v_pairs[i][2]))
                                              ORDER BY i)
                                FROM generate_subscripts(v_pairs, 1) i), '[]');
    ELSE
        v_sorted := coalesce(cardinality(v_emails), 0);
        IF v_sorted >= least(5, (v_counts ->> 'count')::int) THEN
            v_sample := runhub._audience_names(p_project, p_action, p_params, v_emails);
        END IF;
    END IF;
    IF v_sorted < least(5, (v_counts ->> 'count')::int) THEN
        v_sample := runhub._audience_sample(p_project, p_action, p_params, v_first);
    END IF;
    RETURN v_counts || jsonb_build_object('sample', v_sample);
END
$$;

-- The sample's entries for these addresses, with their names as the builder gives them (its
-- branch read for these addresses only): a recovery's. One plan a session: planning the builder
-- for five addresses cost a small shop's preview as much as its pass (a generic plan reads the
-- recovery window's checkouts and filters the addresses: they are few; an onboarding's, whose
-- window can hold every customer, takes its names from the pass).
CREATE OR REPLACE FUNCTION runhub._audience_names(p_project uuid, p_action text, p_params jsonb, p_emails text[])
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET jit = off
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    RETURN coalesce((
        SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object('email', r.email, 'name', r.name)) ORDER BY r.email)
          FROM runhub._recipients(p_project, p_action, p_params, now()) r WHERE r.email = ANY (p_emails)), '[]');
END
$$;

-- The first five included recipients in e-mail order from p_from: the builder's second pass, when
-- the first could not sort them out (custom plan: only the action's branch, read in e-mail order).
CREATE OR REPLACE FUNCTION runhub._audience_sample(p_project uuid, p_action text, p_params jsonb, p_from text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET jit = off
SET plan_cache_mode = force_custom_plan
AS $$
BEGIN
    RETURN coalesce((
        SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object('email', s.email, 'name', s.name)) ORDER BY s.email)
          FROM (SELECT r.email, r.name FROM runhub._recipients(p_project, p_action, p_params, now()) r
                 WHERE r.excluded_by IS NULL AND r.email >= p_from ORDER BY r.email LIMIT 5) s), '[]');
END
$$;

-- The preview of an action: who, why, who not, warnings, and whether policy would refuse it now.
CREATE OR REPLACE FUNCTION runhub.preview(project uuid, actor uuid, action text, params jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    p_project ALIAS FOR project;
    p_actor ALIAS FOR actor;
    p_action ALIAS FOR action;
    p_params ALIAS FOR params;
    v_role     text := runhub._authorize(p_project, p_actor);
    v_action   runhub.actions := runhub._require_action(p_action);
    v_project  runhub.projects;
    v_params   jsonb;
    v_audience jsonb;
    v_decision jsonb;
    v_blocked  jsonb;
    v_preview  uuid;
    v_cap      int;
    v_excluded jsonb;
BEGIN
    PERFORM runhub._authorize_action(v_role, v_action);
    v_params := runhub._workflow_params(p_action, p_params);
    SELECT * INTO v_project FROM runhub.projects WHERE id = p_project;
    v_audience := runhub._audience_summary(p_project, p_action, v_params);
    v_decision := runhub._evaluate_policy(runhub._policy_facts(v_project, v_action, v_role,
        (v_audience ->> 'count')::int, runhub._last_run_at(p_project, p_action)));
    IF NOT (v_decision ->> 'allowed')::boolean THEN
        v_blocked := jsonb_build_object('reason', v_decision ->> 'reason', 'reasonParams', v_decision -> 'reasonParams',
                                        'text', runhub._text(v_project.locale, v_decision ->> 'reason', v_decision -> 'reasonParams'));
    END IF;
    INSERT INTO runhub.previews (project_id, actor, action_id, params, params_hash, recipient_count, blocked)
    VALUES (p_project, p_actor, p_action, v_params, md5(v_params::text), (v_audience ->> 'count')::int, v_blocked)
    RETURNING id INTO v_preview;
    v_cap := runhub._frequency_cap_hours(v_project.settings);
    -- each exclusion the action lists, in its order, with its label (rendered once) and count
    v_excluded := (SELECT coalesce(jsonb_agg(jsonb_build_object(
                              'exclusion', x, 'label', runhub._exclusion_text(v_project.locale, x, v_cap),
                              'count', coalesce((v_audience -> 'excludedCounts' ->> x)::int, 0)) ORDER BY ord), '[]')
                     FROM unnest(v_action.exclusions) WITH ORDINALITY AS u(x, ord));
    RETURN jsonb_strip_nulls(jsonb_build_object(
        'previewId', v_preview,
        'count', v_audience -> 'count',
        'sample', v_audience -> 'sample',
        'criteria', runhub._criteria(v_project.locale, p_action, v_action.policy, v_params),
        'exclusions', (SELECT coalesce(jsonb_agg(e -> 'label' ORDER BY ord), '[]')
                         FROM jsonb_array_elements(v_excluded) WITH ORDINALITY AS u(e, ord)),
        'excluded', v_excluded,
        'warnings', (SELECT coalesce(jsonb_agg(runhub._owner_text(v_project.locale, w ->> 'key', w -> 'params', w ->> 'plural')
                                               ORDER BY ord), '[]')
                       FROM jsonb_array_elements(v_decision -> 'warnings') WITH ORDINALITY AS u(w, ord)),
        'holdout', runhub._holdout_split(v_project, v_action, (v_audience ->> 'count')::int),
        'blocked', v_blocked,
        'params', v_params));
END
$$;

-- How a preview's recipients would split between mailed and held out: the expected numbers (each
-- recipient is held out by a hash, so a run's actual split varies around them), with their text;
-- null when the action holds nobody out.
CREATE OR REPLACE FUNCTION runhub._holdout_split(p_project runhub.projects, p_action runhub.actions, p_count int)
RETURNS jsonb
LANGUAGE plpgsql STABLE  -- not SQL: a SQL function with a SET clause is planned at every call
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_percent int := runhub._holdout_percent(p_project.settings, p_action.outcome);
    v_held    int := round(p_count * v_percent / 100.0)::int;
BEGIN
    IF coalesce(v_percent, 0) <= 0 THEN
        RETURN NULL;
    END IF;
    RETURN jsonb_build_object('percent', v_percent, 'mailed', p_count - v_held, 'heldOut', v_held,
                              'text', runhub._owner_text(p_project.locale, 'owner.holdout.split',
                                                         jsonb_build_object('mailed', p_count - v_held, 'heldOut', v_held,
                                                                            'percent', v_percent)));
END
$$;

-- Create a run: authorize, count the call, validate, deduplicate, then the trigger-time policy on
-- the preview's count. Idempotent on (project, action, idempotency key).
CREATE OR REPLACE FUNCTION runhub.create_run(
    project uuid, actor uuid, action text, idempotency_key text, params jsonb DEFAULT '{}',
    client_requested_at timestamptz DEFAULT NULL, preview_id uuid DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_project ALIAS FOR project;
    p_actor ALIAS FOR actor;
    p_action ALIAS FOR action;
    p_idempotency_key ALIAS FOR idempotency_key;
    p_params ALIAS FOR params;
    p_client_requested_at ALIAS FOR client_requested_at;
    p_preview_id ALIAS FOR preview_id;
    v_role     text := runhub._authorize(p_project, p_actor);
    v_action   runhub.actions := runhub._require_action(p_action);
    v_project  runhub.projects;
    v_params   jsonb;
    v_existing runhub.workflow_runs;
    v_preview  runhub.previews;
    v_facts    jsonb;
    v_run      uuid;
BEGIN
    PERFORM runhub._authorize_action(v_role, v_action);
    -- One create_run at a time per project: the rate count, the cooldown and the idempotency
    -- lookup below are then exact under concurrency. NO KEY UPDATE leaves event ingestion alone.
    SELECT * INTO v_project FROM runhub.projects WHERE id = p_project FOR NO KEY UPDATE;
    PERFORM runhub._enforce(runhub._evaluate_policy(
        jsonb_build_object('rate', runhub._count_create_run_call(v_project))));
    IF p_idempotency_key IS NULL OR length(p_idempotency_key) NOT BETWEEN 1 AND 255 THEN
        PERFORM runhub._invalid('workflows.invalidParams', 'idempotencyKey', 'is required: 1 to 255 characters');
    END IF;
    IF NOT runhub._is_client_instant(p_client_requested_at) THEN  -- null (not given) passes
        PERFORM runhub._invalid('workflows.invalidParams', 'clientRequestedAt',
                                'must be a finite instant after 2000, at most a day ahead of the server');
    END IF;
    v_params := runhub._workflow_params(p_action, p_params);

    SELECT * INTO v_existing FROM runhub.workflow_runs
     WHERE project_id = p_project AND action_id = p_action AND idempotency_key = p_idempotency_key;
    IF FOUND THEN
        IF v_existing.params IS DISTINCT FROM v_params THEN
            PERFORM runhub._raise('workflows.idempotencyKeyReused', jsonb_build_object('runId', v_existing.id));
        END IF;
        RETURN jsonb_build_object('runId', v_existing.id, 'status', v_existing.status, 'deduplicated', true);
    END IF;

    SELECT * INTO v_preview FROM runhub.previews
     WHERE project_id = p_project AND action_id = p_action AND actor = p_actor
       AND params_hash = md5(v_params::text) AND params = v_params
       AND created_at > now() - make_interval(mins => (v_action.policy ->> 'previewMaxAgeMinutes')::int)
       AND (p_preview_id IS NULL OR id = p_preview_id)
     ORDER BY created_at DESC LIMIT 1;
    v_facts := runhub._policy_facts(v_project, v_action, v_role, coalesce(v_preview.recipient_count, 0),
                                    runhub._last_run_at(p_project, p_action))
               || jsonb_build_object('previewFound', v_preview.id IS NOT NULL OR NOT (v_action.policy ->> 'requirePreview')::boolean);
    PERFORM runhub._enforce(runhub._evaluate_policy(v_facts));

    INSERT INTO runhub.workflow_runs (project_id, action_id, idempotency_key, params, client_requested_at,
                                      preview_id, recipient_count_estimate, triggered_by, triggered_by_role,
                                      outcome_window_hours)
    VALUES (p_project, p_action, p_idempotency_key, v_params, p_client_requested_at,
            v_preview.id, v_preview.recipient_count, p_actor, v_role,
            runhub._money_window_hours(v_action.outcome))  -- the window this run is judged by, for good
    RETURNING id INTO v_run;
    PERFORM pg_notify('runhub_runs', v_run::text);
    RAISE LOG 'runhub %', jsonb_build_object('event', 'workflow_run_created', 'runId', v_run,
        'projectId', p_project, 'actionId', p_action, 'recipientCountEstimate', v_preview.recipient_count);
    RETURN jsonb_build_object('runId', v_run, 'status', 'queued', 'deduplicated', false);
END
$$;

-- Delivery counts of a run from its recipients.
CREATE OR REPLACE FUNCTION runhub._run_totals(p_run uuid)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'totalRecipients', count(*),
        'successful', count(*) FILTER (WHERE status = 'sent'),
        'failed', count(*) FILTER (WHERE status = 'failed'),
        'pending', count(*) FILTER (WHERE status = 'queued'),
        'cancelled', count(*) FILTER (WHERE status = 'cancelled'),
        -- only for a run executed with a holdout group (the others never hold anyone out)
        'heldOut', CASE WHEN (SELECT w.holdout_percent FROM runhub.workflow_runs w WHERE w.id = p_run) > 0
                        THEN count(*) FILTER (WHERE status = 'held_out') END))
      FROM runhub.workflow_run_recipients WHERE run_id = p_run
$$;

-- A run in the WorkflowRun shape. A run still delivering shows its live counts as result.
CREATE OR REPLACE FUNCTION runhub._run_json(r runhub.workflow_runs)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'id', r.id, 'projectId', r.project_id, 'actionId', r.action_id, 'status', r.status,
        'requestedAt', runhub._iso(r.requested_at), 'clientRequestedAt', runhub._iso(r.client_requested_at),
        'startedAt', runhub._iso(r.started_at), 'executedAt', runhub._iso(r.executed_at),
        'completedAt', runhub._iso(r.completed_at), 'cancelRequestedAt', runhub._iso(r.cancel_requested_at),
        'recipientCountEstimate', r.recipient_count_estimate, 'attempts', r.attempts,
        'leaseExpiresAt', runhub._iso(r.lease_expires_at), 'triggeredBy', r.triggered_by, 'previewId', r.preview_id,
        'result', CASE WHEN r.result IS NOT NULL THEN r.result
                       WHEN r.executed_at IS NOT NULL THEN runhub._run_totals(r.id) END))
        || jsonb_build_object(
        'params', r.params,
        'stale', r.status = 'running' AND r.started_at < now() - make_interval(mins => runhub._constant('staleRunMinutes')),
        'outcome', runhub._outcome(r))
$$;

-- A run of the project or PT404.
CREATE OR REPLACE FUNCTION runhub._require_run(p_project uuid, p_run uuid)
RETURNS runhub.workflow_runs
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_run runhub.workflow_runs;
BEGIN
    SELECT * INTO v_run FROM runhub.workflow_runs WHERE id = p_run AND project_id = p_project;
    IF NOT FOUND THEN
        PERFORM runhub._raise('workflows.runNotFound', jsonb_build_object('runId', p_run));
    END IF;
    RETURN v_run;
END
$$;

CREATE OR REPLACE FUNCTION runhub.get_run(project uuid, actor uuid, run uuid)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_project ALIAS FOR project;
    p_actor ALIAS FOR actor;
    p_run ALIAS FOR run;
BEGIN
    PERFORM runhub._authorize(p_project, p_actor);
    RETURN runhub._run_json(runhub._require_run(p_project, p_run));
END
$$;

-- Runs of the project, newest first. filters: actionId, status, limit (1-100, default 20).
CREATE OR REPLACE FUNCTION runhub.list_runs(project uuid, actor uuid, filters jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_project ALIAS FOR project;
    p_actor ALIAS FOR actor;
    p_filters ALIAS FOR filters;
    v_filters jsonb := coalesce(p_filters, '{}');
    v_key     text;
    v_limit   int;
BEGIN
    PERFORM runhub._authorize(p_project, p_actor);
    IF jsonb_typeof(v_filters) <> 'object' THEN
        PERFORM runhub._invalid('common.invalidInput', 'filters', 'must be a JSON object');
    END IF;
    SELECT k INTO v_key FROM jsonb_object_keys(v_filters) k WHERE k NOT IN ('actionId', 'status', 'limit') LIMIT 1;
    IF v_key IS NOT NULL THEN
        PERFORM runhub._raise('common.unknownField', jsonb_build_object('field', v_key));
    END IF;
    IF v_filters ? 'actionId' AND (jsonb_typeof(v_filters -> 'actionId') <> 'string'
       OR NOT EXISTS (SELECT 1 FROM runhub.actions WHERE id = v_filters ->> 'actionId')) THEN
        PERFORM runhub._invalid('common.invalidInput', 'actionId', 'is not an action');
    END IF;
    IF v_filters ? 'status' AND (jsonb_typeof(v_filters -> 'status') <> 'string'
       OR v_filters ->> 'status' NOT IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')) THEN
        PERFORM runhub._invalid('common.invalidInput', 'status', 'must be queued, running, succeeded, failed or cancelled');
    END IF;
    IF v_filters ? 'limit' AND (jsonb_typeof(v_filters -> 'limit') <> 'number' OR (v_filters ->> 'limit') !~ '^\d{1,3}$'
       OR (v_filters ->> 'limit')::int NOT BETWEEN 1 AND 100) THEN
        PERFORM runhub._invalid('common.invalidInput', 'limit', 'must be 1 to 100');
    END IF;
    v_limit := coalesce((v_filters ->> 'limit')::int, 20);
    RETURN coalesce((SELECT jsonb_agg(runhub._run_json(r) ORDER BY r.requested_at DESC, r.id DESC) FROM (
        SELECT * FROM runhub.workflow_runs
         WHERE project_id = p_project
           AND (NOT v_filters ? 'actionId' OR action_id = v_filters ->> 'actionId')
           AND (NOT v_filters ? 'status' OR status = v_filters ->> 'status')
         ORDER BY requested_at DESC, id DESC LIMIT v_limit) r), '[]');
END
$$;

-- Stop what is not sent yet. A queued run, or one whose execution has not written its messages,
-- is cancelled outright (a worker still holding its lease will find it gone); a delivering run has
-- its queued messages cancelled; messages already handed to the SMTP server run their course.
CREATE OR REPLACE FUNCTION runhub.cancel_run(project uuid, actor uuid, run uuid)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_project ALIAS FOR project;
    p_actor ALIAS FOR actor;
    p_run ALIAS FOR run;
    v_role text := runhub._authorize(p_project, p_actor);
    v_run  runhub.workflow_runs := runhub._require_run(p_project, p_run);
BEGIN
    PERFORM runhub._authorize_action(v_role, runhub._require_action(v_run.action_id));
    SELECT * INTO v_run FROM runhub.workflow_runs WHERE id = p_run FOR UPDATE;  -- waits for an executing worker
    IF v_run.status NOT IN ('queued', 'running') THEN
        PERFORM runhub._raise('workflows.runNotCancellable', jsonb_build_object('runId', p_run, 'status', v_run.status));
    END IF;
    PERFORM runhub._cancel_queued_messages(
        ARRAY(SELECT r.id FROM runhub.workflow_run_recipients r WHERE r.run_id = p_run), 'cancelled');
    UPDATE runhub.workflow_runs
       SET status = 'cancelled', cancel_requested_at = now(), completed_at = now(),
           lease_owner = NULL, lease_expires_at = NULL,
           result = runhub._run_totals(p_run) || jsonb_build_object('errorSummary', 'Cancelled by ' || v_role)
     WHERE id = p_run
    RETURNING * INTO v_run;
    RAISE LOG 'runhub %', jsonb_build_object('event', 'workflow_run_cancelled', 'runId', p_run, 'actor', p_actor);
    RETURN runhub._run_json(v_run);
END
$$;

-- The action registry as this actor sees it: each action with whether it can run now and why not,
-- its last run, and the outcome of its latest run that sent mail (with the run's completedAt).
CREATE OR REPLACE FUNCTION runhub.list_actions(project uuid, actor uuid)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_project ALIAS FOR project;
    p_actor ALIAS FOR actor;
    v_role    text := runhub._authorize(p_project, p_actor);
    v_project runhub.projects;
BEGIN
    SELECT * INTO v_project FROM runhub.projects WHERE id = p_project;
    RETURN (SELECT jsonb_agg(runhub._action_json(a, d, lr) || jsonb_build_object(
                                 'lastOutcome', lo.outcome,
                                 'title', runhub._owner_text(v_project.locale, 'digest.actionLabel.' || a.id),
                                 'reasonText', CASE WHEN d ->> 'reason' IS NOT NULL
                                                    THEN runhub._text(v_project.locale, d ->> 'reason', d -> 'reasonParams') END)
                             ORDER BY a.position)
              FROM runhub.actions a
             CROSS JOIN LATERAL (SELECT runhub._evaluate_policy(runhub._policy_facts(
                   v_project, a, v_role, NULL, runhub._last_run_at(p_project, a.id))) AS d) dd(d)
             LEFT JOIN LATERAL (SELECT * FROM runhub.workflow_runs r
                                 WHERE r.project_id = p_project AND r.action_id = a.id
                                 ORDER BY r.requested_at DESC LIMIT 1) lr ON true
             LEFT JOIN LATERAL (SELECT jsonb_build_object('runId', r.id, 'completedAt', runhub._iso(r.completed_at))
                                       || runhub._outcome(r) AS outcome
                                  FROM runhub.workflow_runs r
                                 WHERE r.project_id = p_project AND r.action_id = a.id AND r.executed_at IS NOT NULL
                                   AND r.outcome_window_hours IS NOT NULL
                                 ORDER BY r.requested_at DESC LIMIT 1) lo ON true);
END
$$;

-- An ActionDefinition with availability and last run.
CREATE OR REPLACE FUNCTION runhub._action_json(a runhub.actions, p_decision jsonb, p_last runhub.workflow_runs)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        'id', a.id, 'label', a.label, 'type', a.type, 'risk', a.risk, 'requiredRole', a.required_role,
        'confirmRequired', a.confirm_required, 'supportsPreview', a.supports_preview, 'ui', a.ui,
        'outcome', a.outcome, 'requires', a.requires,
        'policy', a.policy, 'exclusions', to_jsonb(a.exclusions),
        'available', (p_decision ->> 'allowed')::boolean,
        'reason', p_decision -> 'reason', 'reasonParams', p_decision -> 'reasonParams',
        'lastRun', CASE WHEN p_last.id IS NOT NULL THEN jsonb_strip_nulls(jsonb_build_object(
            'id', p_last.id, 'status', p_last.status, 'requestedAt', runhub._iso(p_last.requested_at),
            'completedAt', runhub._iso(p_last.completed_at),
            'result', coalesce(p_last.result, CASE WHEN p_last.executed_at IS NOT NULL THEN runhub._run_totals(p_last.id) END))) END)
$$;

-- Suppress an address for the project, as an admin: no workflow e-mails it again, and its queued
-- messages are cancelled.
CREATE OR REPLACE FUNCTION runhub.suppress(project uuid, actor uuid, email text, reason text DEFAULT 'manual')
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_project ALIAS FOR project;
    p_actor ALIAS FOR actor;
    p_email ALIAS FOR email;
    p_reason ALIAS FOR reason;
    v_email text;
BEGIN
    PERFORM runhub._authorize(p_project, p_actor, 'admin');
    v_email := runhub._address(p_email);  -- the rule ingest enforces
    IF v_email IS NULL THEN
        PERFORM runhub._invalid('common.invalidInput', 'email', 'is not a deliverable e-mail address (ASCII local part, host name, at most 254 characters)');
    END IF;
    IF p_reason IS NULL OR p_reason NOT IN ('unsubscribed', 'bounced', 'complained', 'manual') THEN
        PERFORM runhub._invalid('common.invalidInput', 'reason', 'must be unsubscribed, bounced, complained or manual');
    END IF;
    PERFORM runhub._suppress(p_project, v_email, p_reason);
END
$$;

-- Record a suppression (for suppress, unsubscribe links and hard bounces; the address is valid
-- and lower-case) and cancel the address's messages not yet handed to the sender.
CREATE OR REPLACE FUNCTION runhub._suppress(p_project uuid, p_email text, p_reason text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO runhub.suppressions (project_id, email, reason) VALUES (p_project, p_email, p_reason)
    ON CONFLICT (project_id, email) DO NOTHING;
    PERFORM runhub._cancel_queued_messages(
        ARRAY(SELECT r.id FROM runhub.workflow_run_recipients r
               WHERE r.project_id = p_project AND r.email COLLATE "C" = p_email), 'suppressed: ' || p_reason);
END
$$;

-- Cancel the messages of these recipients not yet handed to the sender (queued), and those
-- recipients, saying why (last_error). One sent or being sent runs its course. For cancel_run and
-- suppressions.
CREATE OR REPLACE FUNCTION runhub._cancel_queued_messages(p_recipients bigint[], p_why text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    WITH cancelled AS (
        UPDATE runhub.outbox o SET status = 'cancelled', last_error = p_why
         WHERE o.id = ANY (p_recipients) AND o.status = 'queued'
        RETURNING o.recipient_id
    ), counted AS (
        UPDATE runhub.outbox_cancellations k SET count = k.count + (SELECT count(*) FROM cancelled)
         WHERE k.reason = runhub._cancellation_reason(p_why) AND EXISTS (SELECT 1 FROM cancelled)
    )
    UPDATE runhub.workflow_run_recipients SET status = 'cancelled', updated_at = now()
     WHERE id IN (SELECT recipient_id FROM cancelled);
END
$$;
