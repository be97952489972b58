-- Structure: schema, tables, columns, keys, indexes, RLS, policies, triggers, API signatures and the
-- deploy's own traces. Checked by name so that a migration or sql/ change that drops or renames
-- something the contract relies on fails here first, with a readable message.
BEGIN;
\ir helpers.psql
SELECT plan(227);

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
SELECT has_table('runhub', 'actions', 'table runhub.actions exists');
SELECT has_table('runhub', 'customers', 'table runhub.customers exists');
SELECT has_table('runhub', 'suppressions', 'table runhub.suppressions exists');
SELECT has_table('runhub', 'previews', 'table runhub.previews exists');
SELECT has_table('runhub', 'workflow_runs', 'table runhub.workflow_runs exists');
SELECT has_table('runhub', 'workflow_run_recipients', 'table runhub.workflow_run_recipients exists');
SELECT has_table('runhub', 'outbox', 'table runhub.outbox exists');
SELECT has_table('runhub', 'secrets', 'table runhub.secrets exists');
SELECT has_table('runhub', 'unsubscribe_keys', 'table runhub.unsubscribe_keys exists');
SELECT has_view('runhub', 'stale_runs', 'view runhub.stale_runs exists');

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
SELECT results_eq($$SELECT conname::text COLLATE "C" FROM pg_constraint WHERE conrelid = 'runhub.business_events'::regclass AND contype = 'f'$$,
                  ARRAY['business_events_project_id_fkey' COLLATE "C"],
                  'business_events has one foreign key, to projects: ingest checks the currency (migration 0014)');
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

-- projects.trigger_counter: the per-project sequence counting create_run calls.
SELECT col_type_is('runhub', 'projects', 'trigger_counter', 'regclass', 'projects.trigger_counter is regclass');
SELECT col_not_null('runhub', 'projects', 'trigger_counter', 'projects.trigger_counter is NOT NULL');

-- actions: the registry, as data.
SELECT col_is_pk('runhub', 'actions', 'id', 'actions.id is the primary key');
SELECT col_type_is('runhub', 'actions', 'id', 'text', 'actions.id is text');
SELECT col_type_is('runhub', 'actions', 'required_role', 'text', 'actions.required_role is text');
SELECT col_type_is('runhub', 'actions', 'policy', 'jsonb', 'actions.policy is jsonb');
SELECT col_not_null('runhub', 'actions', 'policy', 'actions.policy is NOT NULL');
SELECT col_type_is('runhub', 'actions', 'requires', 'jsonb', 'actions.requires is jsonb');
SELECT col_type_is('runhub', 'actions', 'exclusions', 'text[]', 'actions.exclusions is text[]');
SELECT col_type_is('runhub', 'actions', 'position', 'integer', 'actions.position is integer');

-- customers: one row per (project, e-mail), kept by a trigger on business_events.
SELECT col_is_pk('runhub', 'customers', ARRAY['project_id', 'email'], 'customers key is (project_id, email)');
SELECT fk_ok('runhub', 'customers', 'project_id', 'runhub', 'projects', 'id', 'customers.project_id references projects');
SELECT col_type_is('runhub', 'customers', 'last_seen_at', 'timestamp with time zone', 'customers.last_seen_at is timestamptz');
SELECT col_not_null('runhub', 'customers', 'last_seen_at', 'customers.last_seen_at is NOT NULL');
SELECT col_type_is('runhub', 'customers', 'signed_up_at', 'timestamp with time zone', 'customers.signed_up_at is timestamptz');
SELECT col_type_is('runhub', 'customers', 'last_engaged_at', 'timestamp with time zone', 'customers.last_engaged_at is timestamptz');
SELECT col_type_is('runhub', 'customers', 'last_paid_at', 'timestamp with time zone', 'customers.last_paid_at is timestamptz');

-- suppressions and previews.
SELECT col_is_pk('runhub', 'suppressions', ARRAY['project_id', 'email'], 'suppressions key is (project_id, email)');
SELECT fk_ok('runhub', 'suppressions', 'project_id', 'runhub', 'projects', 'id', 'suppressions.project_id references projects');
SELECT col_type_is('runhub', 'suppressions', 'reason', 'text', 'suppressions.reason is text');
SELECT col_is_pk('runhub', 'previews', 'id', 'previews.id is the primary key');
SELECT col_has_default('runhub', 'previews', 'id', 'previews.id has a default');
SELECT fk_ok('runhub', 'previews', 'action_id', 'runhub', 'actions', 'id', 'previews.action_id references actions');
SELECT col_type_is('runhub', 'previews', 'actor', 'uuid', 'previews.actor is uuid');
SELECT col_type_is('runhub', 'previews', 'params', 'jsonb', 'previews.params is jsonb');
SELECT col_type_is('runhub', 'previews', 'recipient_count', 'integer', 'previews.recipient_count is integer');

