-- Structure: schema, tables, columns, keys, indexes, RLS, policies, triggers, API signatures and the
-- deploy's own traces. Checked by name so that a migration or sql/ change that drops or renames
-- something the contract relies on fails here first, with a readable message.
BEGIN;
\ir helpers.psql
SELECT plan(104);

-- ---------------------------------------------------------------------------------------------
-- Schema, extensions and tables.
SELECT has_schema('runhub');
SELECT has_extension('plpython3u', 'plpython3u is installed (deploy ensures it)');
SELECT has_table('runhub', 'projects', 'table runhub.projects exists');
SELECT has_table('runhub', 'project_members', 'table runhub.project_members exists');
SELECT has_table('runhub', 'business_events', 'table runhub.business_events exists');
SELECT has_table('runhub', 'currencies', 'table runhub.currencies exists');
SELECT has_table('runhub', 'deployments', 'table runhub.deployments exists');
SELECT has_table('runhub', 'plpython_modules', 'table runhub.plpython_modules exists');

-- ---------------------------------------------------------------------------------------------
-- projects: identity, owner, time zone and money settings, digest schedule.
SELECT col_is_pk('runhub', 'projects', 'id', 'projects.id is the primary key');
SELECT col_type_is('runhub', 'projects', 'id', 'uuid', 'projects.id is uuid');
SELECT col_has_default('runhub', 'projects', 'id', 'projects.id has a default (gen_random_uuid)');
SELECT col_type_is('runhub', 'projects', 'name', 'text', 'projects.name is text');
SELECT col_not_null('runhub', 'projects', 'name', 'projects.name is NOT NULL');
SELECT col_type_is('runhub', 'projects', 'owner_id', 'uuid', 'projects.owner_id is uuid');
SELECT col_type_is('runhub', 'projects', 'timezone', 'text', 'projects.timezone is text');
SELECT col_not_null('runhub', 'projects', 'timezone', 'projects.timezone is NOT NULL');
SELECT col_type_is('runhub', 'projects', 'currency', 'character(3)', 'projects.currency is char(3)');
SELECT fk_ok('runhub', 'projects', 'currency', 'runhub', 'currencies', 'code', 'projects.currency references currencies');
SELECT col_type_is('runhub', 'projects', 'locale', 'text', 'projects.locale is text');
SELECT col_default_is('runhub', 'projects', 'locale', 'en', 'projects.locale defaults to en');
SELECT col_type_is('runhub', 'projects', 'industry', 'text', 'projects.industry is text');
SELECT col_is_null('runhub', 'projects', 'industry', 'projects.industry is nullable');
SELECT col_type_is('runhub', 'projects', 'settings', 'jsonb', 'projects.settings is jsonb');
SELECT col_type_is('runhub', 'projects', 'digest_enabled', 'boolean', 'projects.digest_enabled is boolean');
SELECT col_type_is('runhub', 'projects', 'digest_hour', 'smallint', 'projects.digest_hour is smallint');
SELECT col_type_is('runhub', 'projects', 'digest_next_at', 'timestamp with time zone', 'projects.digest_next_at is timestamptz');
SELECT col_type_is('runhub', 'projects', 'created_at', 'timestamp with time zone', 'projects.created_at is timestamptz');

-- project_members: one row per (project, user), removed with its project.
SELECT col_is_pk('runhub', 'project_members', ARRAY['project_id', 'user_id'], 'project_members key is (project_id, user_id)');
SELECT col_type_is('runhub', 'project_members', 'user_id', 'uuid', 'project_members.user_id is uuid');
SELECT col_type_is('runhub', 'project_members', 'role', 'text', 'project_members.role is text');
SELECT col_not_null('runhub', 'project_members', 'role', 'project_members.role is NOT NULL');
SELECT fk_ok('runhub', 'project_members', 'project_id', 'runhub', 'projects', 'id', 'project_members.project_id references projects');
SELECT has_index('runhub', 'project_members', 'project_members_user', 'user_id', 'project_members_user indexes user_id (RLS lookups)');

-- business_events: the append-only signal stream.
SELECT col_is_pk('runhub', 'business_events', 'id', 'business_events.id is the primary key');
SELECT col_type_is('runhub', 'business_events', 'id', 'bigint', 'business_events.id is bigint');
SELECT ok((SELECT attidentity = 'a' FROM pg_attribute
            WHERE attrelid = 'runhub.business_events'::regclass AND attname = 'id'),
          'business_events.id is GENERATED ALWAYS AS IDENTITY (ingestion order cannot be forged)');
