-- Roles (docs/sql-contract.md, "Roles"): runhub_app may EXECUTE the API (unsubscribe included) and
-- nothing else, and every call that acts for a person names an actor whose membership and role the
-- database checks; runhub_ingest may only ingest events; runhub_owner (NOLOGIN, not a superuser) owns
-- every table and function, so no SECURITY DEFINER function runs as a superuser; runhub_sender drives runs (process_runs, claim_runs, execute_run, heartbeat_run)
-- and delivers their mail (claim_messages, heartbeat_messages, release_messages, record_sent,
-- record_failure, unsubscribe_token) and has no API and no tables; PUBLIC can call nothing;
-- runhub_reader reads project data through RLS, limited to the projects of
-- runhub.current_user_id(), and writes nothing; nobody but the owner reads runhub.secrets or
-- runhub.unsubscribe_keys, and no runhub role may rotate those keys. Privileges are checked
-- in the catalog first, then by acting as each role (SET LOCAL ROLE) and watching it fail (42501).
BEGIN;
\ir helpers.psql
SELECT * FROM no_plan();

-- ---------------------------------------------------------------------------------------------
-- The roles exist, are not superusers, and cannot bypass RLS.
SELECT has_role('runhub_app');
SELECT has_role('runhub_sender');
SELECT has_role('runhub_reader');
SELECT has_role('runhub_ingest');
SELECT has_role('runhub_owner');
SELECT is_empty($$SELECT rolname FROM pg_roles
                   WHERE rolname IN ('runhub_app', 'runhub_ingest', 'runhub_sender', 'runhub_reader', 'runhub_owner')
                     AND (rolsuper OR rolbypassrls OR rolcreaterole OR rolcreatedb)$$,
                'no runhub role is superuser, BYPASSRLS, CREATEROLE or CREATEDB');
SELECT is_empty($$SELECT rolname FROM pg_roles
                   WHERE rolname IN ('runhub_app', 'runhub_ingest', 'runhub_sender', 'runhub_reader', 'runhub_owner') AND rolcanlogin$$,
                'the runhub roles are NOLOGIN (they are granted to login roles)');
SELECT is_empty($$SELECT r.rolname, m.rolname FROM pg_auth_members am
                    JOIN pg_roles r ON r.oid = am.member JOIN pg_roles m ON m.oid = am.roleid
                   WHERE r.rolname IN ('runhub_app', 'runhub_ingest', 'runhub_sender', 'runhub_reader', 'runhub_owner')$$,
                'no runhub role inherits another role''s privileges');
SELECT is_empty($$SELECT m.rolname FROM pg_auth_members am
                    JOIN pg_roles r ON r.oid = am.roleid JOIN pg_roles m ON m.oid = am.member
                   WHERE r.rolname = 'runhub_owner'$$,
                'nobody is granted runhub_owner: it exists only to own');

