-- The proxy database: runhub's API in front of several shard databases, routed by PL/Proxy.
-- A shard is a plain runhub database; this one holds no shop data, only which partition (shard)
-- owns each project, and the functions that forward every call to it.

CREATE EXTENSION IF NOT EXISTS plproxy;

DO $$
DECLARE
    v_role text;
BEGIN  -- roles belong to the cluster: a shard on this cluster may have made them already
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'runhub_owner') THEN
        CREATE ROLE runhub_owner NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT;
    END IF;
    FOREACH v_role IN ARRAY ARRAY['runhub_app', 'runhub_ingest', 'runhub_sender', 'runhub_reader', 'runhub_analyst'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_role) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
        END IF;
    END LOOP;
END
$$;

CREATE SCHEMA runhub_proxy;   -- the directory and the routing functions: nobody's but the deployer's
CREATE SCHEMA runhub_remote;  -- the PL/Proxy functions: one per API function, errors as PL/Proxy words them
CREATE SCHEMA runhub;         -- the API, the shards' names and arguments, errors as the shards word them
REVOKE ALL ON SCHEMA runhub_proxy, runhub_remote, runhub FROM PUBLIC;
GRANT USAGE ON SCHEMA runhub, runhub_remote, runhub_proxy TO runhub_app, runhub_ingest, runhub_reader;

-- PL/Proxy's cluster is SQL/MED SERVER runhub (cheaper per call than configuration functions,
-- which PL/Proxy asks for a version on every call): `runhub proxy deploy` creates it with the
-- partitions (PL/Proxy refuses a cluster of none), `add-shard` adds to it.

-- The shard databases, numbered from 0 with no gap (PL/Proxy's partition numbers). connstr is
-- a libpq connection string without user or password: PL/Proxy connects as the calling login.
CREATE TABLE runhub_proxy.partitions (
    partition int         PRIMARY KEY CHECK (partition >= 0),
    connstr   text        NOT NULL CHECK (connstr <> ''),
    added_at  timestamptz NOT NULL DEFAULT now()
);

-- Which partition owns each project. A project missing here lives on its hash partition (where
-- it was created: see runhub_proxy.place_project).
CREATE TABLE runhub_proxy.directory (
    project   uuid        PRIMARY KEY,
    partition int         NOT NULL REFERENCES runhub_proxy.partitions,
    placed_at timestamptz NOT NULL DEFAULT now(),
    moved_at  timestamptz
);
CREATE INDEX directory_partition ON runhub_proxy.directory (partition);

-- Every move of a project between partitions, with the rows it copied (per table) and how long
-- the shop's calls waited. source_cleaned_at: when the old shard's copy of its events was deleted
-- (after the switch, in batches, so the calls need not wait for it).
CREATE TABLE runhub_proxy.moves (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project           uuid        NOT NULL,
    from_partition    int         NOT NULL,
    to_partition      int         NOT NULL,
    started_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz,
    rows              jsonb,
    paused_ms         numeric,
    source_cleaned_at timestamptz
);
CREATE INDEX moves_project ON runhub_proxy.moves (project, started_at DESC);

-- Each `runhub proxy deploy`: the shards' code it generated the API from.
CREATE TABLE runhub_proxy.deployments (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version        text        NOT NULL,
    shard_checksum text        NOT NULL,
    functions      int         NOT NULL,
    deployed_at    timestamptz NOT NULL DEFAULT now(),
    deployed_by    text        NOT NULL DEFAULT current_user
);
