-- Workflows, cleaning up (docs/sql-contract.md, "Workflows"): the purge-previews job (pg_cron,
-- hourly) and what deleting a run or a project takes with it (recipients and messages have no
-- foreign keys: sql/60_runs.sql deletes them). The cascades of the foreign keys themselves:
-- 01_structure.sql. Fixtures pg_temp.recover_queued_run, promo_update_run: helpers.psql.
BEGIN;
\ir helpers.psql
SELECT * FROM no_plan();

\set pp '{"subject": "Spring sale", "content": "Up to 30% off"}'

-- The recover shop with its run rec-1 executed: customers, suppressions, previews, a run, its
-- recipients and messages.
SELECT pg_temp.recover_queued_run(:owner, :admin, :member) AS rec1 \gset
SELECT project_id AS rec FROM runhub.workflow_runs WHERE id = :'rec1' \gset
SELECT runhub.process_runs() \g /dev/null
-- The promo shop with its run promo-2 executed (4 recipients, 4 messages), made from the preview
-- promo2_preview; another preview, which no run refers to.
SELECT pg_temp.promo_update_run(:owner, :admin, :member) AS promo2 \gset
SELECT project_id AS promo, preview_id AS promo2_preview FROM runhub.workflow_runs WHERE id = :'promo2' \gset
SELECT runhub.preview(:'promo', :owner, 'send_promo', :'pp') \g /dev/null

-- ---------------------------------------------------------------------------------------------
-- purge-previews (pg_cron, hourly): previews older than a day go, unless a run refers to one.
UPDATE runhub.previews SET created_at = now() - interval '2 days' WHERE project_id = :'promo';
SELECT is((SELECT count(*)::int FROM runhub.previews WHERE project_id = :'promo'), 2, 'fixture: two previews of the promo shop, now two days old');
SELECT lives_ok((SELECT command FROM runhub.cron_jobs() WHERE name = 'purge-previews'), 'the purge-previews job runs');
SELECT set_eq(format($$SELECT id FROM runhub.previews WHERE project_id = %L$$, :'promo'), ARRAY[:'promo2_preview'::uuid],
              'old previews are purged, except one a run refers to');
SELECT ok((SELECT count(*) FROM runhub.previews WHERE project_id = :'rec') > 0, 'recent previews are kept');

-- ---------------------------------------------------------------------------------------------
-- Deleting a run takes its recipients and messages; deleting a project takes all of its workflow rows.
CREATE FUNCTION pg_temp.rows_of(p_project uuid)
RETURNS jsonb LANGUAGE sql
AS $$ SELECT jsonb_build_object(
        'customers', (SELECT count(*) FROM runhub.customers WHERE project_id = p_project),
        'suppressions', (SELECT count(*) FROM runhub.suppressions WHERE project_id = p_project),
        'previews', (SELECT count(*) FROM runhub.previews WHERE project_id = p_project),
        'runs', (SELECT count(*) FROM runhub.workflow_runs WHERE project_id = p_project),
        'recipients', (SELECT count(*) FROM runhub.workflow_run_recipients WHERE project_id = p_project),
        'outbox', (SELECT count(*) FROM runhub.outbox WHERE project_id = p_project)) $$;
SELECT pg_temp.rows_of(:'promo') AS promo_rows \gset
DELETE FROM runhub.workflow_runs WHERE id = :'promo2';
SELECT is_empty(format($$SELECT 1 FROM runhub.workflow_run_recipients WHERE run_id = %1$L UNION ALL SELECT 1 FROM runhub.outbox WHERE run_id = %1$L$$, :'promo2'),
                'deleting a run deletes its recipients and messages');
SELECT is(pg_temp.rows_of(:'promo'), (:'promo_rows'::jsonb) || jsonb_build_object(
              'runs', ((:'promo_rows'::jsonb) ->> 'runs')::int - 1,
              'recipients', ((:'promo_rows'::jsonb) ->> 'recipients')::int - 4, 'outbox', ((:'promo_rows'::jsonb) ->> 'outbox')::int - 4),
          '... and nothing else of the project');
SELECT ok((SELECT bool_and(n::int > 0) FROM jsonb_each_text(pg_temp.rows_of(:'rec')) AS t(k, n)), 'the recover project has rows of every kind');
DELETE FROM runhub.projects WHERE id = :'rec';
SELECT is(pg_temp.rows_of(:'rec'), '{"customers": 0, "suppressions": 0, "previews": 0, "runs": 0, "recipients": 0, "outbox": 0}'::jsonb,
          'deleting a project deletes its customers, suppressions, previews, runs, recipients and messages');

SELECT * FROM finish();
ROLLBACK;