-- ---------------------------------------------------------------------------------------------
-- Ownership: runhub_owner owns every table, view, sequence and function of the schema, so every
-- SECURITY DEFINER function runs with its rights. The deploying superuser keeps the PL/Python
-- module table (code run with the server's OS rights) and the deploy history, and the schema.
SELECT is_empty($$SELECT c.oid::regclass, pg_get_userbyid(c.relowner) FROM pg_class c
                   WHERE c.relnamespace = 'runhub'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
                     AND c.relowner <> 'runhub_owner'::regrole
                     AND c.oid NOT IN ('runhub.plpython_modules'::regclass, 'runhub.deployments'::regclass,
                                       'runhub.deployments_id_seq'::regclass)$$,
                'runhub_owner owns every relation of the schema but plpython_modules and deployments');
SELECT is_empty($$SELECT p.oid::regprocedure, pg_get_userbyid(p.proowner) FROM pg_proc p
                   WHERE p.pronamespace = 'runhub'::regnamespace AND p.proowner <> 'runhub_owner'::regrole$$,
                'runhub_owner owns every function of the schema');
SELECT is_empty($$SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner
                   WHERE p.pronamespace = 'runhub'::regnamespace AND p.prosecdef AND r.rolsuper$$,
                'no SECURITY DEFINER function runs with superuser rights');
SELECT isnt_empty($$SELECT 1 FROM pg_proc WHERE pronamespace = 'runhub'::regnamespace AND prosecdef$$,
                  'there are SECURITY DEFINER functions (the check above is not vacuous)');
SELECT is_empty($$SELECT c.oid::regclass FROM pg_class c
                   WHERE c.oid IN ('runhub.plpython_modules'::regclass, 'runhub.deployments'::regclass)
                     AND has_table_privilege('runhub_owner', c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')$$,
                'runhub_owner cannot change the PL/Python code nor the deploy history');
SELECT table_privs_are('runhub', 'plpython_modules', 'runhub_owner', ARRAY['SELECT'],
                       'runhub_owner reads the PL/Python modules (the wrappers load them with its rights)');
SELECT is_empty($$SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
                   WHERE p.pronamespace = 'runhub'::regnamespace AND l.lanname = 'plpython3u' AND p.prosecdef$$,
                'no PL/Python function is SECURITY DEFINER (they run with their caller''s rights)');

-- ---------------------------------------------------------------------------------------------
-- Catalog: who may EXECUTE what. PUBLIC nothing (sql/99_grants.sql revokes it after every function
-- exists, PL/Python wrappers included), runhub_app exactly the API, runhub_reader exactly what its
-- RLS policies call, runhub_sender none of the API.
SELECT is_empty($$SELECT p.oid::regprocedure
                    FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                   WHERE p.pronamespace = 'runhub'::regnamespace AND a.grantee = 0 AND a.privilege_type = 'EXECUTE'$$,
                'PUBLIC has EXECUTE on no function in schema runhub');
SELECT is_empty($$SELECT a.privilege_type
                    FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
                   WHERE n.nspname = 'runhub' AND a.grantee = 0$$,
                'PUBLIC has neither USAGE nor CREATE on schema runhub');

SELECT function_privs_are('runhub', 'create_project', ARRAY['text', 'uuid', 'text', 'text', 'text', 'text', 'uuid'], 'runhub_app', ARRAY['EXECUTE'],
                          'runhub_app can EXECUTE create_project');
SELECT function_privs_are('runhub', 'add_member', ARRAY['uuid', 'uuid', 'uuid', 'text'], 'runhub_app', ARRAY['EXECUTE'],
                          'runhub_app can EXECUTE add_member');
SELECT function_privs_are('runhub', 'ingest_event', ARRAY['uuid', 'jsonb'], 'runhub_app', '{}'::text[],
                          'runhub_app cannot EXECUTE ingest_event (it acts for nobody: the webhook receiver''s)');
SELECT function_privs_are('runhub', 'ingest_event', ARRAY['uuid', 'jsonb'], 'runhub_ingest', ARRAY['EXECUTE'],
                          'runhub_ingest can EXECUTE ingest_event');
SELECT function_privs_are('runhub', 'list_events', ARRAY['uuid', 'uuid', 'text', 'jsonb', 'integer'], 'runhub_app', ARRAY['EXECUTE'],
                          'runhub_app can EXECUTE list_events');
SELECT is_empty($$SELECT p.oid::regprocedure FROM pg_proc p
                   WHERE p.pronamespace = 'runhub'::regnamespace AND p.proname LIKE '\_%'
                     AND has_function_privilege('runhub_app', p.oid, 'EXECUTE')$$,
                'runhub_app can EXECUTE no internal (_-prefixed) function');
SELECT set_eq($$SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = 'runhub'::regnamespace AND has_function_privilege('runhub_app', p.oid, 'EXECUTE')$$,
              ARRAY['runhub.create_project(text,uuid,text,text,text,text,uuid)', 'runhub.add_member(uuid,uuid,uuid,text)',
                    'runhub.update_project_settings(uuid,uuid,jsonb)', 'runhub.list_events(uuid,uuid,text,jsonb,integer)',
                    'runhub.list_actions(uuid,uuid)', 'runhub.preview(uuid,uuid,text,jsonb)',
                    'runhub.create_run(uuid,uuid,text,text,jsonb,timestamp with time zone,uuid)',
                    'runhub.get_run(uuid,uuid,uuid)', 'runhub.list_runs(uuid,uuid,jsonb)', 'runhub.cancel_run(uuid,uuid,uuid)',
                    'runhub.workflow_outcome(uuid,uuid,uuid)', 'runhub.action_lift(uuid,uuid,text)',
                    'runhub.explain_attribution(uuid,uuid,bigint)',
                    'runhub.explain_recipient(uuid,uuid,text,text,jsonb)', 'runhub.attribution_reasons()',
                    'runhub.next_digest_at(text,integer,timestamp with time zone)', 'runhub.local_day_range(date,text)',
                    'runhub.suppress(uuid,uuid,text,text)', 'runhub.unsubscribe(text)',
                    'runhub.criteria_text(text,jsonb,jsonb,text)', 'runhub.exclusion_label(text,integer,text)',
                    'runhub.error_catalog()'],
              'runhub_app can EXECUTE exactly the API, unsubscribe included (and criteria_text, exclusion_label, error_catalog)');
SELECT set_eq($$SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = 'runhub'::regnamespace AND has_function_privilege('runhub_ingest', p.oid, 'EXECUTE')$$,
              ARRAY['runhub.ingest_event(uuid,jsonb)', 'runhub.ingest_events(uuid,jsonb)'],
              'runhub_ingest can EXECUTE exactly ingest_event and ingest_events');
SELECT set_eq($$SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = 'runhub'::regnamespace AND has_function_privilege('runhub_sender', p.oid, 'EXECUTE')$$,
              ARRAY['runhub.process_runs(integer)', 'runhub.claim_runs(text,integer,integer)', 'runhub.execute_run(uuid,text)',
                    'runhub.heartbeat_run(uuid,text,integer)',
                    'runhub.claim_messages(text,integer,integer)', 'runhub.heartbeat_messages(text,bigint[],integer)',
                    'runhub.release_messages(text,bigint[])', 'runhub.start_messages(text,bigint[])',
                    'runhub.defer_messages(text,bigint[],text)', 'runhub.report_relay(text,text,text)',
                    'runhub.record_sent(bigint,text,text)', 'runhub.record_sent_many(text,bigint[],text[])',
                    'runhub.record_failure(bigint,text,integer,text)', 'runhub.unsubscribe_token(uuid,text)',
                    'runhub.sender_idle()', 'runhub.digest_batch(integer,bigint)', 'runhub.run_due_digests(integer)',
                    'runhub.metrics()'],
              'runhub_sender can EXECUTE exactly the run functions (process_runs, claim_runs, execute_run, heartbeat_run) '
              'and the mail functions (claim_messages, heartbeat_messages, release_messages, start_messages, defer_messages, '
              'report_relay, record_sent, record_sent_many, record_failure, unsubscribe_token, sender_idle), and metrics');
SELECT set_eq($$SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = 'runhub'::regnamespace AND has_function_privilege('runhub_reader', p.oid, 'EXECUTE')$$,
              ARRAY['runhub.current_user_id()', 'runhub._my_project_ids()', 'runhub.error_catalog()'],
              'runhub_reader can EXECUTE exactly what its policies call (and error_catalog)');
SELECT is_empty($$SELECT f FROM unnest(ARRAY['runhub.create_project(text,uuid,text,text,text,text,uuid)', 'runhub.add_member(uuid,uuid,uuid,text)',
                                                'runhub.ingest_event(uuid,jsonb)', 'runhub.ingest_events(uuid,jsonb)',
                                                'runhub.list_events(uuid,uuid,text,jsonb,integer)',
                                                'runhub.update_project_settings(uuid,uuid,jsonb)', 'runhub.list_actions(uuid,uuid)',
                                                'runhub.preview(uuid,uuid,text,jsonb)',
                                                'runhub.create_run(uuid,uuid,text,text,jsonb,timestamp with time zone,uuid)',
                                                'runhub.get_run(uuid,uuid,uuid)', 'runhub.list_runs(uuid,uuid,jsonb)',
                                                'runhub.cancel_run(uuid,uuid,uuid)', 'runhub.suppress(uuid,uuid,text,text)',
                                                'runhub.unsubscribe(text)']) f
                   WHERE has_function_privilege('runhub_sender', f::regprocedure, 'EXECUTE')
                      OR has_function_privilege('runhub_reader', f::regprocedure, 'EXECUTE')$$,
                'neither runhub_sender nor runhub_reader can EXECUTE an API function');
SELECT is_empty($$SELECT f FROM unnest(ARRAY['runhub.process_runs(integer)', 'runhub.claim_runs(text,integer,integer)',
                                                'runhub.execute_run(uuid,text)', 'runhub.heartbeat_run(uuid,text,integer)',
                                                'runhub.cron_process_runs()']) f
                   WHERE has_function_privilege('runhub_app', f::regprocedure, 'EXECUTE')
                      OR has_function_privilege('runhub_reader', f::regprocedure, 'EXECUTE')$$,
                'neither runhub_app nor runhub_reader can drive runs (process_runs, claim_runs, execute_run, heartbeat_run, cron_process_runs)');
SELECT is_empty($$SELECT f, r FROM unnest(ARRAY['runhub.claim_messages(text,integer,integer)', 'runhub.heartbeat_messages(text,bigint[],integer)',
                                                'runhub.release_messages(text,bigint[])', 'runhub.record_sent(bigint,text,text)',
                                                'runhub.record_sent_many(text,bigint[],text[])', 'runhub.start_messages(text,bigint[])',
                                                'runhub.record_failure(bigint,text,integer,text)', 'runhub.unsubscribe_token(uuid,text)',
                                                'runhub._complete_done_runs()', 'runhub._sign_unsubscribe(integer,bytea,uuid,text)',
                                                'runhub._sign_unsubscribe_many(integer,bytea,uuid[],text[])',
                                                'runhub._verify_unsubscribe(integer[],bytea[],text)',
                                                'runhub._unsubscribe_signing_key()']) f,
                          unnest(ARRAY['runhub_app', 'runhub_reader']) r
                   WHERE has_function_privilege(r, f::regprocedure, 'EXECUTE')$$,
                'neither runhub_app nor runhub_reader can send mail, record outcomes or sign and verify unsubscribe tokens');
-- (runhub.rotate_unsubscribe_key is in none of the exact lists above: no runhub role may rotate the keys.)

-- Catalog: table access. runhub_app and runhub_sender none at all; runhub_reader SELECT on the
-- project tables and the action registry only.
SELECT is_empty($$SELECT c.oid::regclass, r.rolname, p.priv
                    FROM pg_class c
                   CROSS JOIN (VALUES ('runhub_app'), ('runhub_ingest'), ('runhub_sender')) r(rolname)
                   CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) p(priv)
                   WHERE c.relnamespace = 'runhub'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
                     AND has_table_privilege(r.rolname, c.oid, p.priv)$$,
                'runhub_app, runhub_ingest and runhub_sender have no privilege on any table or view in runhub');
SELECT is_empty($$SELECT c.oid::regclass, r.rolname
                    FROM pg_class c CROSS JOIN (VALUES ('runhub_app'), ('runhub_ingest'), ('runhub_sender'), ('runhub_reader')) r(rolname)
                   WHERE c.relnamespace = 'runhub'::regnamespace AND c.relkind = 'S'
                     AND has_sequence_privilege(r.rolname, c.oid, 'USAGE, SELECT, UPDATE')$$,
                'no runhub role has any privilege on a sequence in runhub');
SELECT is_empty($$SELECT c.oid::regclass, p.priv
                    FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a,
                         LATERAL (SELECT a.privilege_type AS priv) p
                   WHERE c.relnamespace = 'runhub'::regnamespace AND a.grantee = 0$$,
                'PUBLIC has no privilege on any relation in runhub');
SELECT table_privs_are('runhub', 'projects', 'runhub_reader', ARRAY['SELECT'], 'runhub_reader: SELECT only on projects');
SELECT table_privs_are('runhub', 'project_members', 'runhub_reader', ARRAY['SELECT'], 'runhub_reader: SELECT only on project_members');
SELECT table_privs_are('runhub', 'business_events', 'runhub_reader', ARRAY['SELECT'], 'runhub_reader: SELECT only on business_events');
SELECT table_privs_are('runhub', 'actions', 'runhub_reader', ARRAY['SELECT'], 'runhub_reader: SELECT only on actions');
SELECT table_privs_are('runhub', 'customers', 'runhub_reader', ARRAY['SELECT'], 'runhub_reader: SELECT only on customers');
SELECT table_privs_are('runhub', 'suppressions', 'runhub_reader', ARRAY['SELECT'], 'runhub_reader: SELECT only on suppressions');
SELECT table_privs_are('runhub', 'workflow_runs', 'runhub_reader', ARRAY['SELECT'], 'runhub_reader: SELECT only on workflow_runs');
SELECT table_privs_are('runhub', 'workflow_run_recipients', 'runhub_reader', ARRAY['SELECT'], 'runhub_reader: SELECT only on workflow_run_recipients');
SELECT set_eq($$SELECT c.relname::text FROM pg_class c
                 WHERE c.relnamespace = 'runhub'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
                   AND has_table_privilege('runhub_reader', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')$$,
              ARRAY['projects', 'project_members', 'business_events', 'actions', 'customers', 'suppressions',
                    'workflow_runs', 'workflow_run_recipients', 'workflow_attributions', 'digests'],
              'runhub_reader has privileges on exactly these relations (not previews, outbox, stale_runs, ...)');
SELECT table_privs_are('runhub', 'deployments', 'runhub_reader', '{}'::text[], 'runhub_reader: nothing on deployments');
SELECT table_privs_are('runhub', 'plpython_modules', 'runhub_reader', '{}'::text[], 'runhub_reader: nothing on plpython_modules');
-- runhub.secrets and runhub.unsubscribe_keys (the unsubscribe signing keys): the owner only.
SELECT is_empty($$SELECT t.tab, r.rolname, p.priv FROM pg_roles r
                   CROSS JOIN unnest(ARRAY['runhub.secrets', 'runhub.unsubscribe_keys']::regclass[]) t(tab)
                   CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) p(priv)
                   WHERE NOT r.rolsuper AND r.rolname !~ '^pg_'  -- the predefined pg_read_all_data / pg_write_all_data
                     AND r.oid <> (SELECT relowner FROM pg_class WHERE oid = t.tab)
                     AND has_table_privilege(r.oid, t.tab, p.priv)$$,
                'no role but its owner (and superusers and predefined roles) has any privilege on runhub.secrets or runhub.unsubscribe_keys');
SELECT is_empty($$SELECT oid::regclass FROM pg_class WHERE oid IN ('runhub.secrets'::regclass, 'runhub.unsubscribe_keys'::regclass)
                                                       AND relacl IS NOT NULL$$,
                'runhub.secrets and runhub.unsubscribe_keys have no grants at all (owner-only default)');
-- runhub.clock_offset (runhub._now()'s shift, read by the create_run rate limit): the owner only, so
-- no client can move runhub's clock; and no runhub role may call the clock's functions.
SELECT is_empty($$SELECT r.rolname, p.priv FROM pg_roles r
                   CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) p(priv)
                   WHERE NOT r.rolsuper AND r.rolname !~ '^pg_'
                     AND r.oid <> (SELECT relowner FROM pg_class WHERE oid = 'runhub.clock_offset'::regclass)
                     AND has_table_privilege(r.oid, 'runhub.clock_offset', p.priv)$$,
                'no role but its owner (and superusers and predefined roles) has any privilege on runhub.clock_offset');
SELECT is((SELECT relacl FROM pg_class WHERE oid = 'runhub.clock_offset'::regclass), NULL,
          'runhub.clock_offset has no grants at all (owner-only default)');
SELECT is_empty($$SELECT f, r FROM unnest(ARRAY['runhub._now()', 'runhub._clock_offset()']) f,
                                   unnest(ARRAY['runhub_app', 'runhub_ingest', 'runhub_sender', 'runhub_reader']) r
                   WHERE has_function_privilege(r, f::regprocedure, 'EXECUTE')$$,
                'no runhub role may call runhub._now() or runhub._clock_offset()');

-- ---------------------------------------------------------------------------------------------
-- Row-level security on every table that holds project data (a project_id column, or projects
-- itself): enabled everywhere, one member-read policy where runhub_reader may read, none elsewhere.
SELECT is_empty($$SELECT c.oid::regclass FROM pg_class c
                   WHERE c.relnamespace = 'runhub'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relrowsecurity
                     AND (c.relname = 'projects' OR EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                                                               AND a.attname = 'project_id' AND NOT a.attisdropped))$$,
                'RLS is enabled on every table with project data');
