-- The per-project counter of create_run calls says what it counts: projects.trigger_counter
-- becomes projects.create_run_counter, and each project's sequence trigger_counter_<id> becomes
-- create_run_counter_<id>, the name runhub._create_run_counter gives new ones (the column holds
-- the sequence's oid, so it follows the rename; counts are kept). The trigger that drops a deleted
-- project's counter comes back from sql/10_projects.sql as projects_drop_create_run_counter.
-- depends: 0016_clock_offset

ALTER TABLE runhub.projects RENAME COLUMN trigger_counter TO create_run_counter;
DROP TRIGGER IF EXISTS projects_drop_trigger_counter ON runhub.projects;  -- none on a fresh database
DO $$
DECLARE
    v_project record;
BEGIN
    FOR v_project IN SELECT id, create_run_counter FROM runhub.projects LOOP
        EXECUTE format('ALTER SEQUENCE %s RENAME TO %I', v_project.create_run_counter,
                       'create_run_counter_' || replace(v_project.id::text, '-', ''));
    END LOOP;
END
$$;
