-- runhub's fixed lists and bounds, in one place that SQL and Python both read: SQL through
-- runhub._constants() (IMMUTABLE, so a planner folds it into a constant), the Python package by
-- parsing the JSON between the $constants$ markers below (runhub_loader/constants.py; no database
-- needed to render mail). Change a value here and both follow on the next deploy; a pgTAP test
-- holds the action registry, the migration's locale CHECK and the templates to these lists.
-- No SET clause (it names nothing): inlined where it is used.
CREATE OR REPLACE FUNCTION runhub._constants()
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $body$ SELECT $constants$
{
    "locales": ["en", "ar", "fr", "es", "de"],
    "defaultLocale": "en",
    "templates": ["recovery", "promo", "update", "onboarding", "digest"],
    "actionIds": ["recover_abandoned", "send_promo", "onboard_users"],
    "recommendationOrder": ["recover_abandoned", "onboard_users", "send_promo"],
    "maxSendAttempts": 8,
    "maxExecutionAttempts": 5,
    "maxClaimBatch": 1000,
    "minLeaseSeconds": 5,
    "maxRunLeaseSeconds": 86400,
    "maxMessageLeaseSeconds": 3600,
    "defaultHoldoutPercent": 10,
    "maxHoldoutPercent": 50,
    "maxEventTypeLength": 64,
    "maxKeyLength": 255,
    "maxCustomerNameLength": 200,
    "maxLocaleLength": 35,
    "maxAddressInputLength": 1000,
    "maxAmountCents": 9007199254740991,
    "maxIngestBatch": 5000,
    "maxIngestBatchBytes": 33554432,
    "maxPayloadBytes": 32768,
    "maxWorkflowParamsBytes": 32768,
    "maxPageSize": 500,
    "createRunsPerMinute": 10,
    "staleRunMinutes": 30,
    "digestBatch": 1000,
    "maxDigestBatch": 10000
}
$constants$::jsonb $body$;

-- One integer of runhub._constants(). No SET clause: inlined, so folded into a constant.
CREATE OR REPLACE FUNCTION runhub._constant(p_name text)
RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (runhub._constants() ->> p_name)::int $$;

-- The supported locales (languages of the mail catalogs). No SET clause: inlined.
CREATE OR REPLACE FUNCTION runhub._locales()
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT ARRAY(SELECT pg_catalog.jsonb_array_elements_text(runhub._constants() -> 'locales')) $$;