SELECT policies_are('runhub', 'projects', ARRAY['projects_member_read'], 'projects: its member-read policy only');
SELECT policies_are('runhub', 'project_members', ARRAY['project_members_member_read'], 'project_members: its member-read policy only');
SELECT policies_are('runhub', 'business_events', ARRAY['business_events_member_read'], 'business_events: its member-read policy only');
SELECT policies_are('runhub', 'customers', ARRAY['customers_member_read'], 'customers: its member-read policy only');
SELECT policies_are('runhub', 'suppressions', ARRAY['suppressions_member_read'], 'suppressions: its member-read policy only');
SELECT policies_are('runhub', 'workflow_runs', ARRAY['workflow_runs_member_read'], 'workflow_runs: its member-read policy only');
SELECT policies_are('runhub', 'workflow_run_recipients', ARRAY['workflow_run_recipients_member_read'],
                    'workflow_run_recipients: its member-read policy only');
SELECT policies_are('runhub', 'workflow_attributions', ARRAY['workflow_attributions_member_read'],
                    'workflow_attributions: its member-read policy only');
SELECT policies_are('runhub', 'digests', ARRAY['digests_member_read'], 'digests: its member-read policy only');
SELECT policies_are('runhub', 'previews', '{}'::name[], 'previews: no policy (nobody but the owner reads it)');
SELECT policies_are('runhub', 'outbox', '{}'::name[], 'outbox: no policy (nobody but the owner reads it)');
SELECT policies_are('runhub', 'create_run_counts', '{}'::name[], 'create_run_counts: no policy (nobody but the owner reads it)');
SELECT policies_are('runhub', 'execution_locks', '{}'::name[], 'execution_locks: no policy (nobody but the owner reads it)');
SELECT is_empty($$SELECT c.oid::regclass FROM pg_class c
                   WHERE c.relnamespace = 'runhub'::regnamespace AND c.relkind IN ('r', 'p') AND c.relrowsecurity
                     AND NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid)
                     AND c.oid NOT IN ('runhub.previews'::regclass, 'runhub.outbox'::regclass, 'runhub.create_run_counts'::regclass,
                                       'runhub.execution_locks'::regclass)$$,
                'no other table with RLS lacks a policy (each new project table is decided on above)');

