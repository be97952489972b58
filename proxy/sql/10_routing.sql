-- Where a call goes: the functions that name the partition of a call's project (RUN ON; the
-- partitions themselves are the options of SERVER runhub). Re-applied by every proxy deploy.

-- Projects and the moves: an exclusive lock on a project's key is what `runhub proxy move` holds
-- while it switches the project's partition; every call for the project takes it shared first.
CREATE OR REPLACE FUNCTION runhub_proxy.lock_key() RETURNS int LANGUAGE sql IMMUTABLE
AS $$ SELECT 1381322312 $$;  -- 'RUNH' (partition_of writes it out: it is on every call's path)

-- The partition a new project goes to: by the hash of its id, so a retried create_project lands
-- where the first attempt went even if the proxy lost that attempt's directory row.
CREATE OR REPLACE FUNCTION runhub_proxy.hash_partition(project uuid)
RETURNS int
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ((hashtext(project::text)::bigint & 2147483647) % (SELECT count(*) FROM runhub_proxy.partitions))::int
$$;

-- The partition that owns a project. Waits while a move holds the project, then reads the
-- directory in a statement of its own: after a move it sees the new partition.
-- On every call, so no SET search_path (its save and restore was a third of the function's
-- time): everything in it is schema-qualified, and a caller's search_path cannot reach the rest
-- (pg_temp is never searched for functions or operators; no runhub role may create a schema).
CREATE OR REPLACE FUNCTION runhub_proxy.partition_of(project uuid)
RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
AS $$
DECLARE
    v_partition int;
BEGIN
    PERFORM pg_catalog.pg_advisory_xact_lock_shared(1381322312, pg_catalog.hashtext(partition_of.project::pg_catalog.text));
    SELECT d.partition INTO v_partition FROM runhub_proxy.directory d WHERE d.project OPERATOR(pg_catalog.=) partition_of.project;
    -- Not in the directory: a project that does not exist (its shard says so, as one database
    -- would), or one whose creation the proxy did not record (it is on its hash partition).
    RETURN coalesce(v_partition, runhub_proxy.hash_partition(partition_of.project));
END
$$;

-- create_project: records the new project's partition (nothing, for a replay) in the caller's
-- transaction, so a refused creation leaves no directory row behind.
CREATE OR REPLACE FUNCTION runhub_proxy.place_project(project uuid)
RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO runhub_proxy.directory (project, partition)
    VALUES (place_project.project, runhub_proxy.hash_partition(place_project.project))
    ON CONFLICT DO NOTHING;
    RETURN runhub_proxy.partition_of(place_project.project);
END
$$;

-- unsubscribe: the project named in the token's payload (v2.<key>.<payload>.<mac> or
-- v1.<payload>.<mac>, payload base64url of '<project>:<email>'). The shard verifies the token;
-- anything unreadable here goes to partition 0, which refuses it as one database would.
CREATE OR REPLACE FUNCTION runhub_proxy.partition_of_token(token text)
RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_payload text;
    v_project text;
BEGIN
    IF octet_length(token) > 2000 THEN
        RETURN 0;
    END IF;
    v_payload := CASE WHEN split_part(token, '.', 1) = 'v2' THEN split_part(token, '.', 3)
                      WHEN split_part(token, '.', 1) = 'v1' THEN split_part(token, '.', 2) END;
    IF v_payload IS NULL OR v_payload !~ '^[A-Za-z0-9_-]{48,}$' THEN  -- 36 bytes of uuid and more
        RETURN 0;
    END IF;
    v_project := encode(substr(decode(translate(left(v_payload, 48), '-_', '+/'), 'base64'), 1, 36), 'escape');
    IF v_project !~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        RETURN 0;
    END IF;
    RETURN runhub_proxy.partition_of(v_project::uuid);
END
$$;

-- A shard's error, as the shard raised it. PL/Proxy keeps the SQLSTATE but words the rest its own
-- way ("runhub.f(2): [db] REMOTE ERROR: <message>", "Remote detail: <detail>", "Remote hint: ...");
-- the API's wrappers raise it again as the clients know it. Errors of the proxy's own pass as they are.
CREATE OR REPLACE FUNCTION runhub_proxy.reraise(sqlstate text, message text, detail text, hint text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF message ~ '^\S+\(\d+\): \[[^]]*\] REMOTE ERROR: ' THEN
        message := regexp_replace(message, '^\S+\(\d+\): \[[^]]*\] REMOTE ERROR: ', '');
        detail := regexp_replace(detail, '^Remote detail: ', '');
        hint := regexp_replace(hint, '^Remote hint: ', '');
    END IF;
    -- RAISE takes no null option: one statement per combination the error has
    IF detail IS NOT NULL AND hint IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = sqlstate, MESSAGE = message, DETAIL = detail, HINT = hint;
    ELSIF detail IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = sqlstate, MESSAGE = message, DETAIL = detail;
    ELSIF hint IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = sqlstate, MESSAGE = message, HINT = hint;
    END IF;
    RAISE EXCEPTION USING ERRCODE = sqlstate, MESSAGE = message;
END
$$;
