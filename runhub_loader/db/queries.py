"""Every statement runhub_loader sends to the database that is not a call of runhub's SQL API.

Calls of the API (`SELECT runhub.<function>(...)`, `CALL runhub.<procedure>(...)`, the sender's
`LISTEN`s) stay where they are made; everything else (catalog lookups, deployment bookkeeping,
pg_cron management, status queries, role DDL, the demo's reads of tables) lives here, grouped by
who sends it. The ones that take identifiers are `psycopg.sql.SQL` templates: the caller formats
them with `sql.Identifier`/`sql.Literal`. tests/unit/test_queries.py keeps it that way.

Not here, because they are deployment of files rather than queries: the sql/ files deploy applies,
and the PL/Python bundle's statements (plpy_bundle.py), including the code its wrappers run inside
the server.
"""
from __future__ import annotations

from psycopg import sql

# -- deploy (db/deploy.py) ----------------------------------------------------------------------

# Whether a table exists yet (runhub.deployments not before the first migration; status reads only
# the tables there are); params (qualified name,); column ok.
TABLE_EXISTS = "SELECT to_regclass(%s) IS NOT NULL AS ok"

# The code checksum of the last deploy: an unchanged checkout with no pending migration is a no-op.
LAST_DEPLOYED_CHECKSUM = "SELECT checksum FROM runhub.deployments ORDER BY id DESC LIMIT 1"

# Records a deploy; params (version, checksum, migration ids).
RECORD_DEPLOYMENT = "INSERT INTO runhub.deployments (version, checksum, migrations) VALUES (%s, %s, %s)"

# Is an extension installed; params (extname,).
EXTENSION_INSTALLED = "SELECT 1 FROM pg_extension WHERE extname = %s"

# Whether a function exists (an older deployed schema may lack it); params (regprocedure text,).
FUNCTION_EXISTS = "SELECT to_regprocedure(%s) IS NOT NULL"

# Projects whose create_run counter is still a sequence of their own (made before migration 0018).
CREATE_RUN_COUNTERS_LEFT = "SELECT runhub._create_run_counters_left()"

# Whether this session waits for locks without limit (lock_timeout 0), and sets a limit; params (value,).
LOCK_TIMEOUT_UNSET = "SELECT current_setting('lock_timeout') = '0'"
SET_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', %s, false)"

# Retires a batch of them in this transaction; params (after this project id or null, batch size);
# columns (retired, last project id looked at: null when none is left after it).
RETIRE_CREATE_RUN_COUNTERS = "SELECT retired, last_id FROM runhub._retire_create_run_counters(%s, %s)"

# Installs an extension; format with sql.Identifier(name).
CREATE_EXTENSION = sql.SQL("CREATE EXTENSION {}")

# The next three note every function or procedure the deploy's transaction creates or replaces:
# a temp table, a pg_temp event-trigger function filling it, and the event trigger.
CREATE_DEFINED_FUNCTIONS_TABLE = "CREATE TEMP TABLE runhub_deploy_defined (fn oid PRIMARY KEY) ON COMMIT DROP"

CREATE_DEFINED_FUNCTIONS_NOTE = """CREATE FUNCTION pg_temp.runhub_deploy_note() RETURNS event_trigger LANGUAGE plpgsql AS $$
                    BEGIN
                        INSERT INTO pg_temp.runhub_deploy_defined
                        SELECT objid FROM pg_event_trigger_ddl_commands() WHERE object_type IN ('function', 'procedure')
                        ON CONFLICT DO NOTHING;
                    END $$"""

CREATE_DEFINED_FUNCTIONS_TRIGGER = """CREATE EVENT TRIGGER runhub_deploy_note ON ddl_command_end WHEN TAG IN ('CREATE FUNCTION', 'CREATE PROCEDURE')
                    EXECUTE FUNCTION pg_temp.runhub_deploy_note()"""

# Stops noting (before the functions are compared).
DROP_DEFINED_FUNCTIONS_TRIGGER = "DROP EVENT TRIGGER runhub_deploy_note"