-- ---------------------------------------------------------------------------------------------
-- Fixture, as the superuser: P1 (owner A, plus member M) with two events, P2 (owner B) with one.
\set a '''dddddddd-0000-4000-8000-00000000000a'''
\set b '''dddddddd-0000-4000-8000-00000000000b'''
\set m '''dddddddd-0000-4000-8000-00000000000c'''
\set stranger '''dddddddd-0000-4000-8000-0000000000ff'''
SELECT runhub.create_project('Project one', :a, 'UTC', 'EUR') AS p1 \gset
SELECT runhub.create_project('Project two', :b, 'UTC', 'EUR') AS p2 \gset
SELECT lives_ok(format($$SELECT runhub.add_member(%L, %L, %L, 'member')$$, :'p1', :a, :m), 'fixture: M is a member of P1');
SELECT lives_ok(format($$SELECT runhub.ingest_event(%1$L, '{"type": "signup", "occurredAt": "2024-01-01T00:00:00Z", "idempotencyKey": "p1-a"}'),
                               runhub.ingest_event(%1$L, '{"type": "signup", "occurredAt": "2024-01-02T00:00:00Z", "idempotencyKey": "p1-b"}'),
                               runhub.ingest_event(%2$L, '{"type": "signup", "occurredAt": "2024-01-03T00:00:00Z", "idempotencyKey": "p2-a"}')$$,
                       :'p1', :'p2'),
                'fixture: two events in P1, one in P2');
-- Workflow rows written directly (visibility is the point here, not how they are made).
INSERT INTO runhub.customers (project_id, email, first_seen_at, last_seen_at)
VALUES (:'p1', 'c1@example.com', now(), now()), (:'p1', 'c2@example.com', now(), now()), (:'p2', 'c3@example.com', now(), now());
INSERT INTO runhub.suppressions (project_id, email, reason) VALUES (:'p1', 'c2@example.com', 'manual'), (:'p2', 'c3@example.com', 'bounced');
INSERT INTO runhub.workflow_runs (id, project_id, action_id, idempotency_key, triggered_by, triggered_by_role)
VALUES ('dddddddd-0000-4000-8000-0000000000a1', :'p1', 'onboard_users', 'run-p1', :a, 'owner'),
       ('dddddddd-0000-4000-8000-0000000000b1', :'p2', 'onboard_users', 'run-p2', :b, 'owner');
INSERT INTO runhub.workflow_run_recipients (run_id, project_id, email)
VALUES ('dddddddd-0000-4000-8000-0000000000a1', :'p1', 'c1@example.com'),
       ('dddddddd-0000-4000-8000-0000000000b1', :'p2', 'c3@example.com');

-- ---------------------------------------------------------------------------------------------
-- runhub_app: the API works through SECURITY DEFINER; tables and internals are refused.
SELECT runhub.unsubscribe_token(:'p1', 'c8@example.com') AS c8_token \gset
SET LOCAL ROLE runhub_app;
SELECT lives_ok(format($$SELECT runhub.create_project('App project', %L, 'UTC', 'EUR')$$, :a), 'runhub_app can create a project');
SELECT lives_ok(format($$SELECT runhub.add_member(%L, %L, %L, 'admin')$$, :'p2', :b, :stranger), 'runhub_app can add a member (as P2''s owner)');
SELECT throws_ok(format($$SELECT runhub.add_member(%L, %L, %L, 'owner')$$, :'p2', :a, :a), 'PT404', 'projects.notFound',
                 'runhub_app acting for A cannot make A owner of P2 (A is no member of it)');
SELECT throws_ok(format($$SELECT runhub.add_member(%L, %L, %L, 'member')$$, :'p2', :a, :b), 'PT404', 'projects.notFound',
                 'runhub_app acting for A cannot demote P2''s owner');
SELECT throws_ok(format($$SELECT runhub.add_member(%L, %L, %L, 'owner')$$, :'p1', :m, :m), 'PT403', 'auth.roleRequired',
                 'runhub_app acting for M, a member of P1, cannot promote M');
SELECT throws_ok(format($$SELECT runhub.add_member(%L, %L, %L, 'owner')$$, :'p2', :stranger, :stranger), 'PT403', 'auth.roleRequired',
                 'an admin cannot make itself owner');
SELECT throws_ok(format($$SELECT runhub.ingest_event(%L, '{"type": "signup", "occurredAt": "2024-01-04T00:00:00Z", "idempotencyKey": "p1-a"}')$$, :'p1'),
                 '42501', NULL, 'runhub_app cannot ingest (the webhook receiver ingests, as runhub_ingest)');
SELECT is(jsonb_array_length(runhub.list_events(:'p1', :a) -> 'events'), 2, 'runhub_app can list events (as a member)');
SELECT throws_ok(format($$SELECT runhub.list_events(%L, %L)$$, :'p2', :a), 'PT404', 'projects.notFound',
                 'runhub_app acting for A cannot list P2''s events');
SELECT throws_ok(format($$SELECT runhub.suppress(%L, %L, 'c3@example.com')$$, :'p2', :a), 'PT404', 'projects.notFound',
                 'runhub_app acting for A cannot suppress in P2');
SELECT throws_ok(format($$SELECT runhub.suppress(%L, %L, 'c3@example.com')$$, :'p1', :m), 'PT403', 'auth.roleRequired',
                 'a plain member cannot suppress');
