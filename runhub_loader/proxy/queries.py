"""Every statement the proxy's commands send (runhub_loader/proxy), as db/queries.py is for the rest:
to the proxy database (its directory and partitions), and to the shards (catalog reads, the move's
copies, the shared unsubscribe keys, the id blocks)."""
from __future__ import annotations

from psycopg import sql

# -- the shards' catalog: what the proxy's API is generated from ---------------------------------

# Every function of schema runhub that a client role may call (runhub_app, runhub_ingest): its
# name, arguments with and without defaults, result, and which runhub roles may execute it.
API_FUNCTIONS = """
SELECT p.proname AS name,
       pg_get_function_identity_arguments(p.oid) AS identity_arguments,
       pg_get_function_arguments(p.oid) AS arguments,
       pg_get_function_result(p.oid) AS result,
       p.proretset AS returns_set,
       p.prorettype = 'void'::regtype AS returns_void,
       p.proisstrict AS strict,
       p.pronargs AS argument_count,
       coalesce(p.proargnames[1:p.pronargs], '{}') AS argument_names,
       array(SELECT r.rolname::text FROM aclexplode(p.proacl) a JOIN pg_roles r ON r.oid = a.grantee
              WHERE a.privilege_type = 'EXECUTE' AND r.rolname IN ('runhub_app', 'runhub_ingest', 'runhub_reader', 'runhub_sender')
              ORDER BY 1) AS grantees
  FROM pg_proc p
 WHERE p.pronamespace = 'runhub'::regnamespace AND p.prokind = 'f'
   AND EXISTS (SELECT 1 FROM aclexplode(p.proacl) a JOIN pg_roles r ON r.oid = a.grantee
                WHERE a.privilege_type = 'EXECUTE' AND r.rolname IN ('runhub_app', 'runhub_ingest'))
 ORDER BY p.proname, p.oid::regprocedure::text
"""

# The functions a proxy's schema holds now (runhub or runhub_remote); params (schema,); columns
# (schema.name(identity arguments), as regprocedure text to drop it by, result).
SCHEMA_FUNCTIONS = """
SELECT n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
       p.oid::regprocedure::text, pg_get_function_result(p.oid)
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %s
"""

DROP_FUNCTION = sql.SQL("DROP FUNCTION {}")  # format with sql.SQL(regprocedure text)
REVOKE_FUNCTIONS_FROM_PUBLIC = sql.SQL("REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {} FROM PUBLIC")
GRANT_FUNCTION = sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}")  # format with (signature, role)
ALTER_FUNCTION_OWNER = sql.SQL("ALTER FUNCTION {} OWNER TO runhub_owner")

# The shard's deployed code: the shards of a proxy must all run the same.
SHARD_CHECKSUM = "SELECT checksum FROM runhub.deployments ORDER BY id DESC LIMIT 1"
PROJECT_COUNT = "SELECT count(*) FROM runhub.projects"
IS_RUNHUB_DATABASE = "SELECT to_regclass('runhub.deployments') IS NOT NULL AS ok"
IS_PROXY_DATABASE = "SELECT to_regclass('runhub_proxy.partitions') IS NOT NULL AS ok"

# -- the proxy's own tables ------------------------------------------------------------------------

PARTITIONS = "SELECT partition, connstr FROM runhub_proxy.partitions ORDER BY partition"
ADD_PARTITION = "INSERT INTO runhub_proxy.partitions (partition, connstr) VALUES (%s, %s)"
# PL/Proxy's cluster, SQL/MED: its options are the partitions' connection strings, p0, p1, … (kept
# equal to runhub_proxy.partitions). modular_mapping: any number of partitions, not only powers of
# two (the routing functions return a partition's number itself, so hash % count is that number).
# Format with the partitions' options (sql.SQL(", ").join of "pN 'connstr'").
CREATE_SERVER = sql.SQL("CREATE SERVER runhub FOREIGN DATA WRAPPER plproxy "
                        "OPTIONS (modular_mapping '1', connection_lifetime '1800', {})")