# Functions in schema runhub this deploy did not define (and no extension owns), as regprocedure text.
STALE_FUNCTIONS = """SELECT p.oid::regprocedure::text FROM pg_proc p
            WHERE p.pronamespace = 'runhub'::regnamespace
              AND p.oid NOT IN (SELECT fn FROM pg_temp.runhub_deploy_defined)
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                                 AND d.objid = p.oid AND d.deptype = 'e')
            ORDER BY 1"""

# Drops one of them; format with sql.SQL(<a STALE_FUNCTIONS row>): regprocedure text is already quoted.
DROP_ROUTINE = sql.SQL("DROP ROUTINE {}")

# -- cron (db/cron.py) --------------------------------------------------------------------------

# (shared_preload_libraries, pg_cron available, the cron database's name) of the server.
CRON_STATE = """SELECT current_setting('shared_preload_libraries'),
                  EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_cron'),
                  coalesce(current_setting('cron.database_name', true), 'postgres')"""

# The jobs the deployed code wants (runhub.cron_jobs()), in the target database.
WANTED_CRON_JOBS = "SELECT name, schedule, command, in_cron_database FROM runhub.cron_jobs() ORDER BY name"

# The rest run in the cron database.
CREATE_PG_CRON = "CREATE EXTENSION IF NOT EXISTS pg_cron"

# Whether pg_cron is installed in the cron database.
PG_CRON_INSTALLED = "SELECT 1 FROM pg_extension WHERE extname = 'pg_cron'"

# This database's scheduled jobs; params (job name prefix,).
SCHEDULED_CRON_JOBS = "SELECT jobname, schedule, command, database FROM cron.job WHERE starts_with(jobname, %s)"

# The names alone; params (job name prefix,).
SCHEDULED_CRON_JOB_NAMES = "SELECT jobname FROM cron.job WHERE starts_with(jobname, %s)"

# Schedules (or reschedules) a job by name; params (jobname, schedule, command, database).
SCHEDULE_CRON_JOB = "SELECT cron.schedule_in_database(%s, %s, %s, %s)"

# Removes a job by name; params (jobname,).
UNSCHEDULE_CRON_JOB = "SELECT cron.unschedule(%s)"

# -- status (db/status.py; rows as dicts) --------------------------------------------------------

# Whether each table the report reads exists yet: TABLE_EXISTS (above).

# The last deploy.
LAST_DEPLOYMENT = "SELECT version, checksum, deployed_at, deployed_by FROM runhub.deployments ORDER BY id DESC LIMIT 1"

# runhub's tables, biggest first, with estimated row counts.
TABLE_SIZES = """SELECT c.relname AS table, coalesce(s.n_live_tup, 0) AS estimated_rows,
                  pg_size_pretty(pg_total_relation_size(c.oid)) AS total_size
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
            WHERE n.nspname = 'runhub' AND c.relkind = 'r'
            ORDER BY pg_total_relation_size(c.oid) DESC, c.relname"""

# Workflow runs by state, and how long the oldest queued one has waited.
RUN_QUEUE = """SELECT count(*) FILTER (WHERE status = 'queued') AS queued,
                  count(*) FILTER (WHERE status = 'running' AND executed_at IS NULL) AS executing,
                  count(*) FILTER (WHERE status = 'running' AND executed_at IS NOT NULL) AS delivering,
                  extract(epoch FROM now() - min(requested_at) FILTER (WHERE status = 'queued'))::int AS oldest_queued_s
             FROM runhub.workflow_runs WHERE status IN ('queued', 'running')"""

# Outbox messages by state.
OUTBOX_QUEUE = """SELECT count(*) FILTER (WHERE status = 'queued' AND next_attempt_at <= now()) AS due,
                  count(*) FILTER (WHERE status = 'queued' AND next_attempt_at > now()) AS retrying,
                  count(*) FILTER (WHERE status = 'sending') AS sending
             FROM runhub.outbox WHERE status IN ('queued', 'sending')"""

