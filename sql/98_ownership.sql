-- Least privilege inside: every table, view, sequence and function of schema runhub belongs to
-- runhub_owner (NOLOGIN, not a superuser, created by migration 0006), so SECURITY DEFINER
-- functions run with its rights, never a superuser's. Re-applied on every deploy: whatever a
-- migration or this deploy created as the deploying superuser is handed over here.
-- Two tables stay with the superuser that deploys: runhub.plpython_modules (the Python code
-- PL/Python runs with the server's OS rights: only a superuser may change it) and
-- runhub.deployments (the deploy history).
DO $$
DECLARE
    v_object record;
BEGIN
    FOR v_object IN
        SELECT format('ALTER %s %s OWNER TO runhub_owner',
                      CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
                      c.oid::regclass) AS stmt
          FROM pg_class c
         WHERE c.relnamespace = 'runhub'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'S')
           AND c.relowner <> 'runhub_owner'::regrole
           AND c.oid NOT IN ('runhub.plpython_modules'::regclass, 'runhub.deployments'::regclass)
           -- identity sequences follow their table
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                              AND d.objid = c.oid AND d.deptype IN ('a', 'i'))
        UNION ALL
        SELECT format('ALTER ROUTINE %s OWNER TO runhub_owner', p.oid::regprocedure)
          FROM pg_proc p
         WHERE p.pronamespace = 'runhub'::regnamespace AND p.proowner <> 'runhub_owner'::regrole
    LOOP
        EXECUTE v_object.stmt;
    END LOOP;
END
$$;

-- PL/Python wrappers load their modules with the caller's rights: the owner's, inside the API.
GRANT SELECT ON runhub.plpython_modules TO runhub_owner;