-- workflow_runs: idempotent on (project, action, key); the lifecycle as CHECK constraints.
SELECT col_is_pk('runhub', 'workflow_runs', 'id', 'workflow_runs.id is the primary key');
SELECT col_type_is('runhub', 'workflow_runs', 'id', 'uuid', 'workflow_runs.id is uuid');
SELECT col_has_default('runhub', 'workflow_runs', 'id', 'workflow_runs.id has a default');
SELECT fk_ok('runhub', 'workflow_runs', 'project_id', 'runhub', 'projects', 'id', 'workflow_runs.project_id references projects');
SELECT fk_ok('runhub', 'workflow_runs', 'action_id', 'runhub', 'actions', 'id', 'workflow_runs.action_id references actions');
SELECT fk_ok('runhub', 'workflow_runs', 'preview_id', 'runhub', 'previews', 'id', 'workflow_runs.preview_id references previews');
SELECT col_default_is('runhub', 'workflow_runs', 'status', 'queued', 'workflow_runs.status defaults to queued');
SELECT col_type_is('runhub', 'workflow_runs', 'params', 'jsonb', 'workflow_runs.params is jsonb');
SELECT col_type_is('runhub', 'workflow_runs', 'requested_at', 'timestamp with time zone', 'workflow_runs.requested_at is timestamptz');
SELECT col_has_default('runhub', 'workflow_runs', 'requested_at', 'workflow_runs.requested_at has a default (server truth)');
SELECT col_type_is('runhub', 'workflow_runs', 'lease_expires_at', 'timestamp with time zone', 'workflow_runs.lease_expires_at is timestamptz');
SELECT col_type_is('runhub', 'workflow_runs', 'attempts', 'integer', 'workflow_runs.attempts is integer');
SELECT col_not_null('runhub', 'workflow_runs', 'triggered_by', 'workflow_runs.triggered_by is NOT NULL');
SELECT col_not_null('runhub', 'workflow_runs', 'triggered_by_role', 'workflow_runs.triggered_by_role is NOT NULL');
SELECT col_is_unique('runhub', 'workflow_runs', ARRAY['project_id', 'action_id', 'idempotency_key'],
                     'workflow_runs is unique on (project_id, action_id, idempotency_key): idempotent create_run');
SELECT set_has($$SELECT conname::text FROM pg_constraint WHERE conrelid = 'runhub.workflow_runs'::regclass AND contype = 'c'$$,
               $$VALUES ('workflow_runs_running_state'), ('workflow_runs_finished_state'), ('workflow_runs_result_state'),
                        ('workflow_runs_queued_state'), ('workflow_runs_status_check')$$,
               'workflow_runs has its lifecycle CHECK constraints (running, finished, result, queued) and the status check');
SELECT matches((SELECT pg_get_constraintdef(oid) FROM pg_constraint
                 WHERE conrelid = 'runhub.workflow_runs'::regclass AND conname = 'workflow_runs_status_check'),
               'queued.*running.*succeeded.*failed.*cancelled', 'the status check lists the five statuses');

-- workflow_run_recipients and outbox.
SELECT col_is_pk('runhub', 'workflow_run_recipients', 'id', 'workflow_run_recipients.id is the primary key');
SELECT ok((SELECT attidentity = 'a' FROM pg_attribute
            WHERE attrelid = 'runhub.workflow_run_recipients'::regclass AND attname = 'id'),
          'workflow_run_recipients.id is GENERATED ALWAYS AS IDENTITY');
SELECT is(pg_get_indexdef('runhub.workflow_run_recipients_run_email'::regclass),
          'CREATE UNIQUE INDEX workflow_run_recipients_run_email ON runhub.workflow_run_recipients USING btree (run_id, email COLLATE "C")',
          'one recipient per (run, e-mail), compared byte for byte (no locale call per comparison: migration 0015)');
SELECT col_type_is('runhub', 'workflow_run_recipients', 'amount_cents', 'bigint', 'workflow_run_recipients.amount_cents is bigint');
SELECT col_default_is('runhub', 'workflow_run_recipients', 'status', 'queued', 'workflow_run_recipients.status defaults to queued');
SELECT col_is_pk('runhub', 'outbox', 'id', 'outbox.id is the primary key');
SELECT col_is_unique('runhub', 'outbox', 'recipient_id', 'one message per recipient, so per (run, address)');
SELECT col_not_null('runhub', 'outbox', 'project_id', 'every message belongs to a project');
SELECT col_not_null('runhub', 'outbox', 'message_id', 'outbox.message_id is NOT NULL (fixed when written)');
SELECT set_has($$SELECT conname::text FROM pg_constraint WHERE conrelid = 'runhub.outbox'::regclass AND contype = 'c'$$,
               $$VALUES ('outbox_sending_state'), ('outbox_sent_state')$$, 'outbox has its state CHECK constraints');
-- outbox.smtp_code (0004_sender): the SMTP server's last answer, 200-599, null until there is one.
SELECT col_type_is('runhub', 'outbox', 'smtp_code', 'integer', 'outbox.smtp_code is integer');
SELECT col_is_null('runhub', 'outbox', 'smtp_code', 'outbox.smtp_code is nullable (no answer yet, or none at all)');
SELECT col_hasnt_default('runhub', 'outbox', 'smtp_code', 'outbox.smtp_code has no default');
SELECT is(ARRAY(SELECT v.code || ' -> ' || pg_temp.refusal(format(
                           $$INSERT INTO runhub.outbox (project_id, template, locale, to_email, message_id, smtp_code)
                             VALUES ('eeeeeeee-0000-4000-8000-0000000000aa', 'digest', 'en', 'x@example.com', '<x@runhub>', %s)$$, v.code))
                  FROM unnest(ARRAY[199, 600, -1]) v(code)),
          ARRAY['199 -> 23514 new row for relation "outbox" violates check constraint "outbox_smtp_code_check"',
                '600 -> 23514 new row for relation "outbox" violates check constraint "outbox_smtp_code_check"',
                '-1 -> 23514 new row for relation "outbox" violates check constraint "outbox_smtp_code_check"'],
          'outbox.smtp_code is checked to be 200-599 (199, 600 and -1 are refused)');
SELECT lives_ok($$INSERT INTO runhub.outbox (project_id, template, locale, to_email, message_id, smtp_code)
                  VALUES ('eeeeeeee-0000-4000-8000-0000000000aa', 'digest', 'en', 'x@example.com', '<x1@runhub>', 200),
                         ('eeeeeeee-0000-4000-8000-0000000000aa', 'digest', 'en', 'x@example.com', '<x2@runhub>', 599),
                         ('eeeeeeee-0000-4000-8000-0000000000aa', 'digest', 'en', 'x@example.com', '<x3@runhub>', NULL)$$,
                'outbox.smtp_code 200, 599 and null are accepted');