SELECT col_type_is('runhub', 'business_events', 'project_id', 'uuid', 'business_events.project_id is uuid');
SELECT fk_ok('runhub', 'business_events', 'project_id', 'runhub', 'projects', 'id', 'business_events.project_id references projects');
SELECT col_type_is('runhub', 'business_events', 'event_type', 'text', 'business_events.event_type is text');
SELECT col_type_is('runhub', 'business_events', 'occurred_at', 'timestamp with time zone', 'business_events.occurred_at is timestamptz');
SELECT col_not_null('runhub', 'business_events', 'occurred_at', 'business_events.occurred_at is NOT NULL');
SELECT col_type_is('runhub', 'business_events', 'received_at', 'timestamp with time zone', 'business_events.received_at is timestamptz');
SELECT col_has_default('runhub', 'business_events', 'received_at', 'business_events.received_at has a default (server truth)');
SELECT col_type_is('runhub', 'business_events', 'idempotency_key', 'text', 'business_events.idempotency_key is text');
SELECT col_not_null('runhub', 'business_events', 'idempotency_key', 'business_events.idempotency_key is NOT NULL');
SELECT col_type_is('runhub', 'business_events', 'correlation_id', 'text', 'business_events.correlation_id is text');
SELECT col_type_is('runhub', 'business_events', 'customer_email', 'text', 'business_events.customer_email is text');
SELECT col_type_is('runhub', 'business_events', 'customer_name', 'text', 'business_events.customer_name is text');
SELECT col_type_is('runhub', 'business_events', 'customer_locale', 'text', 'business_events.customer_locale is text');
SELECT col_type_is('runhub', 'business_events', 'amount_cents', 'bigint', 'business_events.amount_cents is bigint (integer cents)');
SELECT col_type_is('runhub', 'business_events', 'currency', 'character(3)', 'business_events.currency is char(3)');
SELECT fk_ok('runhub', 'business_events', 'currency', 'runhub', 'currencies', 'code', 'business_events.currency references currencies');
SELECT col_type_is('runhub', 'business_events', 'payload', 'jsonb', 'business_events.payload is jsonb');
SELECT col_not_null('runhub', 'business_events', 'payload', 'business_events.payload is NOT NULL');
SELECT col_is_unique('runhub', 'business_events', ARRAY['project_id', 'idempotency_key'],
                     'business_events is unique on (project_id, idempotency_key): idempotent ingest');

-- currencies: ISO 4217 with minor units.
SELECT col_is_pk('runhub', 'currencies', 'code', 'currencies.code is the primary key');
SELECT col_type_is('runhub', 'currencies', 'code', 'character(3)', 'currencies.code is char(3)');
SELECT col_type_is('runhub', 'currencies', 'minor_units', 'smallint', 'currencies.minor_units is smallint');
SELECT set_has($$SELECT code::text, minor_units::int FROM runhub.currencies$$,
               $$VALUES ('USD', 2), ('EUR', 2), ('JPY', 0), ('KWD', 3), ('CLF', 4)$$,
               'currencies has USD, EUR, JPY (0), KWD (3), CLF (4) with their minor units');

-- deployments and plpython_modules: the loader's bookkeeping.
SELECT col_type_is('runhub', 'deployments', 'version', 'text', 'deployments.version is text');
SELECT col_type_is('runhub', 'deployments', 'checksum', 'text', 'deployments.checksum is text');
SELECT col_type_is('runhub', 'deployments', 'migrations', 'text[]', 'deployments.migrations is text[]');
SELECT col_type_is('runhub', 'deployments', 'deployed_at', 'timestamp with time zone', 'deployments.deployed_at is timestamptz');
SELECT col_is_pk('runhub', 'plpython_modules', 'name', 'plpython_modules.name is the primary key');
SELECT col_type_is('runhub', 'plpython_modules', 'source', 'text', 'plpython_modules.source is text');
SELECT col_type_is('runhub', 'plpython_modules', 'sha256', 'text', 'plpython_modules.sha256 is text');

-- ---------------------------------------------------------------------------------------------
-- Indexes the hot paths rely on: both list orders, type-in-window lookups, the hourly digest scan.
SELECT has_index('runhub', 'business_events', 'business_events_timeline', ARRAY['project_id', 'occurred_at', 'id'],
                 'business_events_timeline is on (project_id, occurred_at, id)');
