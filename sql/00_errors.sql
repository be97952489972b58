-- The error contract: every refusal is raised through runhub._raise with an i18n key from this
-- catalog, so SQLSTATE, MESSAGE (the key), DETAIL (JSON params) and HINT (plain English) never drift.

-- The catalog of refusals: i18n key, SQLSTATE, English hint with {param} placeholders.
CREATE OR REPLACE FUNCTION runhub.error_catalog()
RETURNS TABLE (key text, sqlstate text, hint text)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    VALUES
    ('common.invalidInput',          'PT400', '{field} is invalid: {reason}'),
    ('common.unknownField',          'PT400', '{field} is not a known field'),
    ('projects.notFound',            'PT404', 'No project {projectId} exists, or you are not a member of it'),
    ('projects.invalidTimezone',     'PT400', '{timezone} is not an IANA time zone name known to this server'),
    ('projects.invalidCurrency',     'PT400', '{currency} is not an ISO 4217 currency code'),
    ('projects.invalidLocale',       'PT400', '{locale} is not a supported locale ({supported})'),
    ('projects.lastOwner',           'PT409', 'A project must keep at least one owner'),
    ('projects.idInUse',             'PT409', 'Project {projectId} already exists, with another owner'),
    ('projects.digestRecipientRequired', 'PT422', 'Set dailyDigestRecipient before turning daily digests on'),
    ('auth.roleRequired',            'PT403', 'This needs the {required} role; you are {role}'),
    ('events.invalid',               'PT400', 'Event field {field} is invalid: {reason}'),
    ('events.reservedForRunhub',     'PT400', 'Event field {field} may not be {value}: runhub writes such events itself'),
    ('events.unknownField',          'PT400', 'Event field {field} is not part of the event contract'),
    ('events.payloadTooLarge',       'PT413', 'The event payload is {bytes} bytes; the limit is {maxBytes}'),
    ('events.batchTooLarge',         'PT413', 'The events are {bytes} bytes as stored; the limit is {maxBytes} a call'),
    ('events.notFound',              'PT404', 'There is no event {eventId} in this project'),
    ('events.appendOnly',            'PT409', 'runhub.{table} is append-only: {operation} is refused'),
    ('events.invalidCursor',         'PT400', 'The cursor does not fit the {sort} order: {reason}'),
    ('events.invalidSort',           'PT400', 'sort must be timeline or ingestion, not {sort}'),
    ('events.invalidPageSize',       'PT400', 'page_size must be between 1 and {max}, not {pageSize}'),
    ('workflows.actionNotFound',     'PT404', 'There is no action {actionId}'),
    ('workflows.runNotFound',        'PT404', 'There is no run {runId} in this project'),
    ('workflows.invalidParams',      'PT400', 'Parameter {field} is invalid: {reason}'),
    ('workflows.unknownParam',       'PT400', '{actionId} takes no parameter {field}'),
    ('workflows.paramsTooLarge',     'PT413', 'The parameters are {bytes} bytes; the limit is {maxBytes}'),
    ('workflows.idempotencyKeyReused', 'PT409', 'This idempotency key was used for run {runId} with other parameters'),
    ('workflows.runNotCancellable',  'PT409', 'Run {runId} is {status}: there is nothing left to cancel'),
    ('workflows.policy.actorNotMember', 'PT403', 'Whoever triggered this run is no longer a member of the project'),
    ('workflows.policy.ownerRequired', 'PT403', 'Only the project owner can run this action; you are {role}'),
    ('workflows.policy.rateLimited', 'PT429', 'At most {limit} workflow triggers per minute per project; retry in {retryAfterSeconds} s'),
    ('workflows.policy.cooldownActive', 'PT409', 'This action ran less than {cooldownMinutes} minutes ago; wait {minutes} more minutes'),
    ('workflows.policy.alreadyQueued', 'PT409', 'A run of this action is already queued and has sent nothing yet; it can run again in {minutes} minutes'),
    ('workflows.policy.previewRequired', 'PT422', 'Preview this action with the same parameters (within {maxAgeMinutes} minutes) before running it'),
    ('workflows.policy.noRecipients', 'PT422', 'No recipients match the criteria ({count}; at least {min} needed)'),
    ('workflows.policy.tooManyRecipients', 'PT422', 'Too many recipients ({count}); the maximum is {max}'),
    ('workflows.requires.integration', 'PT422', 'Connect the {integration} integration first'),
    ('workflows.requires.setting',   'PT422', 'Set the project setting {setting} first'),
    ('workflows.requires.events',    'PT422', 'This needs at least {minCount} {eventType} event(s) first'),
    ('workflows.requires.recipients', 'PT422', 'This needs customers to send to ({source})'),
    ('workflows.requires.unknown',   'PT422', 'A prerequisite of type {type} is not met'),
    ('mail.invalidUnsubscribeToken', 'PT400', 'This unsubscribe link is not valid')
$$;

-- The catalog's English hint for key with params filled in (null for an unknown key).
CREATE OR REPLACE FUNCTION runhub._hint(p_key text, p_params jsonb DEFAULT '{}')
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_hint  text;
    v_param record;
BEGIN
    SELECT c.hint INTO v_hint FROM runhub.error_catalog() c WHERE c.key = p_key;
    FOR v_param IN SELECT * FROM jsonb_each_text(coalesce(p_params, '{}')) LOOP
        v_hint := replace(v_hint, '{' || v_param.key || '}', coalesce(v_param.value, 'null'));
    END LOOP;
    RETURN v_hint;
END
$$;

-- Params as they are echoed in DETAIL and HINT: each value cut to 200 characters with a marker,
-- so that bad input (a 5 MB order, a megabyte of JSON) cannot flood a response or the server log.
CREATE OR REPLACE FUNCTION runhub._bounded(p_params jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(jsonb_object_agg(p.key, CASE WHEN length(p.text) <= 200 THEN p.value
               ELSE to_jsonb(left(p.text, 200) || format('… (%s more characters)', length(p.text) - 200)) END), '{}')
      FROM jsonb_each(CASE WHEN jsonb_typeof(p_params) = 'object' THEN p_params ELSE '{}' END) e,
           LATERAL (SELECT e.key, e.value,
                           CASE jsonb_typeof(e.value) WHEN 'string' THEN e.value #>> '{}' ELSE e.value::text END) p(key, value, text)
$$;

-- Raise the catalog's error for key, with params as JSON detail and the hint filled in.
CREATE OR REPLACE FUNCTION runhub._raise(p_key text, p_params jsonb DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_state  text;
    v_params jsonb := runhub._bounded(p_params);
BEGIN
    SELECT c.sqlstate INTO v_state FROM runhub.error_catalog() c WHERE c.key = p_key;
    IF v_state IS NULL THEN  -- a programming error, not bad input: fail loudly
        RAISE EXCEPTION 'runhub._raise: % is not in runhub.error_catalog()', p_key USING ERRCODE = 'XX000';
    END IF;
    RAISE EXCEPTION USING ERRCODE = v_state, MESSAGE = p_key,
        DETAIL = v_params::text, HINT = runhub._hint(p_key, v_params);
END
$$;

-- Shorthand for the most common refusal: one invalid field of an input.
CREATE OR REPLACE FUNCTION runhub._invalid(p_key text, p_field text, p_reason text)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT runhub._raise(p_key, jsonb_build_object('field', p_field, 'reason', p_reason)) $$;