SELECT throws_ok($$SELECT * FROM runhub.projects$$, '42501', NULL, 'runhub_app cannot SELECT projects');
SELECT throws_ok($$SELECT * FROM runhub.project_members$$, '42501', NULL, 'runhub_app cannot SELECT project_members');
SELECT throws_ok($$SELECT * FROM runhub.business_events$$, '42501', NULL, 'runhub_app cannot SELECT business_events');
SELECT throws_ok($$SELECT * FROM runhub.deployments$$, '42501', NULL, 'runhub_app cannot SELECT deployments');
SELECT throws_ok(format($$INSERT INTO runhub.business_events (project_id, event_type, occurred_at, idempotency_key)
                          VALUES (%L, 'x', now(), 'forged')$$, :'p1'),
                 '42501', NULL, 'runhub_app cannot INSERT into business_events');
SELECT throws_ok(format($$INSERT INTO runhub.project_members (project_id, user_id, role) VALUES (%L, %L, 'owner')$$, :'p1', :stranger),
                 '42501', NULL, 'runhub_app cannot INSERT into project_members');
SELECT throws_ok(format($$UPDATE runhub.projects SET name = 'x' WHERE id = %L$$, :'p1'), '42501', NULL, 'runhub_app cannot UPDATE projects');
SELECT throws_ok($$SELECT runhub._raise('projects.notFound')$$, '42501', NULL, 'runhub_app cannot call runhub._raise');
SELECT throws_ok(format($$SELECT runhub._event_from_json(%L, '{}')$$, :'p1'), '42501', NULL, 'runhub_app cannot call runhub._event_from_json');
SELECT throws_ok(format($$SELECT runhub._authorize(%L, %L)$$, :'p1', :a), '42501', NULL, 'runhub_app cannot call runhub._authorize');
SELECT throws_ok($$SELECT runhub._my_project_ids()$$, '42501', NULL, 'runhub_app cannot call runhub._my_project_ids');
-- The workflow API works for runhub_app (through SECURITY DEFINER, PL/Python policy included).
SELECT is(runhub.update_project_settings(:'p1', :a, '{"integrations": ["email"]}') - ARRAY['timezone', 'dailyDigestEnabled', 'dailyDigestHour', 'dailyDigestRecipient', 'dailyDigestNextAt'], '{"integrations": ["email"]}'::jsonb,
          'runhub_app can update project settings');
SELECT is(jsonb_array_length(runhub.list_actions(:'p1', :a)), 3, 'runhub_app can list actions');
SELECT is(runhub.preview(:'p1', :a, 'onboard_users') -> 'criteria',
          '{"key": "owner.criteria.onboardUsers", "params": {"days": 7},
            "text": "People who signed up in the last 7 days and have done nothing since"}'::jsonb,
          'runhub_app can preview');
SELECT is(runhub.explain_recipient(:'p1', :a, 'onboard_users', 'c1@example.com') - ARRAY['text', 'audience', 'exclusions'],
          '{"email": "c1@example.com", "actionId": "onboard_users", "customer": true, "mailed": false, "excludedBy": null}'::jsonb,
          'runhub_app can call explain_recipient (as an owner: c1 never signed up, so is not mailed)');
SELECT throws_ok($$SELECT * FROM runhub.metrics()$$, '42501', NULL, 'runhub_app cannot call metrics');
SELECT throws_ok(format($$SELECT runhub.create_run(%L, %L, 'onboard_users', 'app-1')$$, :'p1', :a), 'PT422', 'workflows.requires.events',
                 'runhub_app can call create_run (here: refused by policy, no sign-up yet)');
SELECT is(runhub.get_run(:'p1', :a, 'dddddddd-0000-4000-8000-0000000000a1') ->> 'status', 'queued', 'runhub_app can get a run');
SELECT is(jsonb_array_length(runhub.list_runs(:'p1', :a)), 1, 'runhub_app can list runs');
SELECT lives_ok(format($$SELECT runhub.suppress(%L, %L, 'c9@example.com')$$, :'p1', :a), 'runhub_app can suppress an address (as an owner)');
SELECT is(runhub.exclusion_label('suppressed', 16), 'Unsubscribed, bounced or suppressed addresses', 'runhub_app can call exclusion_label');
SELECT is(runhub.criteria_text('send_promo', '{}', '{"segmentation": "recent_7d"}'), 'Customers and leads seen in the last 7 days',
          'runhub_app can call criteria_text');
SELECT is(runhub.cancel_run(:'p1', :a, 'dddddddd-0000-4000-8000-0000000000a1') ->> 'status', 'cancelled', 'runhub_app can cancel a run');
SELECT throws_ok($$SELECT * FROM runhub.workflow_runs$$, '42501', NULL, 'runhub_app cannot SELECT workflow_runs');
SELECT throws_ok($$SELECT * FROM runhub.outbox$$, '42501', NULL, 'runhub_app cannot SELECT outbox');
SELECT throws_ok($$SELECT * FROM runhub.customers$$, '42501', NULL, 'runhub_app cannot SELECT customers');
SELECT throws_ok($$SELECT * FROM runhub.actions$$, '42501', NULL, 'runhub_app cannot SELECT actions');
SELECT throws_ok(format($$INSERT INTO runhub.suppressions (project_id, email, reason) VALUES (%L, 'x@example.com', 'manual')$$, :'p1'),
                 '42501', NULL, 'runhub_app cannot INSERT into suppressions');
SELECT throws_ok($$SELECT runhub.process_runs()$$, '42501', NULL, 'runhub_app cannot call process_runs');
SELECT throws_ok($$SELECT runhub.claim_runs('app')$$, '42501', NULL, 'runhub_app cannot call claim_runs');
SELECT throws_ok(format($$SELECT * FROM runhub._recipients(%L, 'onboard_users', '{}', now())$$, :'p1'), '42501', NULL,
                 'runhub_app cannot call runhub._recipients');
SELECT throws_ok($$SELECT runhub._evaluate_policy('{}')$$, '42501', NULL, 'runhub_app cannot call runhub._evaluate_policy');
SELECT throws_ok($$SELECT runhub.unsubscribe('v1.forged.token')$$, 'PT400', 'mail.invalidUnsubscribeToken',
                 'runhub_app can call unsubscribe (here: a forged token, refused)');
SELECT lives_ok(format('SELECT runhub.unsubscribe(%L)', :'c8_token'), 'runhub_app can unsubscribe with a valid token (c8 in P1)');
SELECT throws_ok(format($$SELECT runhub.unsubscribe_token(%L, 'c8@example.com')$$, :'p1'), '42501', NULL,
                 'runhub_app cannot mint unsubscribe tokens (unsubscribe_token)');
SELECT throws_ok($$SELECT runhub.claim_messages('app')$$, '42501', NULL, 'runhub_app cannot call claim_messages');
SELECT throws_ok($$SELECT runhub.record_sent(1, 'app')$$, '42501', NULL, 'runhub_app cannot call record_sent');
SELECT throws_ok($$SELECT * FROM runhub.unsubscribe_keys$$, '42501', NULL, 'runhub_app cannot SELECT unsubscribe_keys');
SELECT throws_ok($$SELECT runhub.sender_idle()$$, '42501', NULL, 'runhub_app cannot call sender_idle');
SELECT throws_ok($$UPDATE runhub.clock_offset SET shift = interval '1 hour'$$, '42501', NULL,
                 'runhub_app cannot move runhub''s clock (UPDATE clock_offset)');