SERVER_EXISTS = "SELECT EXISTS (SELECT 1 FROM pg_foreign_server WHERE srvname = 'runhub')"
# No user or password in the mapping: PL/Proxy connects to a shard as the calling login.
CREATE_USER_MAPPING = "CREATE USER MAPPING IF NOT EXISTS FOR PUBLIC SERVER runhub"
GRANT_SERVER = "GRANT USAGE ON FOREIGN SERVER runhub TO runhub_app, runhub_ingest, runhub_reader"
# PL/Proxy's cluster learns of a partition; format with (sql.Identifier('p<n>'), sql.Literal(connstr)).
ADD_SERVER_PARTITION = sql.SQL("ALTER SERVER runhub OPTIONS (ADD {} {})")
RECORD_PROXY_DEPLOYMENT = """INSERT INTO runhub_proxy.deployments (version, shard_checksum, functions)
VALUES (%s, %s, %s)"""
LOCK_PARTITIONS = "LOCK TABLE runhub_proxy.partitions IN SHARE ROW EXCLUSIVE MODE"

# Projects per partition, from the directory (projects made before the proxy count on their shards).
DIRECTORY_COUNTS = """
SELECT p.partition, count(d.project) AS projects
  FROM runhub_proxy.partitions p LEFT JOIN runhub_proxy.directory d ON d.partition = p.partition
 GROUP BY p.partition ORDER BY p.partition
"""

# Records the projects a shard already had when it joined; params (partition,) then rows of ids.
ADD_DIRECTORY_ROWS = """INSERT INTO runhub_proxy.directory (project, partition)
SELECT unnest(%s::uuid[]), %s ON CONFLICT (project) DO NOTHING"""
SHARD_PROJECT_IDS = "SELECT coalesce(array_agg(id), '{}') FROM runhub.projects"

# -- moving a project ----------------------------------------------------------------------------

# The project's row in the directory, locked for the move; params (project,); column partition.
# One move of a project at a time (held by the mover's holding transaction from its start).
LOCK_PROJECT_MOVES = "SELECT pg_advisory_xact_lock(runhub_proxy.lock_key() + 1, hashtext(%s::text))"
DIRECTORY_ROW = "SELECT partition FROM runhub_proxy.directory WHERE project = %s"
PARTITION_OF = "SELECT runhub_proxy.partition_of(%s)"
ADD_DIRECTORY_ROW = """INSERT INTO runhub_proxy.directory (project, partition) VALUES (%s, %s)
ON CONFLICT (project) DO NOTHING"""
# Waits for every call in flight for the project to end and holds new ones until the transaction ends.
LOCK_PROJECT_CALLS = "SELECT pg_advisory_xact_lock(runhub_proxy.lock_key(), hashtext(%s::text))"
SWITCH_PARTITION = "UPDATE runhub_proxy.directory SET partition = %s, moved_at = now() WHERE project = %s"
START_MOVE = """INSERT INTO runhub_proxy.moves (project, from_partition, to_partition) VALUES (%s, %s, %s)
RETURNING id"""
FINISH_MOVE = "UPDATE runhub_proxy.moves SET finished_at = now(), rows = %s WHERE id = %s"
RECORD_PAUSE = "UPDATE runhub_proxy.moves SET paused_ms = %s WHERE id = %s"
# Moves whose old shard still holds the shop's events (deleted after the switch); params (project or null,).
MOVES_TO_CLEAN = """SELECT id, project, from_partition FROM runhub_proxy.moves
 WHERE finished_at IS NOT NULL AND source_cleaned_at IS NULL AND (%s::uuid IS NULL OR project = %s::uuid)
 ORDER BY id"""