DELETE FROM runhub.outbox WHERE project_id = 'eeeeeeee-0000-4000-8000-0000000000aa';

-- secrets (0004_sender): deploy secrets, readable by the owner only (tests/sql/80_roles.sql).
SELECT col_is_pk('runhub', 'secrets', 'name', 'secrets.name is the primary key');
SELECT col_type_is('runhub', 'secrets', 'name', 'text', 'secrets.name is text');
SELECT col_type_is('runhub', 'secrets', 'value', 'bytea', 'secrets.value is bytea');
SELECT col_not_null('runhub', 'secrets', 'value', 'secrets.value is NOT NULL');
SELECT col_type_is('runhub', 'secrets', 'created_at', 'timestamp with time zone', 'secrets.created_at is timestamptz');
SELECT col_has_default('runhub', 'secrets', 'created_at', 'secrets.created_at has a default');
SELECT is_empty($$SELECT name FROM runhub.secrets WHERE name = 'unsubscribe'$$,
                'the unsubscribe secret moved to runhub.unsubscribe_keys as key 1 (migration 0007)');
SELECT throws_ok($$INSERT INTO runhub.secrets (name, value) VALUES ('short', decode(repeat('ab', 15), 'hex'))$$,
                 '23514', NULL, 'a secret shorter than 16 bytes is refused');

-- unsubscribe_keys (0007_unsubscribe_keys): unsubscribe signing keys with the ids tokens name; owner only.
SELECT col_is_pk('runhub', 'unsubscribe_keys', 'kid', 'unsubscribe_keys.kid is the primary key');
SELECT col_type_is('runhub', 'unsubscribe_keys', 'kid', 'integer', 'unsubscribe_keys.kid is integer');
SELECT col_type_is('runhub', 'unsubscribe_keys', 'secret', 'bytea', 'unsubscribe_keys.secret is bytea');
SELECT col_not_null('runhub', 'unsubscribe_keys', 'secret', 'unsubscribe_keys.secret is NOT NULL');
SELECT col_type_is('runhub', 'unsubscribe_keys', 'created_at', 'timestamp with time zone', 'unsubscribe_keys.created_at is timestamptz');
SELECT col_type_is('runhub', 'unsubscribe_keys', 'revoked_at', 'timestamp with time zone', 'unsubscribe_keys.revoked_at is timestamptz');
SELECT results_eq($$SELECT kid, octet_length(secret), secret <> decode(repeat('00', 32), 'hex'), revoked_at IS NULL FROM runhub.unsubscribe_keys$$,
                  $$VALUES (1, 32, true, true)$$,
                  'the deploy made key 1 (the secret of migration 0004): 32 bytes, not all zero, not revoked');
SELECT throws_ok($$INSERT INTO runhub.unsubscribe_keys (kid, secret) VALUES (2, decode(repeat('ab', 15), 'hex'))$$,
                 '23514', NULL, 'a key shorter than 16 bytes is refused');
SELECT throws_ok($$INSERT INTO runhub.unsubscribe_keys (kid, secret) VALUES (0, decode(repeat('ab', 32), 'hex'))$$,
                 '23514', NULL, 'a key id is positive');
-- Deleting a project takes its customers, suppressions, previews and runs; a purged preview only
-- unlinks its run. (Recipients and messages go with their run: tests/sql/30_workflows.sql.)
SELECT results_eq($$SELECT c.conrelid::regclass::text, a.attname::text COLLATE "default", c.confdeltype::text
                      FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
                     WHERE c.contype = 'f' AND c.conrelid IN ('runhub.customers'::regclass, 'runhub.suppressions'::regclass,
                           'runhub.previews'::regclass, 'runhub.workflow_runs'::regclass)
                       AND a.attname IN ('project_id', 'preview_id')
                     ORDER BY c.conrelid::regclass::text COLLATE "C", a.attname::text COLLATE "C"$$,
                  $$VALUES ('runhub.customers', 'project_id', 'c'), ('runhub.previews', 'project_id', 'c'),
                           ('runhub.suppressions', 'project_id', 'c'),
                           ('runhub.workflow_runs', 'preview_id', 'n'), ('runhub.workflow_runs', 'project_id', 'c')$$,
                  'foreign keys cascade from projects; a purged preview sets preview_id to null');
SELECT columns_are('runhub', 'stale_runs', ARRAY['id', 'project_id', 'action_id', 'started_at', 'executed_at', 'attempts',
                                                'lease_owner', 'lease_expires_at', 'running_for'],
                   'stale_runs has its columns');

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
-- Workflows: audiences, payments by correlation, claiming, cooldown and listing, the frequency cap, the outbox.
SELECT matches(pg_get_indexdef('runhub.customers_last_seen'::regclass), '\(project_id, last_seen_at DESC\)$',
               'customers_last_seen is on (project_id, last_seen_at DESC)');
SELECT matches(pg_get_indexdef('runhub.customers_signed_up'::regclass), '\(project_id, signed_up_at DESC\) WHERE \(signed_up_at IS NOT NULL\)$',
               'customers_signed_up is on (project_id, signed_up_at DESC), partial');
SELECT matches(pg_get_indexdef('runhub.business_events_payment_correlation'::regclass),
               '\(project_id, correlation_id\) WHERE \(\(event_type = ''payment_succeeded''::text\) AND \(correlation_id IS NOT NULL\)\)$',
               'business_events_payment_correlation: payments by correlation id, partial');
