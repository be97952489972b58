-- Row-level security for runhub_reader: a signed-in user (SET LOCAL runhub.user_id) sees the rows
-- of the projects they are a member of, and nothing else. Policies have no CREATE OR REPLACE,
-- so each is dropped and recreated on every deploy, inside the deploy's transaction.
DO $$
DECLARE
    v_table  text;
    v_column text;
BEGIN
    FOR v_table, v_column IN VALUES
        ('projects', 'id'), ('project_members', 'project_id'), ('business_events', 'project_id'),
        ('customers', 'project_id'), ('suppressions', 'project_id'), ('workflow_runs', 'project_id'),
        ('workflow_run_recipients', 'project_id'), ('workflow_attributions', 'project_id'),
        ('digests', 'project_id')
    LOOP
        EXECUTE format('DROP POLICY IF EXISTS %I ON runhub.%I', v_table || '_member_read', v_table);
        EXECUTE format('CREATE POLICY %I ON runhub.%I FOR SELECT TO runhub_reader '
                       'USING (%I IN (SELECT runhub._my_project_ids()))', v_table || '_member_read', v_table, v_column);
    END LOOP;
END
$$;
