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
    ('projects.invalidLocale',       'PT400', '{locale} is not a supported locale (en, ar, fr, es, de)'),
    ('projects.lastOwner',           'PT409', 'A project must keep at least one owner'),
    ('auth.roleRequired',            'PT403', 'This needs the {required} role; you are {role}'),
    ('events.invalid',               'PT400', 'Event field {field} is invalid: {reason}'),
    ('events.unknownField',          'PT400', 'Event field {field} is not part of the event contract'),
    ('events.payloadTooLarge',       'PT413', 'The event payload is {bytes} bytes; the limit is {maxBytes}'),
    ('events.appendOnly',            'PT409', 'Business events are append-only: {operation} is refused'),
    ('events.invalidCursor',         'PT400', 'The cursor does not fit the {order} order: {reason}'),
    ('events.invalidOrder',          'PT400', 'order must be timeline or ingestion, not {order}'),
    ('events.invalidLimit',          'PT400', 'limit must be between 1 and {max}, not {limit}')
$$;

-- Raise the catalog's error for key, with params as JSON detail and the hint filled in.
CREATE OR REPLACE FUNCTION runhub._raise(p_key text, p_params jsonb DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_state text;
    v_hint  text;
    v_param record;
BEGIN
    SELECT c.sqlstate, c.hint INTO v_state, v_hint FROM runhub.error_catalog() c WHERE c.key = p_key;
    IF v_state IS NULL THEN  -- a programming error, not bad input: fail loudly
        RAISE EXCEPTION 'runhub._raise: % is not in runhub.error_catalog()', p_key USING ERRCODE = 'XX000';
    END IF;
    FOR v_param IN SELECT * FROM jsonb_each_text(coalesce(p_params, '{}')) LOOP
        v_hint := replace(v_hint, '{' || v_param.key || '}', coalesce(v_param.value, 'null'));
    END LOOP;
    RAISE EXCEPTION USING ERRCODE = v_state, MESSAGE = p_key,
        DETAIL = coalesce(p_params, '{}')::text, HINT = v_hint;
END
$$;

-- Shorthand for the most common refusal: one invalid field of an input.
CREATE OR REPLACE FUNCTION runhub._invalid(p_key text, p_field text, p_reason text)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT runhub._raise(p_key, jsonb_build_object('field', p_field, 'reason', p_reason)) $$;
