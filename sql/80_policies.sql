-- Row-level security for runhub_reader: a signed-in user (SET LOCAL runhub.user_id) sees the rows
-- of the projects they are a member of, and nothing else. Policies have no CREATE OR REPLACE,
-- so each is dropped and recreated on every deploy, inside the deploy's transaction.

DROP POLICY IF EXISTS projects_member_read ON runhub.projects;
CREATE POLICY projects_member_read ON runhub.projects
    FOR SELECT TO runhub_reader
    USING (id IN (SELECT runhub._my_project_ids()));

DROP POLICY IF EXISTS project_members_member_read ON runhub.project_members;
CREATE POLICY project_members_member_read ON runhub.project_members
    FOR SELECT TO runhub_reader
    USING (project_id IN (SELECT runhub._my_project_ids()));

DROP POLICY IF EXISTS business_events_member_read ON runhub.business_events;
CREATE POLICY business_events_member_read ON runhub.business_events
    FOR SELECT TO runhub_reader
    USING (project_id IN (SELECT runhub._my_project_ids()));

DROP POLICY IF EXISTS customers_member_read ON runhub.customers;
CREATE POLICY customers_member_read ON runhub.customers
    FOR SELECT TO runhub_reader
    USING (project_id IN (SELECT runhub._my_project_ids()));

DROP POLICY IF EXISTS suppressions_member_read ON runhub.suppressions;
CREATE POLICY suppressions_member_read ON runhub.suppressions
    FOR SELECT TO runhub_reader
    USING (project_id IN (SELECT runhub._my_project_ids()));

DROP POLICY IF EXISTS workflow_runs_member_read ON runhub.workflow_runs;
CREATE POLICY workflow_runs_member_read ON runhub.workflow_runs
    FOR SELECT TO runhub_reader
    USING (project_id IN (SELECT runhub._my_project_ids()));

DROP POLICY IF EXISTS workflow_run_recipients_member_read ON runhub.workflow_run_recipients;
CREATE POLICY workflow_run_recipients_member_read ON runhub.workflow_run_recipients
    FOR SELECT TO runhub_reader
    USING (project_id IN (SELECT runhub._my_project_ids()));