SELECT matches(pg_get_indexdef('runhub.business_events_timeline'::regclass), '\(project_id, occurred_at DESC, id DESC\)$',
               'business_events_timeline is ordered (occurred_at DESC, id DESC)');
SELECT has_index('runhub', 'business_events', 'business_events_ingestion', ARRAY['project_id', 'id'],
                 'business_events_ingestion is on (project_id, id)');
SELECT matches(pg_get_indexdef('runhub.business_events_ingestion'::regclass), '\(project_id, id DESC\)$',
               'business_events_ingestion is ordered (id DESC)');
SELECT has_index('runhub', 'business_events', 'business_events_type_time', ARRAY['project_id', 'event_type', 'occurred_at'],
                 'business_events_type_time is on (project_id, event_type, occurred_at)');
SELECT has_index('runhub', 'projects', 'projects_digest_due', 'digest_next_at', 'projects_digest_due is on digest_next_at');
SELECT matches(pg_get_indexdef('runhub.projects_digest_due'::regclass), 'WHERE \(digest_next_at IS NOT NULL\)$',
               'projects_digest_due is partial: only projects with a next digest');

-- ---------------------------------------------------------------------------------------------
-- Row-level security: enabled on the three tables runhub_reader may read, one SELECT policy each.
SELECT is_empty($$SELECT c.relname FROM pg_class c
                   WHERE c.oid IN ('runhub.projects'::regclass, 'runhub.project_members'::regclass,
                                   'runhub.business_events'::regclass)
                     AND NOT c.relrowsecurity$$,
                'RLS is enabled on projects, project_members and business_events');
SELECT policies_are('runhub', 'projects', ARRAY['projects_member_read'], 'projects has exactly its read policy');
SELECT policies_are('runhub', 'project_members', ARRAY['project_members_member_read'], 'project_members has exactly its read policy');
SELECT policies_are('runhub', 'business_events', ARRAY['business_events_member_read'], 'business_events has exactly its read policy');
SELECT policy_cmd_is('runhub', 'projects', 'projects_member_read', 'SELECT', 'projects_member_read is for SELECT');
SELECT policy_roles_are('runhub', 'projects', 'projects_member_read', ARRAY['runhub_reader'], 'projects_member_read applies to runhub_reader');
SELECT policy_cmd_is('runhub', 'business_events', 'business_events_member_read', 'SELECT', 'business_events_member_read is for SELECT');
SELECT policy_roles_are('runhub', 'business_events', 'business_events_member_read', ARRAY['runhub_reader'],
                        'business_events_member_read applies to runhub_reader');

-- ---------------------------------------------------------------------------------------------
-- Triggers on business_events: row-level BEFORE UPDATE OR DELETE, statement-level BEFORE TRUNCATE.
SELECT has_trigger('runhub', 'business_events', 'business_events_append_only', 'append-only trigger exists');
SELECT trigger_is('runhub', 'business_events', 'business_events_append_only', 'runhub', '_business_events_append_only',
                  'append-only trigger calls runhub._business_events_append_only');
SELECT has_trigger('runhub', 'business_events', 'business_events_no_truncate', 'no-truncate trigger exists');
SELECT trigger_is('runhub', 'business_events', 'business_events_no_truncate', 'runhub', '_business_events_append_only',
                  'no-truncate trigger calls runhub._business_events_append_only');
-- pg_trigger.tgtype bits: ROW 1, BEFORE 2, INSERT 4, DELETE 8, UPDATE 16, TRUNCATE 32.
SELECT results_eq($$SELECT tgname::text COLLATE "default", tgtype::int, tgenabled::text FROM pg_trigger
                     WHERE tgrelid = 'runhub.business_events'::regclass
                       AND tgname IN ('business_events_append_only', 'business_events_no_truncate')
                     ORDER BY tgname$$,
                  $$VALUES ('business_events_append_only', 1 + 2 + 8 + 16, 'O'),
                           ('business_events_no_truncate', 2 + 32, 'O')$$,
                  'the triggers fire BEFORE UPDATE/DELETE per row and BEFORE TRUNCATE, and are enabled');

-- ---------------------------------------------------------------------------------------------
-- API functions: signatures, return types, SECURITY DEFINER (they run for roles without table access).
SELECT function_returns('runhub', 'create_project', ARRAY['text', 'uuid', 'text', 'text', 'text', 'text'], 'uuid',
                        'create_project(name, owner, timezone, currency, locale, industry) returns uuid');