SELECT has_index('runhub', 'previews', 'previews_lookup', ARRAY['project_id', 'action_id', 'actor', 'params_hash', 'created_at'],
                 'previews_lookup is on (project_id, action_id, actor, params_hash, created_at)');
SELECT matches(pg_get_indexdef('runhub.workflow_runs_queued'::regclass), '\(requested_at\) WHERE \(status = ''queued''::text\)$',
               'workflow_runs_queued: queued runs by requested_at, partial');
SELECT matches(pg_get_indexdef('runhub.workflow_runs_executing'::regclass),
               '\(lease_expires_at\) WHERE \(\(status = ''running''::text\) AND \(executed_at IS NULL\)\)$',
               'workflow_runs_executing: leases of runs not yet executed, partial');
SELECT matches(pg_get_indexdef('runhub.workflow_runs_project_action'::regclass), '\(project_id, action_id, requested_at DESC\)$',
               'workflow_runs_project_action is on (project_id, action_id, requested_at DESC)');
SELECT matches(pg_get_indexdef('runhub.workflow_runs_project_requested'::regclass), '\(project_id, requested_at DESC\)$',
               'workflow_runs_project_requested is on (project_id, requested_at DESC)');
SELECT matches(pg_get_indexdef('runhub.workflow_run_recipients_contact'::regclass), '\(project_id, email COLLATE "C", created_at DESC\)$',
               'workflow_run_recipients_contact is on (project_id, email COLLATE "C", created_at DESC)');
-- runhub's probes of a recipient by address (COLLATE "C", as the indexes hold it) find the address in
-- the index; one written without it would find only the run's or the project's rows there.
INSERT INTO runhub.workflow_run_recipients (run_id, project_id, email)  -- no keys: rows of no run
SELECT md5('run' || g % 400)::uuid, md5('project' || g % 40)::uuid, 'c' || g || '@example.com' FROM generate_series(1, 4000) g;
ANALYZE runhub.workflow_run_recipients;
SET LOCAL enable_seqscan = off;
SELECT matches(pg_temp.plan_of($$SELECT 1 FROM runhub.workflow_run_recipients rc
                                  WHERE rc.run_id = md5('run7')::uuid AND rc.email COLLATE "C" = 'c7@example.com'$$),
               'Scan using workflow_run_recipients_run_email on workflow_run_recipients rc\n.*Index Cond: \(\(run_id = ''[0-9a-f-]+''::uuid\) AND \(?\(?email(\)::text)? = ',
               'a probe by run and address COLLATE "C" finds both in workflow_run_recipients_run_email');
SELECT matches(pg_temp.plan_of($$SELECT 1 FROM runhub.workflow_run_recipients rc
                                  WHERE rc.project_id = md5('project7')::uuid AND rc.email COLLATE "C" = 'c7@example.com'$$),
               'Scan using workflow_run_recipients_contact on workflow_run_recipients rc\n.*Index Cond: \(\(project_id = ''[0-9a-f-]+''::uuid\) AND \(?\(?email(\)::text)? = ',
               'a probe by project and address COLLATE "C" finds both in workflow_run_recipients_contact');
RESET enable_seqscan;
DELETE FROM runhub.workflow_run_recipients;
SELECT matches(pg_get_indexdef('runhub.outbox_due'::regclass), '\(next_attempt_at\) WHERE \(status = ''queued''::text\)$',
               'outbox_due: queued messages by next_attempt_at, partial');

-- ---------------------------------------------------------------------------------------------
-- Row-level security: enabled on the three tables runhub_reader may read, one SELECT policy each.
SELECT is_empty($$SELECT c.relname FROM pg_class c
                   WHERE c.oid IN ('runhub.projects'::regclass, 'runhub.project_members'::regclass,
                                   'runhub.business_events'::regclass, 'runhub.customers'::regclass,
                                   'runhub.suppressions'::regclass, 'runhub.workflow_runs'::regclass,
                                   'runhub.workflow_run_recipients'::regclass)
                     AND NOT c.relrowsecurity$$,
                'RLS is enabled on every table runhub_reader may read that holds project rows');
SELECT policies_are('runhub', 'customers', ARRAY['customers_member_read'], 'customers has exactly its read policy');
SELECT policies_are('runhub', 'suppressions', ARRAY['suppressions_member_read'], 'suppressions has exactly its read policy');
SELECT policies_are('runhub', 'workflow_runs', ARRAY['workflow_runs_member_read'], 'workflow_runs has exactly its read policy');
SELECT policies_are('runhub', 'workflow_run_recipients', ARRAY['workflow_run_recipients_member_read'],
                    'workflow_run_recipients has exactly its read policy');
SELECT is_empty($$SELECT tablename, policyname, cmd, roles FROM pg_policies
                   WHERE schemaname = 'runhub'
                     AND (cmd <> 'SELECT' OR roles <> '{runhub_reader}'::name[]
                          OR qual !~ '^\((project_id|id) IN \( SELECT runhub\._my_project_ids\(\) AS _my_project_ids\)\)$')$$,
                'every policy is SELECT, for runhub_reader, limited to the projects of _my_project_ids()');
SELECT policies_are('runhub', 'projects', ARRAY['projects_member_read'], 'projects has exactly its read policy');
SELECT policies_are('runhub', 'project_members', ARRAY['project_members_member_read'], 'project_members has exactly its read policy');
SELECT policies_are('runhub', 'business_events', ARRAY['business_events_member_read'], 'business_events has exactly its read policy');
SELECT policy_cmd_is('runhub', 'projects', 'projects_member_read', 'SELECT', 'projects_member_read is for SELECT');
SELECT policy_roles_are('runhub', 'projects', 'projects_member_read', ARRAY['runhub_reader'], 'projects_member_read applies to runhub_reader');
SELECT policy_cmd_is('runhub', 'business_events', 'business_events_member_read', 'SELECT', 'business_events_member_read is for SELECT');
SELECT policy_roles_are('runhub', 'business_events', 'business_events_member_read', ARRAY['runhub_reader'],
                        'business_events_member_read applies to runhub_reader');