SELECT throws_ok($$INSERT INTO runhub.clock_offset (singleton, shift) VALUES (true, interval '1 hour')
                   ON CONFLICT (singleton) DO UPDATE SET shift = excluded.shift$$, '42501', NULL,
                 'runhub_app cannot move runhub''s clock (INSERT ... ON CONFLICT)');
SELECT throws_ok($$DELETE FROM runhub.clock_offset$$, '42501', NULL, 'runhub_app cannot DELETE the clock''s offset');
SELECT throws_ok($$TRUNCATE runhub.clock_offset$$, '42501', NULL, 'runhub_app cannot TRUNCATE the clock''s offset');
SELECT throws_ok($$SELECT runhub._now()$$, '42501', NULL, 'runhub_app cannot call runhub._now()');
RESET ROLE;
SELECT results_eq($$SELECT shift FROM runhub.clock_offset$$, $$VALUES (interval '0')$$,
                  'runhub''s clock is unmoved after runhub_app''s attempts');

-- ---------------------------------------------------------------------------------------------
-- runhub_ingest: events in, and nothing else at all.
SET LOCAL ROLE runhub_ingest;
SELECT is(runhub.ingest_event(:'p1', '{"type": "signup", "occurredAt": "2024-01-04T00:00:00Z", "idempotencyKey": "p1-a"}') -> 'inserted',
          'false'::jsonb, 'runhub_ingest can ingest (here: a replay)');
SELECT throws_ok(format($$SELECT runhub.ingest_event(%L, '{"type": "recovery_email_sent", "occurredAt": "2024-01-04T00:00:00Z", "idempotencyKey": "x"}')$$, :'p1'),
                 'PT400', 'events.reservedForRunhub', 'runhub_ingest cannot forge a sent mail');
SELECT throws_ok(format($$SELECT runhub.list_events(%L, %L)$$, :'p1', :a), '42501', NULL, 'runhub_ingest cannot list events');
SELECT throws_ok(format($$SELECT runhub.list_actions(%L, %L)$$, :'p1', :a), '42501', NULL, 'runhub_ingest cannot list actions');
SELECT throws_ok(format($$SELECT runhub.create_project('x', %L, 'UTC', 'EUR')$$, :a), '42501', NULL, 'runhub_ingest cannot create projects');
SELECT throws_ok($$SELECT * FROM runhub.business_events$$, '42501', NULL, 'runhub_ingest cannot SELECT business_events');
SELECT throws_ok($$SELECT runhub.process_runs()$$, '42501', NULL, 'runhub_ingest cannot call process_runs');
SELECT throws_ok($$SELECT runhub.unsubscribe('v1.forged.token')$$, '42501', NULL, 'runhub_ingest cannot call unsubscribe');
RESET ROLE;

-- ---------------------------------------------------------------------------------------------
-- runhub_sender: drives runs through its four functions and delivers mail through the outbox
-- functions; no API, no tables. One message of no run (no event, no run to end) is due in P2.
INSERT INTO runhub.outbox (project_id, template, locale, to_email, variables, message_id)
VALUES (:'p2', 'digest', 'en', 'b@example.com', '{"week": 1}', '<digest-roles@runhub>');
SET LOCAL ROLE runhub_sender;
SELECT is(runhub.process_runs(), 1, 'runhub_sender can call process_runs (it takes P2''s queued run)');
SELECT is_empty($$SELECT runhub.claim_runs('sender-1')$$, 'runhub_sender can call claim_runs');
SELECT is(runhub.heartbeat_run('dddddddd-0000-4000-8000-0000000000b1', 'sender-1'), false, 'runhub_sender can call heartbeat_run');
SELECT is(runhub.execute_run('dddddddd-0000-4000-8000-0000000000b1', 'sender-1'), 'lease_lost', 'runhub_sender can call execute_run');
SELECT throws_ok(format($$SELECT runhub.create_run(%L, %L, 'onboard_users', 'x')$$, :'p2', :b), '42501', NULL, 'runhub_sender cannot call create_run');
SELECT throws_ok(format($$SELECT runhub.preview(%L, %L, 'onboard_users')$$, :'p2', :b), '42501', NULL, 'runhub_sender cannot call preview');
SELECT throws_ok(format($$SELECT runhub.suppress(%L, %L, 'x@example.com')$$, :'p2', :b), '42501', NULL, 'runhub_sender cannot call suppress');
SELECT throws_ok($$SELECT * FROM runhub.workflow_runs$$, '42501', NULL, 'runhub_sender cannot SELECT workflow_runs');
SELECT throws_ok($$SELECT * FROM runhub.outbox$$, '42501', NULL, 'runhub_sender cannot SELECT outbox');
SELECT throws_ok($$UPDATE runhub.workflow_runs SET status = 'cancelled'$$, '42501', NULL, 'runhub_sender cannot UPDATE workflow_runs');
SELECT throws_ok(format($$SELECT runhub.create_project('x', %L, 'UTC', 'EUR')$$, :a), '42501', NULL, 'runhub_sender cannot call create_project');
SELECT throws_ok(format($$SELECT runhub.ingest_event(%L, '{}')$$, :'p1'), '42501', NULL, 'runhub_sender cannot call ingest_event');
SELECT throws_ok(format($$SELECT runhub.list_events(%L, %L)$$, :'p1', :a), '42501', NULL, 'runhub_sender cannot call list_events');
SELECT is(runhub.sender_idle(), false, 'runhub_sender can call sender_idle (a digest is due)');
SELECT is((SELECT value FROM runhub.metrics() WHERE name = 'runhub_outbox_messages' AND labels = '{"state": "due"}'), 1::float8,
          'runhub_sender can call metrics (one message due: the digest)');
SELECT throws_ok($$SELECT * FROM runhub.business_events$$, '42501', NULL, 'runhub_sender cannot SELECT business_events');
SELECT throws_ok($$SELECT * FROM runhub.projects$$, '42501', NULL, 'runhub_sender cannot SELECT projects');
SELECT runhub.claim_messages('sender-1', 10, 60) AS sender_claim \gset
SELECT is((:'sender_claim'::jsonb) - ARRAY['id', 'projectId'],
          '{"messageId": "<digest-roles@runhub>", "runId": null, "template": "digest", "locale": "en", "toEmail": "b@example.com",
            "toName": null, "fromName": null, "replyTo": null, "attempts": 0, "unsubscribeToken": null, "variables": {"week": 1, "projectName": "Project two"}}'::jsonb,
          'runhub_sender can call claim_messages (it claims the digest)');
SELECT is(runhub.heartbeat_messages('sender-1', ARRAY[((:'sender_claim'::jsonb) ->> 'id')::bigint]), 1, 'runhub_sender can call heartbeat_messages');
SELECT is(runhub.release_messages('sender-1', ARRAY[((:'sender_claim'::jsonb) ->> 'id')::bigint]), 1, 'runhub_sender can call release_messages');
SELECT is(runhub.record_failure(((:'sender_claim'::jsonb) ->> 'id')::bigint, 'sender-1', 421, '421 busy'), 'lease_lost',
          'runhub_sender can call record_failure (here: the message was released)');