SELECT function_returns('runhub', 'add_member', ARRAY['uuid', 'uuid', 'text'], 'void', 'add_member(project, user, role) returns void');
SELECT function_returns('runhub', 'ingest_event', ARRAY['uuid', 'jsonb'], 'jsonb', 'ingest_event(project, event) returns jsonb');
SELECT function_returns('runhub', 'list_events', ARRAY['uuid', 'text', 'jsonb', 'integer'], 'jsonb',
                        'list_events(project, order, cursor, limit) returns jsonb');
SELECT is_definer('runhub', 'create_project', ARRAY['text', 'uuid', 'text', 'text', 'text', 'text'], 'create_project is SECURITY DEFINER');
SELECT is_definer('runhub', 'add_member', ARRAY['uuid', 'uuid', 'text'], 'add_member is SECURITY DEFINER');
SELECT is_definer('runhub', 'ingest_event', ARRAY['uuid', 'jsonb'], 'ingest_event is SECURITY DEFINER');
SELECT is_definer('runhub', 'list_events', ARRAY['uuid', 'text', 'jsonb', 'integer'], 'list_events is SECURITY DEFINER');
-- Defaults of the contract: locale 'en', industry null; order 'timeline', cursor null, limit 50.
SELECT is((SELECT pg_get_function_arguments('runhub.create_project(text, uuid, text, text, text, text)'::regprocedure)),
          'p_name text, p_owner uuid, p_timezone text, p_currency text, p_locale text DEFAULT ''en''::text, p_industry text DEFAULT NULL::text',
          'create_project defaults: locale en, industry null');
SELECT is((SELECT pg_get_function_arguments('runhub.list_events(uuid, text, jsonb, integer)'::regprocedure)),
          'p_project uuid, p_order text DEFAULT ''timeline''::text, p_cursor jsonb DEFAULT NULL::jsonb, p_limit integer DEFAULT 50',
          'list_events defaults: order timeline, no cursor, limit 50');
-- Internal helpers run with the caller's rights.
SELECT isnt_definer('runhub', '_raise', ARRAY['text', 'jsonb'], '_raise is not SECURITY DEFINER');
SELECT isnt_definer('runhub', '_event_from_json', ARRAY['uuid', 'jsonb'], '_event_from_json is not SECURITY DEFINER');

-- Every function in schema runhub pins search_path (a definer function without it can be hijacked
-- through objects in the caller's search_path).
SELECT cmp_ok((SELECT count(*) FROM pg_proc WHERE pronamespace = 'runhub'::regnamespace)::int, '>=', 20,
              'schema runhub has its functions (so the next check is not vacuous)');
SELECT is_empty($$SELECT p.oid::regprocedure, p.proconfig FROM pg_proc p
                   WHERE p.pronamespace = 'runhub'::regnamespace
                     AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false)$$,
                'every function in schema runhub has SET search_path = pg_catalog, pg_temp');

-- ---------------------------------------------------------------------------------------------
-- The deploy left its traces: a deployments row naming both migrations, and the pg_cron job.
SELECT ok(EXISTS (SELECT 1 FROM runhub.deployments
                   WHERE migrations @> ARRAY['0001_foundation', '0002_business_events']
                     AND checksum ~ '^[0-9a-f]{64}$' AND version <> ''),
          'the deploy recorded a deployments row with its checksum and both migrations');
-- cron.job lives in database postgres (cron.database_name); here we check what the loader registers
-- from: runhub.cron_jobs(), named runhub:<database>:<name>, run in the cron database.
SELECT ok(EXISTS (SELECT 1 FROM runhub.cron_jobs() j
                   WHERE 'runhub:' || current_database() || ':' || j.name = 'runhub:runhub_pgtap:purge-cron-history'
                     AND j.in_cron_database),
          'runhub.cron_jobs() has runhub:runhub_pgtap:purge-cron-history, run in the cron database');
SELECT is_empty($$SELECT name, schedule FROM runhub.cron_jobs()
                   WHERE name !~ '^[a-z0-9-]+$' OR schedule !~ '^\S+( \S+){4}$' OR coalesce(command, '') = ''$$,
                'every cron job has a plain name, a five-field schedule and a command');
SELECT matches((SELECT command FROM runhub.cron_jobs() WHERE name = 'purge-cron-history'),
               '^DELETE FROM cron\.job_run_details WHERE end_time < ',
               'purge-cron-history deletes old cron.job_run_details');

SELECT * FROM finish();
ROLLBACK;