-- ---------------------------------------------------------------------------------------------
-- Triggers on business_events: row-level BEFORE UPDATE OR DELETE, statement-level BEFORE TRUNCATE,
-- and the statement-level AFTER INSERT that keeps runhub.customers up to date.
SELECT has_trigger('runhub', 'business_events', 'business_events_append_only', 'append-only trigger exists');
SELECT trigger_is('runhub', 'business_events', 'business_events_append_only', 'runhub', '_append_only',
                  'append-only trigger calls runhub._append_only');
SELECT has_trigger('runhub', 'business_events', 'business_events_no_truncate', 'no-truncate trigger exists');
SELECT trigger_is('runhub', 'business_events', 'business_events_no_truncate', 'runhub', '_append_only',
                  'no-truncate trigger calls runhub._append_only');
-- pg_trigger.tgtype bits: ROW 1, BEFORE 2, INSERT 4, DELETE 8, UPDATE 16, TRUNCATE 32.
SELECT results_eq($$SELECT tgname::text COLLATE "default", tgtype::int, tgenabled::text FROM pg_trigger
                     WHERE tgrelid = 'runhub.business_events'::regclass
                       AND tgname IN ('business_events_append_only', 'business_events_no_truncate')
                     ORDER BY tgname$$,
                  $$VALUES ('business_events_append_only', 1 + 2 + 8 + 16, 'O'),
                           ('business_events_no_truncate', 2 + 32, 'O')$$,
                  'the triggers fire BEFORE UPDATE/DELETE per row and BEFORE TRUNCATE, and are enabled');
SELECT trigger_is('runhub', 'business_events', 'business_events_customers', 'runhub', '_customers_from_events',
                  'business_events_customers calls runhub._customers_from_events');
SELECT results_eq($$SELECT tgtype::int, tgenabled::text, tgnewtable::text COLLATE "default" FROM pg_trigger
                     WHERE tgrelid = 'runhub.business_events'::regclass AND tgname = 'business_events_customers'$$,
                  $$VALUES (4, 'O', 'new_events')$$,
                  'business_events_customers fires AFTER INSERT per statement, with the new rows as new_events');
SELECT trigger_is('runhub', 'projects', 'projects_drop_trigger_counter', 'runhub', '_drop_trigger_counter',
                  'projects_drop_trigger_counter calls runhub._drop_trigger_counter');
SELECT results_eq($$SELECT tgtype::int, tgenabled::text FROM pg_trigger
                     WHERE tgrelid = 'runhub.projects'::regclass AND tgname = 'projects_drop_trigger_counter'$$,
                  $$VALUES (1 + 8, 'O')$$, 'projects_drop_trigger_counter fires AFTER DELETE per row');

-- ---------------------------------------------------------------------------------------------
-- API functions: signatures, return types, SECURITY DEFINER (they run for roles without table access).
SELECT function_returns('runhub', 'create_project', ARRAY['text', 'uuid', 'text', 'text', 'text', 'text'], 'uuid',
                        'create_project(name, owner, timezone, currency, locale, industry) returns uuid');
SELECT function_returns('runhub', 'add_member', ARRAY['uuid', 'uuid', 'uuid', 'text'], 'void', 'add_member(project, actor, user, role) returns void');
SELECT function_returns('runhub', 'ingest_event', ARRAY['uuid', 'jsonb'], 'jsonb', 'ingest_event(project, event) returns jsonb');
SELECT function_returns('runhub', 'list_events', ARRAY['uuid', 'uuid', 'text', 'jsonb', 'integer'], 'jsonb',
                        'list_events(project, actor, order, cursor, limit) returns jsonb');