MARK_CLEANED = "UPDATE runhub_proxy.moves SET source_cleaned_at = now() WHERE id = %s"
SET_LOCAL_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', %s, true)"
# The move's sessions on both shards print values alike, whatever each server's defaults: the
# checksums compare rows as text.
MOVE_SESSION_OPTIONS = "-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=postgres -c extra_float_digits=3 -c bytea_output=hex"

# Shards: whether the project is there.
PROJECT_EXISTS = "SELECT EXISTS (SELECT 1 FROM runhub.projects WHERE id = %s)"
# Whether the project still counts its create_run calls in a sequence of its own (made before
# migration 0018): a regclass names an object of its database, meaningless on another.
PROJECT_HAS_OWN_COUNTER = "SELECT create_run_counter IS NOT NULL FROM runhub.projects WHERE id = %s"

# The source shard holds the project still: the sender's and the jobs' work on it waits or skips it.
# Its runs (execute_run, attribution take them), then its messages not yet in a sender's hands
# (claim_messages skips locked rows), then its row (every insert that names the project waits).
LOCK_SOURCE_RUNS = "SELECT 1 FROM runhub.workflow_runs WHERE project_id = %s ORDER BY id FOR UPDATE"
# Format both with (selection,): shards.OUTBOX_ROWS; params {project}.
LOCK_SOURCE_WAITING_MESSAGES = sql.SQL("""SELECT 1 FROM runhub.outbox
 WHERE {selection} AND (status = 'queued' OR (status = 'sending' AND lease_expires_at < clock_timestamp()))
 ORDER BY id FOR UPDATE""")
SOURCE_MESSAGES_IN_FLIGHT = sql.SQL("""SELECT count(*) FROM runhub.outbox
 WHERE {selection} AND status = 'sending' AND lease_expires_at >= clock_timestamp()""")
LOCK_SOURCE_PROJECT = "SELECT 1 FROM runhub.projects WHERE id = %s FOR UPDATE"

# Copies one table's rows of the project; format with (table, column list, selection: a condition
# of shards.MOVED_TABLES, maybe narrowed), params {project, ...}.
COPY_OUT = sql.SQL("COPY (SELECT {columns} FROM runhub.{table} WHERE {selection}) TO STDOUT (FORMAT binary)")
COPY_IN = sql.SQL("COPY runhub.{table} ({columns}) FROM STDIN (FORMAT binary)")
# Rows and a checksum of them (an order-free sum of each row's hash), the same on both sides.
TABLE_CHECKSUM = sql.SQL("""SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)::numeric), 0)::text
  FROM (SELECT {columns} FROM runhub.{table} WHERE {selection}) t""")
# The events copied before the calls wait: those of a snapshot, up to its newest id; the rest (newer,
# or older ids committed after the snapshot) once they do. Params {project, upto}.
EVENTS_UPTO = sql.SQL("project_id = %(project)s AND id <= %(upto)s")
EVENTS_AFTER = sql.SQL("project_id = %(project)s AND id > %(upto)s")
EVENTS_NEWEST_ID = "SELECT coalesce(max(id), 0) FROM runhub.business_events WHERE project_id = %(project)s"
EVENT_IDS_UPTO = "SELECT id FROM runhub.business_events WHERE project_id = %(project)s AND id <= %(upto)s"
EVENT_COUNT_UPTO = "SELECT count(*) FROM runhub.business_events WHERE project_id = %(project)s AND id <= %(upto)s"
EVENTS_WITH_IDS = sql.SQL("id = ANY(%(ids)s)")
TABLE_COLUMNS = """SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute
 WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped"""
AS_REPLICA = "SET LOCAL session_replication_role = replica"
SET_REPLICA = "SET session_replication_role = replica"
DELETE_PROJECT_ROWS = sql.SQL("DELETE FROM runhub.{table} WHERE {selection}")
# A batch of a moved shop's events on its old shard, once the shop is gone from there; params {project}.
DELETE_LEFT_EVENTS = """DELETE FROM runhub.business_events
 WHERE id = ANY(ARRAY(SELECT e.id FROM runhub.business_events e WHERE e.project_id = %(project)s LIMIT 10000))
   AND NOT EXISTS (SELECT 1 FROM runhub.projects p WHERE p.id = %(project)s)"""