# Up to 10 runs stuck in running (runhub.stale_runs).
STALE_RUNS = """SELECT id::text, action_id, attempts, extract(epoch FROM running_for)::int AS running_s
             FROM runhub.stale_runs ORDER BY started_at LIMIT 10"""

# Live and dead rows, and last vacuums, of the queue tables.
QUEUE_TABLE_BLOAT = """SELECT relname AS table, n_live_tup AS live, n_dead_tup AS dead, last_autovacuum, last_vacuum
             FROM pg_stat_user_tables
            WHERE schemaname = 'runhub' AND relname IN ('outbox', 'workflow_runs', 'workflow_run_recipients', 'previews')
            ORDER BY relname"""

# The SMTP relay as each sender of the last hour last found it.
RECENT_RELAY_STATUS = """SELECT worker, relay, down_since, last_error, updated_at FROM runhub.relay_status
            WHERE updated_at > now() - interval '1 hour' ORDER BY down_since NULLS LAST, worker"""

# Projects with digests on (digest_next_at is set exactly for them), due, and overdue by over an
# hour: the due ones through the partial index projects_digest_due, never a scan of every project;
# those on are its index's entry count as VACUUM/ANALYZE last estimated it, counted only while the
# estimate says fewer than 100,000 (or there is none yet).
DIGEST_PROJECTS = """SELECT CASE WHEN i.reltuples >= 100000 THEN i.reltuples::bigint
                       ELSE (SELECT count(*) FROM runhub.projects WHERE digest_next_at IS NOT NULL) END AS enabled,
                  i.reltuples >= 100000 AS enabled_estimated,
                  d.due, d.overdue
             FROM pg_class i,
                  (SELECT count(*) AS due,
                          count(*) FILTER (WHERE digest_next_at <= now() - interval '1 hour') AS overdue
                     FROM runhub.projects WHERE digest_next_at <= now()) d
            WHERE i.oid = 'runhub.projects_digest_due'::regclass"""

# The digest job's last 3 runs.
LAST_DIGEST_JOB_RUNS = """SELECT started_at, duration_ms, counts FROM runhub.job_runs
            WHERE job = 'digests' ORDER BY started_at DESC LIMIT 3"""

# In the cron database: this database's jobs, their last run and their failures of the last 24 h;
# params (job name prefix,).
CRON_JOB_HEALTH = """SELECT j.jobname, j.schedule, j.active, d.status AS last_status,
                          d.start_time AS last_start, d.return_message AS last_message,
                          f.failed_24h, f.last_error
                     FROM cron.job j
                     LEFT JOIN LATERAL (SELECT status, start_time, return_message FROM cron.job_run_details r
                                         WHERE r.jobid = j.jobid ORDER BY r.runid DESC LIMIT 1) d ON true
                     LEFT JOIN LATERAL (SELECT count(*) AS failed_24h,
                                               (array_agg(r.return_message ORDER BY r.runid DESC))[1] AS last_error
                                          FROM cron.job_run_details r
                                         WHERE r.jobid = j.jobid AND r.status = 'failed'
                                           AND r.start_time > now() - interval '24 hours') f ON true
                    WHERE starts_with(j.jobname, %s) ORDER BY j.jobname"""

# -- CLI (cli.py) -------------------------------------------------------------------------------

# login-role: (is a superuser, is one of the listed roles) of a role, if it exists; params
# (runhub's own role names, role name).
LOGIN_ROLE_STATE = "SELECT rolsuper, rolname = ANY (%s) FROM pg_roles WHERE rolname = %s"

# login-role: whether a role is a member of another; params (role, group role).
IS_ROLE_MEMBER = "SELECT pg_has_role(%s, %s, 'MEMBER')"

# login-role's DDL; format with sql.Identifier (role names, database, setting) and sql.Literal
# (password, value).
CREATE_LOGIN_ROLE = sql.SQL("CREATE ROLE {} LOGIN")
SET_LOGIN_PASSWORD = sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}")
REVOKE_ROLE = sql.SQL("REVOKE {} FROM {}")
GRANT_ROLE = sql.SQL("GRANT {} TO {}")
SET_ROLE_SETTING_IN_DATABASE = sql.SQL("ALTER ROLE {} IN DATABASE {} SET {} = {}")