SELECT is_definer('runhub', 'create_project', ARRAY['text', 'uuid', 'text', 'text', 'text', 'text'], 'create_project is SECURITY DEFINER');
SELECT is_definer('runhub', 'add_member', ARRAY['uuid', 'uuid', 'uuid', 'text'], 'add_member is SECURITY DEFINER');
SELECT is_definer('runhub', 'ingest_event', ARRAY['uuid', 'jsonb'], 'ingest_event is SECURITY DEFINER');
SELECT is_definer('runhub', 'list_events', ARRAY['uuid', 'uuid', 'text', 'jsonb', 'integer'], 'list_events is SECURITY DEFINER');
-- Workflows API, the worker functions and the cron sweep.
SELECT results_eq($$SELECT p.oid::regprocedure::text, pg_get_function_result(p.oid), p.prosecdef
                      FROM pg_proc p
                     WHERE p.oid IN ('runhub.update_project_settings(uuid,uuid,jsonb)'::regprocedure,
                                     'runhub.list_actions(uuid,uuid)'::regprocedure,
                                     'runhub.preview(uuid,uuid,text,jsonb)'::regprocedure,
                                     'runhub.create_run(uuid,uuid,text,text,jsonb,timestamptz,uuid)'::regprocedure,
                                     'runhub.get_run(uuid,uuid,uuid)'::regprocedure,
                                     'runhub.list_runs(uuid,uuid,jsonb)'::regprocedure,
                                     'runhub.cancel_run(uuid,uuid,uuid)'::regprocedure,
                                     'runhub.suppress(uuid,uuid,text,text)'::regprocedure,
                                     'runhub.process_runs(integer)'::regprocedure,
                                     'runhub.claim_runs(text,integer,integer)'::regprocedure,
                                     'runhub.heartbeat_run(uuid,text,integer)'::regprocedure,
                                     'runhub.execute_run(uuid,text)'::regprocedure,
                                     'runhub.cron_process_runs()'::regprocedure,
                                     'runhub.claim_messages(text,integer,integer)'::regprocedure,
                                     'runhub.heartbeat_messages(text,bigint[],integer)'::regprocedure,
                                     'runhub.release_messages(text,bigint[])'::regprocedure,
                                     'runhub.start_messages(text,bigint[])'::regprocedure,
                                     'runhub.record_sent(bigint,text,text)'::regprocedure,
                                     'runhub.record_sent_many(text,bigint[],text[])'::regprocedure,
                                     'runhub.record_failure(bigint,text,integer,text)'::regprocedure,
                                     'runhub.unsubscribe_token(uuid,text)'::regprocedure,
                                     'runhub.unsubscribe(text)'::regprocedure)
                     ORDER BY p.oid::regprocedure::text COLLATE "C"$$,
                  $$VALUES ('runhub.cancel_run(uuid,uuid,uuid)', 'jsonb', true),
                           ('runhub.claim_messages(text,integer,integer)', 'SETOF jsonb', true),
                           ('runhub.claim_runs(text,integer,integer)', 'SETOF uuid', true),
                           ('runhub.create_run(uuid,uuid,text,text,jsonb,timestamp with time zone,uuid)', 'jsonb', true),
                           ('runhub.cron_process_runs()', 'integer', true),
                           ('runhub.execute_run(uuid,text)', 'text', true),
                           ('runhub.get_run(uuid,uuid,uuid)', 'jsonb', true),
                           ('runhub.heartbeat_messages(text,bigint[],integer)', 'integer', true),
                           ('runhub.heartbeat_run(uuid,text,integer)', 'boolean', true),
                           ('runhub.list_actions(uuid,uuid)', 'jsonb', true),
                           ('runhub.list_runs(uuid,uuid,jsonb)', 'jsonb', true),
                           ('runhub.preview(uuid,uuid,text,jsonb)', 'jsonb', true),
                           ('runhub.process_runs(integer)', 'integer', true),
                           ('runhub.record_failure(bigint,text,integer,text)', 'text', true),
                           ('runhub.record_sent(bigint,text,text)', 'text', true),
                           ('runhub.record_sent_many(text,bigint[],text[])', 'TABLE(id bigint, status text)', true),
                           ('runhub.release_messages(text,bigint[])', 'integer', true),
                           ('runhub.start_messages(text,bigint[])', 'SETOF bigint', true),
                           ('runhub.suppress(uuid,uuid,text,text)', 'void', true),
                           ('runhub.unsubscribe(text)', 'void', true),
                           ('runhub.unsubscribe_token(uuid,text)', 'text', true),
                           ('runhub.update_project_settings(uuid,uuid,jsonb)', 'jsonb', true)$$,
                  'the workflow and sender functions exist with their return types, all SECURITY DEFINER');
SELECT results_eq($$SELECT p.oid::regprocedure::text, pg_get_function_arguments(p.oid)
                      FROM pg_proc p
                     WHERE p.oid IN ('runhub.claim_messages(text,integer,integer)'::regprocedure,
                                     'runhub.heartbeat_messages(text,bigint[],integer)'::regprocedure,
                                     'runhub.release_messages(text,bigint[])'::regprocedure,
                                     'runhub.start_messages(text,bigint[])'::regprocedure,
                                     'runhub.record_sent(bigint,text,text)'::regprocedure,
                                     'runhub.record_sent_many(text,bigint[],text[])'::regprocedure,
                                     'runhub.record_failure(bigint,text,integer,text)'::regprocedure,
                                     'runhub.unsubscribe_token(uuid,text)'::regprocedure,
                                     'runhub.unsubscribe(text)'::regprocedure)
                     ORDER BY p.oid::regprocedure::text COLLATE "C"$$,
                  $$VALUES ('runhub.claim_messages(text,integer,integer)', 'p_worker text, p_max integer DEFAULT 50, p_lease_seconds integer DEFAULT 120'),
                           ('runhub.heartbeat_messages(text,bigint[],integer)', 'p_worker text, p_ids bigint[], p_lease_seconds integer DEFAULT 120'),
                           ('runhub.record_failure(bigint,text,integer,text)', 'p_id bigint, p_worker text, p_smtp_code integer, p_smtp_reply text'),
                           ('runhub.record_sent(bigint,text,text)', 'p_id bigint, p_worker text, p_smtp_reply text DEFAULT NULL::text'),
                           ('runhub.record_sent_many(text,bigint[],text[])', 'p_worker text, p_ids bigint[], p_replies text[]'),
                           ('runhub.release_messages(text,bigint[])', 'p_worker text, p_ids bigint[]'),
                           ('runhub.start_messages(text,bigint[])', 'p_worker text, p_ids bigint[]'),
                           ('runhub.unsubscribe(text)', 'p_token text'),
                           ('runhub.unsubscribe_token(uuid,text)', 'p_project uuid, p_email text')$$,
                  'sender defaults: claims of up to 50 messages, leases of 120 s, record_sent without a reply');