COMMIT_PREPARED = sql.SQL("COMMIT PREPARED {}")
ROLLBACK_PREPARED = sql.SQL("ROLLBACK PREPARED {}")
# Moves a shard prepared and never finished (a mover stopped between its two commits); params (pattern,).
PREPARED_MOVES = "SELECT gid FROM pg_prepared_xacts WHERE gid LIKE %s AND database = current_database()"
MAX_PREPARED_TRANSACTIONS = "SELECT current_setting('max_prepared_transactions')::int"

# -- the shards' shared unsubscribe keys, and their id blocks -------------------------------------

UNSUBSCRIBE_KEYS = "SELECT kid, secret, created_at, revoked_at FROM runhub.unsubscribe_keys ORDER BY kid"
DELETE_UNSUBSCRIBE_KEYS = "DELETE FROM runhub.unsubscribe_keys"
UPSERT_UNSUBSCRIBE_KEY = """INSERT INTO runhub.unsubscribe_keys (kid, secret, created_at, revoked_at)
VALUES (%s, %s, %s, %s)
ON CONFLICT (kid) DO UPDATE SET revoked_at = EXCLUDED.revoked_at
 WHERE runhub.unsubscribe_keys.secret = EXCLUDED.secret"""
# The key of the holdout hash (a re-executed run, on whichever shard its shop is now, must hold out the
# same people): partition 0's, given to a shard that has held nobody out yet.
HOLDOUT_KEY = "SELECT value FROM runhub.secrets WHERE name = 'holdout'"
HOLDOUT_EVER_USED = "SELECT EXISTS (SELECT 1 FROM runhub.workflow_run_recipients WHERE status = 'held_out')"
SET_HOLDOUT_KEY = """INSERT INTO runhub.secrets (name, value) VALUES ('holdout', %s)
ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, created_at = now()"""
OUTBOX_EVER_USED = "SELECT EXISTS (SELECT 1 FROM runhub.outbox) OR EXISTS (SELECT 1 FROM runhub.digests)"

# The identity sequences of the tables a move copies; columns (table, sequence, last value, max id).
ID_SEQUENCES = """
SELECT c.relname::text, s.seqrelid::regclass::text, coalesce(q.last_value, s.seqstart), s.seqmin, s.seqmax
  FROM pg_class c
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attidentity <> ''
  JOIN pg_depend d ON d.refobjid = c.oid AND d.refobjsubid = a.attnum AND d.deptype = 'i' AND d.classid = 'pg_class'::regclass
  JOIN pg_sequence s ON s.seqrelid = d.objid
  JOIN pg_sequences q ON q.schemaname = 'runhub' AND q.sequencename = (SELECT relname FROM pg_class WHERE oid = s.seqrelid)
 WHERE c.relnamespace = 'runhub'::regnamespace AND c.relname = ANY(%s)
"""
# Gives a sequence its partition's block; format with (sequence, min, max, restart).
SET_ID_BLOCK = sql.SQL("ALTER SEQUENCE {} MINVALUE {} MAXVALUE {} START WITH {} RESTART WITH {}")
SET_ID_BLOCK_KEEP = sql.SQL("ALTER SEQUENCE {} MINVALUE {} MAXVALUE {}")

# -- status ---------------------------------------------------------------------------------------

LAST_PROXY_DEPLOYMENT = """SELECT version, shard_checksum, functions, deployed_at FROM runhub_proxy.deployments
 ORDER BY id DESC LIMIT 1"""
RECENT_MOVES = """SELECT project, from_partition, to_partition, started_at, finished_at, paused_ms, source_cleaned_at
  FROM runhub_proxy.moves ORDER BY id DESC LIMIT 5"""
