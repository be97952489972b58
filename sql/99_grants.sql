-- Who may call what. Nothing in the schema is callable by PUBLIC; each role gets exactly the
-- functions the contract gives it (docs/sql-contract.md). Applied last, after every function exists:
-- a per-schema ALTER DEFAULT PRIVILEGES cannot take away PUBLIC's default EXECUTE, so this revoke
-- is what protects every function, including those added by later files.

REVOKE ALL ON ALL ROUTINES IN SCHEMA runhub FROM PUBLIC, runhub_app, runhub_ingest, runhub_sender, runhub_reader, runhub_analyst;

-- The application's server side: the API, no table access. Every call that acts for a person
-- names the actor, and the function checks the actor's membership and role.
GRANT EXECUTE ON FUNCTION
    runhub.create_project(text, uuid, text, text, text, text, uuid),
    runhub.add_member(uuid, uuid, uuid, text),
    runhub.list_events(uuid, uuid, text, jsonb, int),
    runhub.update_project_settings(uuid, uuid, jsonb),
    runhub.list_actions(uuid, uuid),
    runhub.preview(uuid, uuid, text, jsonb),
    runhub.create_run(uuid, uuid, text, text, jsonb, timestamptz, uuid),
    runhub.get_run(uuid, uuid, uuid),
    runhub.list_runs(uuid, uuid, jsonb),
    runhub.cancel_run(uuid, uuid, uuid),
    runhub.workflow_outcome(uuid, uuid, uuid),
    runhub.explain_attribution(uuid, uuid, bigint),
    runhub.explain_recipient(uuid, uuid, text, text, jsonb),
    runhub.action_lift(uuid, uuid, text),
    runhub.attribution_reasons(),
    runhub.suppress(uuid, uuid, text, text),
    runhub.unsubscribe(text),
    runhub.criteria_text(text, jsonb, jsonb, text),
    runhub.exclusion_label(text, int, text),
    runhub.next_digest_at(text, int, timestamptz), runhub.local_day_range(date, text),
    runhub.error_catalog()
TO runhub_app;

-- The shop's webhook receiver: events in, nothing else (it acts for a system, not a person).
GRANT EXECUTE ON FUNCTION runhub.ingest_event(uuid, jsonb), runhub.ingest_events(uuid, jsonb) TO runhub_ingest;

-- The daemon: it wakes on NOTIFY and drives runs (the outbox functions come with the sender).
GRANT EXECUTE ON FUNCTION
    runhub.process_runs(int),
    runhub.claim_runs(text, int, int),
    runhub.execute_run(uuid, text),
    runhub.heartbeat_run(uuid, text, int),
    runhub.claim_messages(text, int, int),
    runhub.heartbeat_messages(text, bigint[], int),
    runhub.release_messages(text, bigint[]),
    runhub.defer_messages(text, bigint[], text),
    runhub.report_relay(text, text, text),
    runhub.start_messages(text, bigint[]),
    runhub.record_sent(bigint, text, text),
    runhub.record_sent_many(text, bigint[], text[]),
    runhub.record_failure(bigint, text, int, text),
    runhub.unsubscribe_token(uuid, text),
    runhub.sender_idle(),
    runhub.digest_batch(int, bigint),
    runhub.metrics()
TO runhub_sender;
-- The digest job's catch-up (the procedure runs with its caller's rights: it calls digest_batch).
GRANT EXECUTE ON PROCEDURE runhub.run_due_digests(int) TO runhub_sender;

-- Direct reads for a signed-in user: what the RLS policies call.
GRANT EXECUTE ON FUNCTION runhub.current_user_id(), runhub._my_project_ids(), runhub.error_catalog()
TO runhub_reader;

-- The platform's operators: an action's lift pooled over every shop, no shop's own figures.
GRANT EXECUTE ON FUNCTION runhub.platform_lift(text) TO runhub_analyst;
