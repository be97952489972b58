-- The API's parameters take the names the contract shows (project, actor, action, params, ...), so
-- a call in named notation works: `runhub.preview(project => ..., actor => ..., action => ...)`.
-- They were p_project, p_actor, ...; PostgreSQL cannot rename a function's parameters in place
-- (CREATE OR REPLACE refuses), so the old definitions go here and sql/ creates the new ones in the
-- same deploy transaction (callers never see the API missing: DDL commits with it).
-- depends: 0019_job_and_execution_locks

DROP FUNCTION IF EXISTS
    runhub.create_project(text, uuid, text, text, text, text),
    runhub.add_member(uuid, uuid, uuid, text),
    runhub.update_project_settings(uuid, uuid, jsonb),
    runhub.next_digest_at(text, int, timestamptz),
    runhub.local_day_range(date, text),
    runhub.ingest_event(uuid, jsonb),
    runhub.ingest_events(uuid, jsonb),
    runhub.list_events(uuid, uuid, text, jsonb, int),
    runhub.exclusion_label(text, int),
    runhub.criteria_text(text, jsonb, jsonb),
    runhub.workflow_outcome(uuid, uuid, uuid),
    runhub.explain_attribution(uuid, uuid, bigint),
    runhub.digest_batch(int, bigint),
    runhub.list_actions(uuid, uuid),
    runhub.preview(uuid, uuid, text, jsonb),
    runhub.create_run(uuid, uuid, text, text, jsonb, timestamptz, uuid),
    runhub.list_runs(uuid, uuid, jsonb),
    runhub.get_run(uuid, uuid, uuid),
    runhub.cancel_run(uuid, uuid, uuid),
    runhub.suppress(uuid, uuid, text, text),
    runhub.process_runs(int),
    runhub.claim_runs(text, int, int),
    runhub.heartbeat_run(uuid, text, int),
    runhub.execute_run(uuid, text),
    runhub.unsubscribe_token(uuid, text),
    runhub.unsubscribe(text),
    runhub.claim_messages(text, int, int),
    runhub.heartbeat_messages(text, bigint[], int),
    runhub.start_messages(text, bigint[]),
    runhub.release_messages(text, bigint[]),
    runhub.defer_messages(text, bigint[], text),
    runhub.report_relay(text, text, text),
    runhub.record_sent(bigint, text, text),
    runhub.record_sent_many(text, bigint[], text[]),
    runhub.record_failure(bigint, text, int, text);