SELECT results_eq($$SELECT p.oid::regprocedure::text, pg_get_function_arguments(p.oid)
                      FROM pg_proc p
                     WHERE p.oid IN ('runhub.preview(uuid,uuid,text,jsonb)'::regprocedure,
                                     'runhub.create_run(uuid,uuid,text,text,jsonb,timestamptz,uuid)'::regprocedure,
                                     'runhub.list_runs(uuid,uuid,jsonb)'::regprocedure,
                                     'runhub.suppress(uuid,uuid,text,text)'::regprocedure,
                                     'runhub.process_runs(integer)'::regprocedure,
                                     'runhub.claim_runs(text,integer,integer)'::regprocedure,
                                     'runhub.heartbeat_run(uuid,text,integer)'::regprocedure)
                     ORDER BY p.oid::regprocedure::text COLLATE "C"$$,
                  $$VALUES ('runhub.claim_runs(text,integer,integer)', 'p_worker text, p_max integer DEFAULT 10, p_lease_seconds integer DEFAULT 300'),
                           ('runhub.create_run(uuid,uuid,text,text,jsonb,timestamp with time zone,uuid)',
                            'p_project uuid, p_actor uuid, p_action text, p_idempotency_key text, p_params jsonb DEFAULT ''{}''::jsonb, p_client_requested_at timestamp with time zone DEFAULT NULL::timestamp with time zone, p_preview_id uuid DEFAULT NULL::uuid'),
                           ('runhub.heartbeat_run(uuid,text,integer)', 'p_run uuid, p_worker text, p_lease_seconds integer DEFAULT 300'),
                           ('runhub.list_runs(uuid,uuid,jsonb)', 'p_project uuid, p_actor uuid, p_filters jsonb DEFAULT ''{}''::jsonb'),
                           ('runhub.preview(uuid,uuid,text,jsonb)', 'p_project uuid, p_actor uuid, p_action text, p_params jsonb DEFAULT ''{}''::jsonb'),
                           ('runhub.process_runs(integer)', 'p_max integer DEFAULT 10'),
                           ('runhub.suppress(uuid,uuid,text,text)', 'p_project uuid, p_actor uuid, p_email text, p_reason text DEFAULT ''manual''::text')$$,
                  'defaults of the contract: params {}, filters {}, reason manual, max 10, lease 300 s');
SELECT function_returns('runhub', 'criteria_text', ARRAY['text', 'jsonb', 'jsonb'], 'text', 'criteria_text(action, policy, params) returns text');
SELECT function_returns('runhub', 'exclusion_label', ARRAY['text', 'integer'], 'text', 'exclusion_label(exclusion, hours) returns text');
SELECT function_lang_is('runhub', '_evaluate_policy', ARRAY['jsonb'], 'plpython3u', 'the policy layer, _evaluate_policy(jsonb), is PL/Python');
-- Defaults of the contract: locale 'en', industry null; order 'timeline', cursor null, limit 50.
SELECT is((SELECT pg_get_function_arguments('runhub.create_project(text, uuid, text, text, text, text)'::regprocedure)),
          'p_name text, p_owner uuid, p_timezone text, p_currency text, p_locale text DEFAULT ''en''::text, p_industry text DEFAULT NULL::text',
          'create_project defaults: locale en, industry null');
SELECT is((SELECT pg_get_function_arguments('runhub.list_events(uuid, uuid, text, jsonb, integer)'::regprocedure)),
          'p_project uuid, p_actor uuid, p_order text DEFAULT ''timeline''::text, p_cursor jsonb DEFAULT NULL::jsonb, p_limit integer DEFAULT 50',
          'list_events defaults: order timeline, no cursor, limit 50');
-- Internal helpers run with the caller's rights.
SELECT isnt_definer('runhub', '_raise', ARRAY['text', 'jsonb'], '_raise is not SECURITY DEFINER');
SELECT isnt_definer('runhub', '_event_from_json', ARRAY['uuid', 'jsonb'], '_event_from_json is not SECURITY DEFINER');
SELECT isnt_definer('runhub', '_recipients', ARRAY['uuid', 'text', 'jsonb', 'timestamp with time zone'], '_recipients is not SECURITY DEFINER');
SELECT isnt_definer('runhub', '_evaluate_policy', ARRAY['jsonb'], '_evaluate_policy is not SECURITY DEFINER');
SELECT is_empty($$SELECT p.oid::regprocedure FROM pg_proc p
                   WHERE p.oid IN ('runhub._messages_json(bigint[])'::regprocedure, 'runhub._complete_run_if_done(uuid)'::regprocedure,
                                   'runhub._complete_done_runs()'::regprocedure,
                                   'runhub._error_summary(uuid)'::regprocedure, 'runhub._sign_unsubscribe(integer,bytea,uuid,text)'::regprocedure,
                                   'runhub._sign_unsubscribe_many(integer,bytea,uuid[],text[])'::regprocedure,
                                   'runhub._verify_unsubscribe(integer[],bytea[],text)'::regprocedure,
                                   'runhub._unsubscribe_signing_key()'::regprocedure,
                                   'runhub.rotate_unsubscribe_key(boolean)'::regprocedure)
                     AND p.prosecdef$$,
                'the sender''s internal helpers (_messages_json, _complete_run_if_done, _complete_done_runs, '
                '_error_summary, _sign_unsubscribe, _sign_unsubscribe_many, _verify_unsubscribe, _unsubscribe_signing_key) '
                'and the operators'' rotate_unsubscribe_key exist and are not SECURITY DEFINER');
SELECT function_lang_is('runhub', '_sign_unsubscribe', ARRAY['integer', 'bytea', 'uuid', 'text'], 'plpython3u',
                        'unsubscribe tokens are signed in PL/Python (_sign_unsubscribe)');
SELECT function_lang_is('runhub', '_verify_unsubscribe', ARRAY['integer[]', 'bytea[]', 'text'], 'plpython3u',
                        'unsubscribe tokens are verified in PL/Python (_verify_unsubscribe)');