# attribute-payments: every project's id.
ALL_PROJECT_IDS = "SELECT id FROM runhub.projects ORDER BY id"

# -- demo (demo.py) -----------------------------------------------------------------------------

# The demo shop's project, if created already; params (owner id, name).
DEMO_PROJECT_ID = "SELECT id FROM runhub.projects WHERE owner_id = %s AND name = %s"

# Its events by type; params (project id,).
DEMO_EVENT_COUNTS = "SELECT event_type, count(*) FROM runhub.business_events WHERE project_id = %s GROUP BY 1 ORDER BY 1"

# Yesterday's digest in the project's own time zone (runhub.generate_digest); params (project id,).
DEMO_YESTERDAYS_DIGEST = ("SELECT runhub.generate_digest(p.id, (now() AT TIME ZONE p.timezone)::date - 1)"
                          " FROM runhub.projects p WHERE p.id = %s")

# A run's recipients and their links; params (run id,).
DEMO_RUN_LINKS = "SELECT email, link FROM runhub.workflow_run_recipients WHERE run_id = %s ORDER BY email"

# A run's first recipient whose mail was sent, with the cart to pay; params (run id,).
DEMO_FIRST_SENT_RECIPIENT = """SELECT rc.email, rc.cart_id, rc.amount_cents, rc.currency FROM runhub.workflow_run_recipients rc
             JOIN runhub.outbox o ON o.id = rc.id
            WHERE rc.run_id = %s AND o.status = 'sent' ORDER BY rc.email LIMIT 1"""

# -- embedded cluster (db/embedded.py), in database postgres --------------------------------------

# Sets a role's password; format with sql.Identifier(role), sql.Literal(password).
SET_ROLE_PASSWORD = sql.SQL("ALTER ROLE {} PASSWORD {}")

# Whether a database exists; params (name,).
DATABASE_EXISTS = "SELECT 1 FROM pg_database WHERE datname = %s"

# Creates a database; format with sql.Identifier(name).
CREATE_DATABASE = sql.SQL("CREATE DATABASE {}")

# -- sender (mail/recorder.py) --------------------------------------------------------------------

# The two halves of the recorder's one statement: the 250s recorded (params worker, message ids,
# replies) and the next messages started (params worker, message ids), as rows (call, id, status).
RECORD_SENT = "SELECT 'sent' AS call, r.id, r.status FROM runhub.record_sent_many(%s, %s, %s) r"
START_MESSAGES = "SELECT 'start', s, NULL FROM runhub.start_messages(%s, %s) s"


def record_sent_and_start(sent: bool, start: bool) -> str:
    """The recorder's statement: RECORD_SENT and/or START_MESSAGES in one (one transaction, one
    round trip); their params in that order."""
    return " UNION ALL ".join(([RECORD_SENT] if sent else []) + ([START_MESSAGES] if start else []))

# A project's today on runhub's clock, in its time zone (`runhub digest preview --day today|yesterday`).
PROJECT_TODAY = "SELECT (runhub._now() AT TIME ZONE timezone)::date FROM runhub.projects WHERE id = %s"

# The database's figures for monitoring (runhub_loader/metrics.py).
DATABASE_METRICS = "SELECT name, labels, value FROM runhub.metrics()"

# The mail's catalog of one locale into runhub.texts (the deploy); params (locale, the JSON object).
CLEAR_TEXTS = "DELETE FROM runhub.texts"
INSERT_TEXTS = "INSERT INTO runhub.texts (locale, key, text) SELECT %s, key, value FROM jsonb_each_text(%s::jsonb)"

# The sender's wake-ups: a run to execute (runhub_runs), messages to send (runhub_outbox).
LISTEN_RUNS = "LISTEN runhub_runs"
LISTEN_OUTBOX = "LISTEN runhub_outbox"
