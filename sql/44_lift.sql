-- What the mail caused: runs executed with a holdout group compared with the people they held out.
-- A recipient's group is the one execution assigned (mailed or held out, whether or not the mail
-- then went out: the comparison is of assignments). Both groups' payments are matched by the same
-- rules, so that like meets like: the recipient's address, in the project's currency, within the
-- run's outcome window from the mail's send time (held out, or not sent: the run's execution), and
-- for a recovery the recipient's cart or amount (the run link, which only mail carries, is not used).
-- plpython/lift.py turns the two groups' totals into the lift and its intervals.

-- Each group's totals over the runs executed with a holdout group that the filters pick (a null
-- filter: any) — one run, or a project's (and an action's) since a time: {mailed, heldOut}, each
-- {recipients, conversions, revenueCents, revenueSquares} (revenueSquares: the sum of each
-- recipient's revenue squared, so that groups add up into pooled figures), and runs, projects.
CREATE OR REPLACE FUNCTION runhub._holdout_groups(p_run uuid, p_project uuid, p_action text, p_since timestamptz)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH runs AS (
        SELECT w.* FROM runhub.workflow_runs w
         WHERE (p_run IS NULL OR w.id = p_run) AND (p_project IS NULL OR w.project_id = p_project)
           AND (p_action IS NULL OR w.action_id = p_action) AND (p_since IS NULL OR w.executed_at >= p_since)
           AND w.holdout_percent > 0 AND w.executed_at IS NOT NULL
    ), per_recipient AS (
        SELECT CASE WHEN rc.status = 'held_out' THEN 'heldOut' ELSE 'mailed' END AS grp,
               count(pe.id) > 0 AS converted, coalesce(sum(pe.amount_cents), 0)::numeric AS revenue
          FROM runs w
          JOIN runhub.projects p ON p.id = w.project_id
          JOIN runhub.workflow_run_recipients rc ON rc.run_id = w.id
          LEFT JOIN runhub.outbox o ON o.id = rc.id AND o.status = 'sent'
          LEFT JOIN LATERAL (
                SELECT pe.id, pe.amount_cents FROM runhub.business_events pe
                 WHERE pe.project_id = w.project_id AND pe.event_type = 'payment_succeeded'
                   AND pe.customer_email = rc.email AND pe.currency = p.currency
                   AND pe.occurred_at >= coalesce(o.sent_at, w.executed_at)
                   AND pe.occurred_at < coalesce(o.sent_at, w.executed_at) + make_interval(hours => w.outcome_window_hours)
                   AND (rc.cart_id IS NULL OR pe.correlation_id = rc.cart_id OR pe.amount_cents = rc.amount_cents)
          ) pe ON true
         WHERE rc.status <> 'cancelled'  -- cancelled before sending: neither group's (the run was stopped)
         GROUP BY rc.id, grp
    ), groups AS (
        SELECT g.grp, jsonb_build_object('recipients', count(r.grp), 'conversions', count(*) FILTER (WHERE r.converted),
                                         'revenueCents', coalesce(sum(r.revenue), 0),
                                         'revenueSquares', coalesce(sum(r.revenue * r.revenue), 0)) AS totals
          FROM (VALUES ('mailed'), ('heldOut')) g(grp) LEFT JOIN per_recipient r ON r.grp = g.grp
         GROUP BY g.grp
    )
    SELECT jsonb_object_agg(grp, totals)
           || jsonb_build_object('runs', (SELECT count(*) FROM runs), 'projects', (SELECT count(DISTINCT project_id) FROM runs))
      FROM groups
$$;

-- The incremental figure of the runs the filters pick (as _holdout_groups): their groups compared
-- (plpython/lift.py), with how many runs it pools; null when none of them had a holdout group.
CREATE OR REPLACE FUNCTION runhub._incremental(p_run uuid, p_project uuid, p_action text, p_since timestamptz)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT runhub._lift(g -> 'mailed', g -> 'heldOut') || jsonb_build_object('runs', g -> 'runs')
      FROM runhub._holdout_groups(p_run, p_project, p_action, p_since) g
     WHERE (g ->> 'runs')::int > 0
$$;

-- An action's lift in a project, pooled over its runs executed with a holdout in the last 90 days
-- (one small shop's run is rarely enough), for any member. Null: no such run yet.
CREATE OR REPLACE FUNCTION runhub.action_lift(project uuid, actor uuid, action text)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_project ALIAS FOR project;
    p_actor ALIAS FOR actor;
    p_action ALIAS FOR action;
BEGIN
    PERFORM runhub._authorize(p_project, p_actor);
    PERFORM runhub._require_action(p_action);
    RETURN runhub._incremental(NULL, p_project, p_action, now() - interval '90 days')
        || jsonb_build_object('actionId', p_action, 'days', 90);
END
$$;

-- An action's lift across every shop of this database, for the platform's operators: the pooled
-- groups only, no shop's figure (runhub_analyst, a reader of aggregates). Pooling shops of every
-- size weights each by its recipients. Null: no run with a holdout in the last 90 days.
CREATE OR REPLACE FUNCTION runhub.platform_lift(action text)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_action ALIAS FOR action;
BEGIN
    PERFORM runhub._require_action(p_action);
    RETURN (SELECT runhub._lift(g -> 'mailed', g -> 'heldOut')
                   || jsonb_build_object('runs', g -> 'runs', 'projects', g -> 'projects', 'actionId', p_action, 'days', 90)
              FROM runhub._holdout_groups(NULL, NULL, p_action, now() - interval '90 days') g
             WHERE (g ->> 'runs')::int > 0);
END
$$;
