-- The trust boundary: a NOLOGIN, non-superuser owner for runhub's tables and functions (so no
-- SECURITY DEFINER function runs with superuser rights), and runhub_ingest for the shop's webhook
-- receiver. Ownership itself is handed over by sql/98_ownership.sql on every deploy, so objects
-- added later are covered too.
-- depends: 0005_started_at

-- Roles are cluster-wide: another database on this server may have made them already.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'runhub_owner') THEN
        CREATE ROLE runhub_owner NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'runhub_ingest') THEN
        CREATE ROLE runhub_ingest NOLOGIN;
    END IF;
END
$$;

-- The owner creates per-project counters (sequences) from inside create_project. The schema
-- itself stays with the deploying superuser: the owner cannot drop what it does not own (the
-- PL/Python module table, the deploy history).
GRANT USAGE, CREATE ON SCHEMA runhub TO runhub_owner;
GRANT USAGE ON SCHEMA runhub TO runhub_ingest;

-- Every table with project data has row-level security, also those no reader is granted: a grant
-- added by mistake later still shows nothing. (Their owner, runhub_owner, is not subject to it.)
ALTER TABLE runhub.previews ENABLE ROW LEVEL SECURITY;
ALTER TABLE runhub.outbox ENABLE ROW LEVEL SECURITY;