SELECT is(runhub.record_sent(((:'sender_claim'::jsonb) ->> 'id')::bigint, 'sender-1', '250 ok'), 'lease_lost',
          'runhub_sender can call record_sent (here: lease_lost, the message was released: it records nothing it does not hold)');
SELECT runhub.claim_messages('sender-1', 10, 60) AS sender_claim \gset
SELECT is(runhub.record_sent(((:'sender_claim'::jsonb) ->> 'id')::bigint, 'sender-1', '250 ok'), 'sent',
          'runhub_sender can call record_sent (claimed again: sent)');
SELECT matches(runhub.unsubscribe_token(:'p1', 'c1@example.com'), '^v2\.[0-9]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$',
               'runhub_sender can call unsubscribe_token (its PL/Python signer runs with the owner''s rights)');
SELECT throws_ok($$SELECT runhub.unsubscribe('v1.forged.token')$$, '42501', NULL, 'runhub_sender cannot call unsubscribe');
SELECT throws_ok($$SELECT * FROM runhub.unsubscribe_keys$$, '42501', NULL, 'runhub_sender cannot SELECT unsubscribe_keys');
SELECT throws_ok($$SELECT runhub._sign_unsubscribe(1, '\x00', NULL, 'x')$$, '42501', NULL, 'runhub_sender cannot call runhub._sign_unsubscribe');
SELECT throws_ok($$SELECT runhub._complete_done_runs()$$, '42501', NULL, 'runhub_sender cannot call runhub._complete_done_runs');
RESET ROLE;
SELECT is((SELECT status FROM runhub.workflow_runs WHERE idempotency_key = 'run-p2'), 'failed',
          'the sender''s process_runs executed P2''s run (no recipients: failed)');

-- ---------------------------------------------------------------------------------------------
-- runhub_reader with no runhub.user_id at all (never set in this session): sees nothing.
SELECT is(current_setting('runhub.user_id', true), NULL, 'runhub.user_id is not set yet in this session');
SET LOCAL ROLE runhub_reader;
SELECT is_empty($$SELECT id FROM runhub.projects$$, 'no user id: no project is visible');
SELECT is_empty($$SELECT project_id FROM runhub.project_members$$, 'no user id: no member is visible');
SELECT is_empty($$SELECT id FROM runhub.business_events$$, 'no user id: no event is visible');
SELECT is_empty($$SELECT email FROM runhub.customers UNION ALL SELECT email FROM runhub.suppressions
                  UNION ALL SELECT id::text FROM runhub.workflow_runs UNION ALL SELECT email FROM runhub.workflow_run_recipients$$,
                'no user id: no customer, suppression, run or recipient is visible');
SELECT is((SELECT count(*)::int FROM runhub.actions), 3, 'the action registry is readable without a user (it is not project data)');
RESET ROLE;

-- A malformed or empty user id identifies nobody (and is not an error).
SET LOCAL runhub.user_id = 'not-a-uuid';
SET LOCAL ROLE runhub_reader;
SELECT lives_ok($$SELECT count(*) FROM runhub.projects$$, 'malformed user id: reading is not an error');
SELECT is_empty($$SELECT id FROM runhub.projects$$, 'malformed user id: no project is visible');
SELECT is_empty($$SELECT id FROM runhub.business_events$$, 'malformed user id: no event is visible');
RESET ROLE;
SET LOCAL runhub.user_id = '';
SET LOCAL ROLE runhub_reader;
SELECT is_empty($$SELECT id FROM runhub.projects$$, 'empty user id: no project is visible');
RESET ROLE;
SET LOCAL runhub.user_id = 'dddddddd-0000-4000-8000-0000000000ee';
SET LOCAL ROLE runhub_reader;
SELECT is_empty($$SELECT id FROM runhub.projects$$, 'a user who is nobody''s member: no project is visible');
SELECT is_empty($$SELECT id FROM runhub.business_events$$, 'a user who is nobody''s member: no event is visible');
RESET ROLE;

-- Owner A: P1 only, with its members and its two events.
SET LOCAL runhub.user_id = 'dddddddd-0000-4000-8000-00000000000a';
SET LOCAL ROLE runhub_reader;
SELECT is(runhub.current_user_id(), :a::uuid, 'current_user_id() reads SET LOCAL runhub.user_id');
SELECT set_eq($$SELECT name FROM runhub.projects$$, ARRAY['Project one', 'App project'], 'A sees P1 and the project created for A, not P2');
SELECT set_eq($$SELECT user_id, role FROM runhub.project_members WHERE project_id IN (SELECT id FROM runhub.projects WHERE name = 'Project one')$$,
              format($$VALUES (%L::uuid, 'owner'), (%L::uuid, 'member')$$, :a, :m),
              'A sees P1''s members: A (owner) and M (member)');
SELECT is_empty(format($$SELECT 1 FROM runhub.project_members WHERE project_id = %L$$, :'p2'), 'A sees none of P2''s members');
SELECT set_eq($$SELECT idempotency_key FROM runhub.business_events$$, ARRAY['p1-a', 'p1-b'], 'A sees exactly P1''s events');
SELECT is_empty(format($$SELECT 1 FROM runhub.projects WHERE id = %L$$, :'p2'), 'A asking for P2 by id gets no row');
SELECT set_eq($$SELECT email FROM runhub.customers$$, ARRAY['c1@example.com', 'c2@example.com'], 'A sees exactly P1''s customers');
SELECT set_eq($$SELECT email || ' ' || reason FROM runhub.suppressions$$,
              ARRAY['c2@example.com manual', 'c9@example.com manual', 'c8@example.com unsubscribed'],
              'A sees exactly P1''s suppressions (c8 unsubscribed through runhub_app)');
SELECT set_eq($$SELECT idempotency_key FROM runhub.workflow_runs$$, ARRAY['run-p1'], 'A sees exactly P1''s runs');
SELECT set_eq($$SELECT email FROM runhub.workflow_run_recipients$$, ARRAY['c1@example.com'], 'A sees exactly P1''s recipients');
SELECT is_empty(format($$SELECT 1 FROM runhub.workflow_runs WHERE project_id = %L$$, :'p2'), 'A asking for P2''s runs gets no row');
SELECT throws_ok($$SELECT * FROM runhub.outbox$$, '42501', NULL, 'runhub_reader cannot SELECT outbox');
SELECT throws_ok($$SELECT * FROM runhub.previews$$, '42501', NULL, 'runhub_reader cannot SELECT previews');
SELECT throws_ok($$SELECT * FROM runhub.stale_runs$$, '42501', NULL, 'runhub_reader cannot SELECT stale_runs');
SELECT throws_ok($$UPDATE runhub.workflow_runs SET status = 'cancelled'$$, '42501', NULL, 'runhub_reader cannot UPDATE workflow_runs');
SELECT throws_ok($$DELETE FROM runhub.suppressions$$, '42501', NULL, 'runhub_reader cannot DELETE suppressions (no un-suppressing)');
SELECT throws_ok(format($$INSERT INTO runhub.customers (project_id, email, first_seen_at, last_seen_at) VALUES (%L, 'x@example.com', now(), now())$$, :'p1'),
                 '42501', NULL, 'runhub_reader cannot INSERT customers');