SELECT is_empty($$SELECT p.oid::regprocedure FROM pg_proc p
                   WHERE p.pronamespace = 'runhub'::regnamespace AND p.prosecdef
                     AND p.proname NOT IN ('create_project', 'add_member', 'ingest_event', 'ingest_events', 'list_events', 'update_project_settings',
                                           'list_actions', 'preview', 'create_run', 'get_run', 'list_runs', 'cancel_run', 'suppress',
                                           'process_runs', 'claim_runs', 'execute_run', 'heartbeat_run', 'cron_process_runs',
                                           'unsubscribe', 'unsubscribe_token', 'claim_messages', 'heartbeat_messages',
                                           'release_messages', 'start_messages', 'record_sent', 'record_sent_many', 'record_failure',
                                           'defer_messages', 'report_relay', 'sender_idle', '_my_project_ids', 'workflow_outcome', 'explain_attribution',
                                           'attribution_reasons', 'digest_batch', 'next_digest_at', 'local_day_range')$$,
                'no function other than the API (outcomes included), the worker and sender functions (sender_idle included) and _my_project_ids is SECURITY DEFINER');

-- Every function in schema runhub pins search_path (a definer function without it can be hijacked
-- through objects in the caller's search_path). The one exception is the recipient builder
-- (_audience, _recipients), left unpinned so that the planner can inline it (sql/40_recipients.sql):
-- it must then run with its caller's rights and be callable by no role, so that it only ever runs
-- under the pinned search_path of the SECURITY DEFINER function that calls it. So are the other
-- helpers written to inline into their callers' queries: the prerequisites (_requirement_checks),
-- the frequency cap and a run's settled state (expressions), a local day's range without its
-- checks, a day's KPI facts, whether an action can run and a run's outcome as a row (the digest
-- job's batch query), and the execution lock's key, a client's plausible instant and runhub's own
-- idempotency keys (expressions), and ingest's checks of an event's common shape and its fields
-- (_trim, _is_plain_instant, _is_reserved_event_type, _is_plain_event, _event_as_stored, _plain_event,
-- _plain_events: one plan for a batch). So is the attribution texts'
-- constant (_attribution_texts), which names nothing to look up, and the digest job's procedure
-- (run_due_digests) and the outbox's purge (purge_finished_mail): one that commits may have no SET
-- clause; they run with their caller's rights (no runhub role may call the purge).
SELECT cmp_ok((SELECT count(*) FROM pg_proc WHERE pronamespace = 'runhub'::regnamespace)::int, '>=', 20,
              'schema runhub has its functions (so the next check is not vacuous)');
SELECT is_empty($$SELECT p.oid::regprocedure, p.proconfig FROM pg_proc p
                   WHERE p.pronamespace = 'runhub'::regnamespace
                     AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false)
                     AND p.proname NOT IN ('_audience', '_recipients', '_requirement_checks', '_frequency_cap_hours',
                                           '_run_settled', '_run_outcome', '_action_ready', '_local_day_range', '_digest_day',
                                           '_execution_lock_key', '_is_client_instant', '_is_system_idempotency_key',
                                           '_trim', '_is_plain_instant', '_is_reserved_event_type', '_is_plain_event',
                                           '_event_as_stored', '_plain_event', '_plain_events',
                                           '_attribution_texts', 'run_due_digests',
                                           'purge_finished_mail')$$,
                'every function in schema runhub but the inlined helpers, the attribution texts (a constant, folded into plans) and the digest job (a procedure that commits) has SET search_path = pg_catalog, pg_temp');
SELECT is_empty($$SELECT p.oid::regprocedure, r.rolname FROM pg_proc p
                    LEFT JOIN pg_roles r ON r.rolname IN ('runhub_app', 'runhub_ingest', 'runhub_sender', 'runhub_reader')
                                        AND has_function_privilege(r.oid, p.oid, 'EXECUTE')
                   WHERE p.pronamespace = 'runhub'::regnamespace
                     AND p.proname IN ('_audience', '_recipients', '_requirement_checks', '_frequency_cap_hours',
                                       '_run_settled', '_run_outcome', '_action_ready', '_local_day_range', '_digest_day',
                                       '_execution_lock_key', '_is_client_instant', '_is_system_idempotency_key',
                                       '_trim', '_is_plain_instant', '_is_reserved_event_type', '_is_plain_event',
                                       '_event_as_stored', '_plain_event', '_plain_events')
                     AND (p.prosecdef OR r.rolname IS NOT NULL
                          OR EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                                      WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'))$$,
                'the unpinned (inlined) helpers are not SECURITY DEFINER and no runhub role nor PUBLIC may call them');

-- ---------------------------------------------------------------------------------------------
-- The deploy left its traces: a deployments row naming the migrations, and the pg_cron jobs.
SELECT ok(EXISTS (SELECT 1 FROM runhub.deployments
                   WHERE migrations @> ARRAY['0001_foundation', '0002_business_events', '0003_workflows', '0004_sender']
                     AND checksum ~ '^[0-9a-f]{64}$' AND version <> ''),
          'the deploy recorded a deployments row with its checksum and the four migrations');
SELECT results_eq($$SELECT name, schedule, command, in_cron_database FROM runhub.cron_jobs() WHERE name = 'process-runs'$$,
                  $$VALUES ('process-runs', '* * * * *', 'SELECT runhub.cron_process_runs()', false)$$,
                  'process-runs: runhub.cron_process_runs() every minute, in this database');
SELECT results_eq($$SELECT schedule ~ '^[0-9]+ \* \* \* \*$', command ~ '^DELETE FROM runhub\.previews ', in_cron_database
                      FROM runhub.cron_jobs() WHERE name = 'purge-previews'$$,
                  $$VALUES (true, true, false)$$, 'purge-previews: hourly, deletes old previews, in this database');
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