SELECT throws_ok($$UPDATE runhub.actions SET risk = 'low'$$, '42501', NULL, 'runhub_reader cannot UPDATE the action registry');
SELECT throws_ok($$SELECT runhub.process_runs()$$, '42501', NULL, 'runhub_reader cannot call process_runs');
SELECT throws_ok(format($$SELECT runhub.get_run(%L, %L, 'dddddddd-0000-4000-8000-0000000000a1')$$, :'p1', :a), '42501', NULL,
                 'runhub_reader cannot call get_run');

-- ... and writes nothing, not even to its own project.
SELECT throws_ok(format($$INSERT INTO runhub.projects (name, owner_id, timezone, currency) VALUES ('x', %L, 'UTC', 'EUR')$$, :a),
                 '42501', NULL, 'runhub_reader cannot INSERT projects');
SELECT throws_ok(format($$UPDATE runhub.projects SET name = 'renamed' WHERE id = %L$$, :'p1'), '42501', NULL,
                 'runhub_reader cannot UPDATE its own project');
SELECT throws_ok(format($$DELETE FROM runhub.projects WHERE id = %L$$, :'p1'), '42501', NULL, 'runhub_reader cannot DELETE its own project');
SELECT throws_ok(format($$INSERT INTO runhub.project_members (project_id, user_id, role) VALUES (%L, %L, 'owner')$$, :'p2', :a),
                 '42501', NULL, 'runhub_reader cannot INSERT project_members (no joining P2)');
SELECT throws_ok(format($$UPDATE runhub.project_members SET role = 'owner' WHERE user_id = %L$$, :m), '42501', NULL,
                 'runhub_reader cannot UPDATE project_members');
SELECT throws_ok($$DELETE FROM runhub.project_members$$, '42501', NULL, 'runhub_reader cannot DELETE project_members');
SELECT throws_ok(format($$INSERT INTO runhub.business_events (project_id, event_type, occurred_at, idempotency_key)
                          VALUES (%L, 'x', now(), 'forged')$$, :'p1'),
                 '42501', NULL, 'runhub_reader cannot INSERT business_events');
SELECT throws_ok($$UPDATE runhub.business_events SET payload = '{}'$$, '42501', NULL, 'runhub_reader cannot UPDATE business_events');
SELECT throws_ok($$DELETE FROM runhub.business_events$$, '42501', NULL, 'runhub_reader cannot DELETE business_events');
SELECT throws_ok($$TRUNCATE runhub.business_events$$, '42501', NULL, 'runhub_reader cannot TRUNCATE business_events');
SELECT throws_ok($$SELECT * FROM runhub.deployments$$, '42501', NULL, 'runhub_reader cannot SELECT deployments');
SELECT throws_ok($$SELECT * FROM runhub.unsubscribe_keys$$, '42501', NULL, 'runhub_reader cannot SELECT unsubscribe_keys');
SELECT throws_ok($$SELECT runhub.unsubscribe('v1.forged.token')$$, '42501', NULL, 'runhub_reader cannot call unsubscribe');
SELECT throws_ok(format($$SELECT runhub.list_events(%L, %L)$$, :'p2', :a), '42501', NULL,
                 'runhub_reader cannot call list_events (a SECURITY DEFINER read around RLS)');
SELECT throws_ok(format($$SELECT runhub.create_project('x', %L, 'UTC', 'EUR')$$, :a), '42501', NULL, 'runhub_reader cannot call create_project');
SELECT throws_ok(format($$SELECT runhub.add_member(%L, %L, %L, 'owner')$$, :'p2', :a, :a), '42501', NULL, 'runhub_reader cannot call add_member');
RESET ROLE;

-- Behind PostgREST: the verified JWT's sub names the user when runhub.user_id is not set.
SET LOCAL runhub.user_id = '';
SET LOCAL request.jwt.claims = '{"sub": "dddddddd-0000-4000-8000-00000000000b", "role": "web"}';
SET LOCAL ROLE runhub_reader;
SELECT is(runhub.current_user_id(), :b::uuid, 'current_user_id() reads the JWT''s sub from request.jwt.claims');
SELECT set_eq($$SELECT id FROM runhub.projects$$, ARRAY[:'p2'::uuid], 'a JWT for B sees P2 only');
RESET ROLE;
SET LOCAL request.jwt.claims = '{"sub": "not-a-uuid"';
SET LOCAL ROLE runhub_reader;
SELECT is(runhub.current_user_id(), NULL, 'malformed claims identify nobody');
SELECT is_empty($$SELECT id FROM runhub.projects$$, 'malformed claims: no project is visible');
RESET ROLE;
SET LOCAL request.jwt.claims = '';

-- Member M: P1 too. Owner B: P2 only.
SET LOCAL runhub.user_id = 'dddddddd-0000-4000-8000-00000000000c';
SET LOCAL ROLE runhub_reader;
SELECT set_eq($$SELECT id FROM runhub.projects$$, ARRAY[:'p1'::uuid], 'M (a plain member) sees P1 only');
SELECT set_eq($$SELECT idempotency_key FROM runhub.business_events$$, ARRAY['p1-a', 'p1-b'], 'M sees P1''s events');
SELECT set_eq($$SELECT idempotency_key FROM runhub.workflow_runs$$, ARRAY['run-p1'], 'M (a plain member) sees P1''s runs');
RESET ROLE;
SET LOCAL runhub.user_id = 'dddddddd-0000-4000-8000-00000000000b';
SET LOCAL ROLE runhub_reader;
SELECT set_eq($$SELECT id FROM runhub.projects$$, ARRAY[:'p2'::uuid], 'B sees P2 only');
SELECT set_eq($$SELECT user_id, role FROM runhub.project_members$$,
              format($$VALUES (%L::uuid, 'owner'), (%L::uuid, 'admin')$$, :b, :stranger),
              'B sees P2''s members only');
SELECT set_eq($$SELECT idempotency_key FROM runhub.business_events$$, ARRAY['p2-a'], 'B sees P2''s event only');
SELECT set_eq($$SELECT 'customer ' || email FROM runhub.customers UNION ALL SELECT 'suppression ' || email FROM runhub.suppressions
                UNION ALL SELECT 'run ' || idempotency_key FROM runhub.workflow_runs UNION ALL SELECT 'recipient ' || email FROM runhub.workflow_run_recipients$$,
              ARRAY['customer c3@example.com', 'suppression c3@example.com', 'run run-p2', 'recipient c3@example.com'],
              'B sees P2''s customer, suppression, run and recipient only');
RESET ROLE;

-- Membership is read live: once M is removed from P1 (by the superuser), M sees nothing.
DELETE FROM runhub.project_members WHERE project_id = :'p1' AND user_id = :m;
SET LOCAL runhub.user_id = 'dddddddd-0000-4000-8000-00000000000c';
SET LOCAL ROLE runhub_reader;
SELECT is_empty($$SELECT id FROM runhub.projects$$, 'a removed member no longer sees the project');
SELECT is_empty($$SELECT id FROM runhub.business_events$$, 'a removed member no longer sees its events');
SELECT is_empty($$SELECT id::text FROM runhub.workflow_runs UNION ALL SELECT email FROM runhub.customers$$,
                'a removed member no longer sees its runs or customers');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
