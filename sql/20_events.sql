-- Business events: validated, idempotent ingestion and cursor-paged listing in two orders.

-- Append-only guard (business_events, workflow_attributions): UPDATE, DELETE and TRUNCATE are
-- refused; a DELETE cascading from the deletion of the project itself is the one exception.
CREATE OR REPLACE FUNCTION runhub._append_only()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'DELETE' AND NOT EXISTS (SELECT 1 FROM runhub.projects WHERE id = OLD.project_id) THEN
        RETURN OLD;
    END IF;
    PERFORM runhub._raise('events.appendOnly', jsonb_build_object('table', TG_TABLE_NAME, 'operation', TG_OP));
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER business_events_append_only
    BEFORE UPDATE OR DELETE ON runhub.business_events
    FOR EACH ROW EXECUTE FUNCTION runhub._append_only();
CREATE OR REPLACE TRIGGER business_events_no_truncate
    BEFORE TRUNCATE ON runhub.business_events
    FOR EACH STATEMENT EXECUTE FUNCTION runhub._append_only();

-- Parse an ISO 8601 timestamp with an explicit offset; null when it is not one.
CREATE OR REPLACE FUNCTION runhub._parse_instant(p_text text)
RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- An explicit offset is required: the session's TimeZone must never decide the instant.
    IF p_text !~ '^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}(:?\d{2})?)$' THEN
        RETURN NULL;
    END IF;
    RETURN p_text::timestamptz;
EXCEPTION WHEN datetime_field_overflow OR invalid_datetime_format OR invalid_time_zone_displacement_value THEN
    RETURN NULL;
END
$$;

-- Whether text is an instant _parse_instant takes in its common shape, whose cast cannot fail: a
-- year 2000-2099, a real day of its month, an offset under 15 hours. Ingest casts these directly
-- (no subtransaction of _parse_instant's EXCEPTION block) and leaves the rest to _parse_instant.
-- No SET clause: an expression inlined where it is used.
CREATE OR REPLACE FUNCTION runhub._is_plain_instant(p_text text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN p_text ~ '^20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?(Z|[+-](0[0-9]|1[0-4])(:?[0-5][0-9])?)$'
                THEN pg_catalog.substr(p_text, 9, 2)
                     <= CASE pg_catalog.substr(p_text, 6, 2)
                        WHEN '02' THEN CASE WHEN pg_catalog.substr(p_text, 3, 2)::int % 4 = 0 THEN '29' ELSE '28' END
                        WHEN '04' THEN '30' WHEN '06' THEN '30' WHEN '09' THEN '30' WHEN '11' THEN '30'
                        ELSE '31' END
                ELSE false END  -- CASE, not AND: SQL does not promise the order
$$;

-- An instant as the API writes it: UTC, microseconds, 'Z'.
CREATE OR REPLACE FUNCTION runhub._iso(p_at timestamptz)
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN to_char(p_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'); END $$;

-- Whether an instant a client sends is plausible: finite, after 2000, at most a day ahead of the
-- server (timestamptz also holds infinity and years up to 294276).
-- No SET clause: an expression inlined where it is used (ingest, create_run), not a function
-- call planned again each time.
CREATE OR REPLACE FUNCTION runhub._is_client_instant(p_at timestamptz)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT p_at >= '2000-01-01T00:00:00Z' AND p_at <= now() + interval '1 day' $$;

-- Event types runhub writes itself, now and later: its sends (*_email_sent, every action's
-- sent_event_type, given as p_sent_types) and anything named runhub_*. Clients may not ingest them.
-- No SET clause: an expression inlined where it is used (the set-based check of events).
CREATE OR REPLACE FUNCTION runhub._is_reserved_event_type(p_type text, p_sent_types text[])
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT p_type LIKE '%\_email\_sent' OR p_type LIKE 'runhub\_%' OR p_type = ANY (p_sent_types) $$;

-- Idempotency-key namespaces runhub writes in: mail:<Message-ID> for its sends, runhub:* for later.
CREATE OR REPLACE FUNCTION runhub._is_system_idempotency_key(p_key text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT lower(p_key) LIKE 'mail:%' OR lower(p_key) LIKE 'runhub:%' $$;  -- no SET clause: inlined

-- An event's fields, by kind. Each kind's rule is one function that both ways ingest takes an
-- event read: the set-based check of the common shape (_is_plain_event) asks whether a value
-- passes; the field-by-field check (_event_field_by_field) takes the value through the kind's
-- _event_*_field, which calls a refusal (saying why) only for a value the rule does not take.
-- The rules have no SET clause: inlined where they are used, one expression per event.

-- A JSON string of 1 to p_max characters, as text; null for anything else.
CREATE OR REPLACE FUNCTION runhub._event_text(p_value jsonb, p_max int)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN pg_catalog.jsonb_typeof(p_value) = 'string' AND pg_catalog.length(p_value #>> '{}') BETWEEN 1 AND p_max
                THEN p_value #>> '{}' END
$$;

-- An event type: lower-case letters, digits and _, from a letter (its length: maxEventTypeLength).
CREATE OR REPLACE FUNCTION runhub._is_event_type(p_type text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT p_type ~ '^[a-z][a-z0-9_]*$' $$;

-- A language tag such as en or fr-CA (its length: maxLocaleLength).
CREATE OR REPLACE FUNCTION runhub._is_language_tag(p_tag text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT p_tag ~ '^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$' $$;

-- An amount: a JSON whole number of minor units, 0 to 2^53 - 1 (what every JSON reader holds
-- exactly); null for anything else. CASE before the casts: a string must never reach ::numeric.
CREATE OR REPLACE FUNCTION runhub._event_amount(p_value jsonb)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN pg_catalog.jsonb_typeof(p_value) = 'number'
                THEN CASE WHEN p_value::pg_catalog.numeric = pg_catalog.trunc(p_value::pg_catalog.numeric)
                           AND p_value::pg_catalog.numeric BETWEEN 0 AND (runhub._constants() ->> 'maxAmountCents')::pg_catalog.numeric
                          THEN p_value::pg_catalog.numeric::bigint END END
$$;

-- Whether a payload nests objects and arrays more than 32 levels deep (the payload itself is the
-- first): an object or array at level 33. 5,000 levels fit in 32 KiB and break the readers of
-- list_events (Python's JSON parser, psycopg's, recurses); no payload a shop sends needs more than a
-- few. The scan stops at level 33.
CREATE OR REPLACE FUNCTION runhub._is_nested_too_deep(p_payload jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT pg_catalog.jsonb_path_exists(p_payload, 'strict $.**{32} ? (@.type() == "object" || @.type() == "array")') $$;

-- What is wrong with a payload, or null: it must be an object whose text is at most
-- maxPayloadBytes and which nests at most 32 levels deep. 'too large' has a refusal of its own.
CREATE OR REPLACE FUNCTION runhub._payload_fault(p_payload jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN pg_catalog.jsonb_typeof(p_payload) IS DISTINCT FROM 'object' THEN 'must be an object'
                WHEN pg_catalog.octet_length(p_payload::text) > runhub._constant('maxPayloadBytes') THEN 'too large'
                WHEN runhub._is_nested_too_deep(p_payload) THEN 'nests objects and arrays more than 32 levels deep' END
$$;

-- The fields an event may have, and a customer's.
CREATE OR REPLACE FUNCTION runhub._event_fields()
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT '{type,occurredAt,idempotencyKey,correlationId,customer,amountCents,currency,payload}'::text[] $$;

CREATE OR REPLACE FUNCTION runhub._customer_fields()
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT '{email,name,locale}'::text[] $$;

-- The refusals. Each never returns; typed so that a field's CASE can end in it, and VOLATILE so
-- that no planner evaluates one ahead of its branch.

-- A value of field p_field refused: events.invalid with the reason.
CREATE OR REPLACE FUNCTION runhub._refuse_field(p_field text, p_reason text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM runhub._invalid('events.invalid', p_field, p_reason);
    RETURN NULL;
END
$$;

-- A text field's value refused: not a string, not 1 to p_max characters, else p_rule (the kind's
-- own rule; also what an absent required field is told).
CREATE OR REPLACE FUNCTION runhub._refuse_text(p_value jsonb, p_field text, p_max int, p_rule text)
RETURNS text
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT runhub._refuse_field(p_field, CASE WHEN p_value IS NULL OR p_value = 'null' THEN p_rule
                                              WHEN jsonb_typeof(p_value) <> 'string' THEN 'must be a string'
                                              WHEN length(p_value #>> '{}') NOT BETWEEN 1 AND p_max
                                              THEN format('must be 1 to %s characters', p_max)
                                              ELSE p_rule END)
$$;

-- An object's first field (by name) not in p_fields refused: events.unknownField.
CREATE OR REPLACE FUNCTION runhub._refuse_unknown_field(p_object jsonb, p_fields text[], p_prefix text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM runhub._raise('events.unknownField', jsonb_build_object('field', p_prefix || (
        SELECT min(k) FROM jsonb_object_keys(p_object - p_fields) k)));
END
$$;

-- A payload refused, by its fault.
CREATE OR REPLACE FUNCTION runhub._refuse_payload(p_payload jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF runhub._payload_fault(p_payload) = 'too large' THEN
        PERFORM runhub._raise('events.payloadTooLarge', jsonb_build_object(
            'bytes', octet_length(p_payload::text), 'maxBytes', runhub._constant('maxPayloadBytes')));
    END IF;
    PERFORM runhub._refuse_field('payload', runhub._payload_fault(p_payload));
    RETURN NULL;
END
$$;

-- The fields, as _event_field_by_field takes them: each is null when absent (or JSON null), its
-- value when its kind's rule takes it, else refused. No SET clause: inlined into its statements.
CREATE OR REPLACE FUNCTION runhub._event_text_field(p_value jsonb, p_field text, p_max int)
RETURNS text
LANGUAGE sql VOLATILE
AS $$
    SELECT CASE WHEN p_value IS NULL OR p_value = 'null' THEN NULL
                ELSE coalesce(runhub._event_text(p_value, p_max), runhub._refuse_text(p_value, p_field, p_max, NULL)) END
$$;

-- Required.
CREATE OR REPLACE FUNCTION runhub._event_type_field(p_value jsonb)
RETURNS text
LANGUAGE sql VOLATILE
AS $$
    SELECT CASE WHEN runhub._is_event_type(runhub._event_text(p_value, runhub._constant('maxEventTypeLength')))
                THEN p_value #>> '{}'
                ELSE runhub._refuse_text(p_value, 'type', runhub._constant('maxEventTypeLength'),
                                         'is required: lower-case letters, digits and _') END
$$;

-- Lower-cased and checked by runhub._address, the one rule of a deliverable address.
CREATE OR REPLACE FUNCTION runhub._event_address_field(p_value jsonb)
RETURNS text
LANGUAGE sql VOLATILE
AS $$
    SELECT CASE WHEN p_value IS NULL OR p_value = 'null' THEN NULL
                ELSE coalesce(runhub._address(runhub._event_text(p_value, runhub._constant('maxAddressInputLength'))),
                              runhub._refuse_text(p_value, 'customer.email', runhub._constant('maxAddressInputLength'),
                                  'is not a deliverable e-mail address (ASCII local part, host name, at most 254 characters)')) END
$$;

CREATE OR REPLACE FUNCTION runhub._event_locale_field(p_value jsonb)
RETURNS text
LANGUAGE sql VOLATILE
AS $$
    SELECT CASE WHEN p_value IS NULL OR p_value = 'null' THEN NULL
                WHEN runhub._is_language_tag(runhub._event_text(p_value, runhub._constant('maxLocaleLength'))) THEN p_value #>> '{}'
                ELSE runhub._refuse_text(p_value, 'customer.locale', runhub._constant('maxLocaleLength'),
                                         'is not a language tag such as en or fr-CA') END
$$;

-- One of runhub.currencies (ISO 4217).
CREATE OR REPLACE FUNCTION runhub._event_currency_field(p_value jsonb)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_value IS NULL OR p_value = 'null' THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM runhub.currencies k WHERE k.code = runhub._event_text(p_value, 3)) THEN
        RETURN p_value #>> '{}';
    END IF;
    RETURN runhub._refuse_text(p_value, 'currency', 3, 'is not an ISO 4217 currency code');
END
$$;

CREATE OR REPLACE FUNCTION runhub._event_amount_field(p_value jsonb)
RETURNS bigint
LANGUAGE sql VOLATILE
AS $$
    SELECT CASE WHEN p_value IS NULL OR p_value = 'null' THEN NULL
                ELSE coalesce(runhub._event_amount(p_value),
                              runhub._refuse_field('amountCents', 'must be a whole number of minor units, 0 or more')::bigint) END
$$;

-- Absent or JSON null is an empty object.
CREATE OR REPLACE FUNCTION runhub._event_payload_field(p_value jsonb)
RETURNS jsonb
LANGUAGE sql VOLATILE
AS $$
    SELECT CASE WHEN runhub._payload_fault(coalesce(nullif(p_value, 'null'), '{}')) IS NULL
                THEN coalesce(nullif(p_value, 'null'), '{}')
                ELSE runhub._refuse_payload(coalesce(nullif(p_value, 'null'), '{}')) END
$$;

-- Required: an ISO 8601 instant with an explicit offset, plausible for a client to send. Its
-- common shape is cast directly; anything else goes through _parse_instant, which says what it is.
CREATE OR REPLACE FUNCTION runhub._event_instant_field(p_value jsonb)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_text text := CASE WHEN jsonb_typeof(p_value) = 'string' THEN p_value #>> '{}' END;
    v_at   timestamptz;
BEGIN
    IF runhub._is_plain_instant(v_text) THEN
        v_at := v_text::timestamptz;
    ELSE
        v_at := runhub._parse_instant(runhub._event_text_field(p_value, 'occurredAt', 40));
    END IF;
    IF v_at IS NULL AND v_text ~ '^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$' THEN
        PERFORM runhub._refuse_field('occurredAt', 'needs a UTC offset (Z or +hh:mm): without one it could be any of 26 hours');
    ELSIF v_at IS NULL AND v_text IS NOT NULL THEN
        PERFORM runhub._refuse_field('occurredAt', 'is not an ISO 8601 instant such as 2026-11-20T10:00:00Z');
    ELSIF v_at IS NULL THEN
        PERFORM runhub._refuse_field('occurredAt', 'is required: an ISO 8601 instant with a UTC offset');
    ELSIF NOT runhub._is_client_instant(v_at) THEN
        PERFORM runhub._refuse_field('occurredAt', 'must be after 2000 and at most a day ahead of the server');
    END IF;
    RETURN v_at;
END
$$;

-- Validate an incoming event and return it as a business_events row (id and received_at unset):
-- one of the common shape as it is (_plain_event, one statement), any other field by field.
-- Generic plans: a custom plan folds the event into its expressions, so it looks cheaper and would be
-- chosen, and planned again, for every event (a millisecond each).
CREATE OR REPLACE FUNCTION runhub._event_from_json(p_project uuid, p_event jsonb)
RETURNS runhub.business_events
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_row runhub.business_events;
BEGIN
    SELECT p.* INTO v_row FROM runhub._plain_event(p_project, p_event) p;
    IF FOUND THEN
        RETURN v_row;
    END IF;
    RETURN runhub._event_field_by_field(p_project, p_event);
END
$$;

-- An event validated field by field, in the order of its fields, or the refusal that says which
-- field and why.
CREATE OR REPLACE FUNCTION runhub._event_field_by_field(p_project uuid, p_event jsonb)
RETURNS runhub.business_events
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan  -- as _event_from_json
AS $$
DECLARE
    v_row      runhub.business_events;
    v_customer jsonb := nullif(p_event -> 'customer', 'null');
BEGIN
    IF p_event IS NULL OR jsonb_typeof(p_event) <> 'object' THEN
        PERFORM runhub._refuse_field('event', 'must be a JSON object');
    END IF;
    IF p_event - runhub._event_fields() <> '{}' THEN
        PERFORM runhub._refuse_unknown_field(p_event, runhub._event_fields(), '');
    END IF;
    v_row.project_id := p_project;
    v_row.event_type := runhub._event_type_field(p_event -> 'type');
    v_row.occurred_at := runhub._event_instant_field(p_event -> 'occurredAt');
    v_row.idempotency_key := runhub._event_text_field(p_event -> 'idempotencyKey', 'idempotencyKey', runhub._constant('maxKeyLength'));
    IF v_row.idempotency_key IS NULL THEN
        PERFORM runhub._refuse_field('idempotencyKey', 'is required');
    END IF;
    -- What runhub records itself (its sends) must never come from a client: a forged send could
    -- earn a workflow money, and a key taken in advance would silence the real one.
    IF runhub._is_reserved_event_type(v_row.event_type, ARRAY(SELECT a.sent_event_type FROM runhub.actions a)) THEN
        PERFORM runhub._raise('events.reservedForRunhub', jsonb_build_object('field', 'type', 'value', v_row.event_type));
    END IF;
    IF runhub._is_system_idempotency_key(v_row.idempotency_key) THEN
        PERFORM runhub._raise('events.reservedForRunhub', jsonb_build_object(
            'field', 'idempotencyKey', 'value', split_part(v_row.idempotency_key, ':', 1) || ':…'));
    END IF;
    v_row.correlation_id := runhub._event_text_field(p_event -> 'correlationId', 'correlationId', runhub._constant('maxKeyLength'));
    IF v_customer IS NOT NULL THEN
        IF jsonb_typeof(v_customer) <> 'object' THEN
            PERFORM runhub._refuse_field('customer', 'must be an object');
        END IF;
        IF v_customer - runhub._customer_fields() <> '{}' THEN
            PERFORM runhub._refuse_unknown_field(v_customer, runhub._customer_fields(), 'customer.');
        END IF;
        v_row.customer_email := runhub._event_address_field(v_customer -> 'email');
        v_row.customer_name := nullif(runhub._trim(runhub._event_text_field(
            v_customer -> 'name', 'customer.name', runhub._constant('maxCustomerNameLength'))), '');
        v_row.customer_locale := runhub._event_locale_field(v_customer -> 'locale');
    END IF;
    v_row.amount_cents := runhub._event_amount_field(p_event -> 'amountCents');
    v_row.currency := runhub._event_currency_field(p_event -> 'currency');
    IF (v_row.amount_cents IS NULL) <> (v_row.currency IS NULL) THEN
        PERFORM runhub._refuse_field(CASE WHEN v_row.currency IS NULL THEN 'currency' ELSE 'amountCents' END,
                                     'amountCents and currency go together');
    END IF;
    v_row.payload := runhub._event_payload_field(p_event -> 'payload');
    RETURN v_row;
END
$$;

-- Whether an event has the common shape _event_from_json takes as it is, checked in one
-- expression by the field kinds' rules, its instant aside (_event_as_stored reads it once, for the
-- check and the row): an object of known fields; a type not named as runhub's own (the actions'
-- sent types aside: _event_as_stored looks them up); a key outside runhub's namespaces; no customer,
-- or one with an address runhub._is_plain_address takes as it is; a whole amount with a currency;
-- a payload without fault. False is no verdict: _event_from_json then takes the event field by
-- field, and stores it or says why not. tests/db/test_ingest_plain.py holds the two to that on
-- generated events. CASE, not AND, before a cast: SQL does not promise the order of AND.
CREATE OR REPLACE FUNCTION runhub._is_plain_event(e jsonb)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN pg_catalog.jsonb_typeof(e) IS DISTINCT FROM 'object' THEN false  -- before -, which refuses a scalar
                WHEN (e - runhub._event_fields()) = '{}'
                 AND runhub._is_event_type(runhub._event_text(e -> 'type', runhub._constant('maxEventTypeLength')))
                 AND NOT runhub._is_reserved_event_type(e ->> 'type', '{}')
                 AND runhub._event_text(e -> 'idempotencyKey', runhub._constant('maxKeyLength')) IS NOT NULL
                 AND NOT runhub._is_system_idempotency_key(e ->> 'idempotencyKey')
                 AND (e -> 'correlationId' IS NULL OR runhub._event_text(e -> 'correlationId', runhub._constant('maxKeyLength')) IS NOT NULL)
                 AND (e -> 'customer' IS NULL
                      OR CASE WHEN pg_catalog.jsonb_typeof(e -> 'customer') = 'object'
                         THEN ((e -> 'customer') - runhub._customer_fields()) = '{}' ELSE false END
                         AND pg_catalog.jsonb_typeof(e -> 'customer' -> 'email') = 'string'
                         AND runhub._is_plain_address(pg_catalog.lower((e -> 'customer' ->> 'email') COLLATE "C"))
                         AND (e -> 'customer' -> 'name' IS NULL
                              OR runhub._event_text(e -> 'customer' -> 'name', runhub._constant('maxCustomerNameLength')) IS NOT NULL)
                         AND (e -> 'customer' -> 'locale' IS NULL
                              OR runhub._is_language_tag(runhub._event_text(e -> 'customer' -> 'locale', runhub._constant('maxLocaleLength')))))
                 AND (e -> 'amountCents' IS NULL) = (e -> 'currency' IS NULL)
                 AND (e -> 'amountCents' IS NULL
                      OR pg_catalog.jsonb_typeof(e -> 'amountCents') = 'number' AND pg_catalog.jsonb_typeof(e -> 'currency') = 'string')
                 AND (e -> 'payload' IS NULL OR pg_catalog.jsonb_typeof(e -> 'payload') = 'object')
            THEN (e -> 'amountCents' IS NULL OR runhub._event_amount(e -> 'amountCents') IS NOT NULL)
                 AND runhub._payload_fault(coalesce(e -> 'payload', '{}')) IS NULL
            ELSE false END
$$;

-- An event as a business_events row, id and received_at unset (the table sets them): the one place
-- that lists its columns in order. No SET clause: inlined where it is used.
CREATE OR REPLACE FUNCTION runhub._event_row(
    p_project uuid, p_type text, p_occurred_at timestamptz, p_key text, p_correlation text, p_email text,
    p_name text, p_locale text, p_amount bigint, p_currency text, p_payload jsonb)
RETURNS runhub.business_events
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT ROW(NULL, p_project, p_type, p_occurred_at, NULL, p_key, p_correlation, p_email, p_name, p_locale,
               p_amount, p_currency, p_payload)::runhub.business_events
$$;

-- An event of project p_project as business_events would store it, and plain: whether it has the
-- common shape taken as it is (_is_plain_event, the actions' sent types, a known currency). One
-- row; every field expression is safe on any JSON (one not as expected gives null or a value plain
-- refuses, never an error); the fields mean nothing where plain is false. The one definition of
-- the common shape behind _plain_event and _plain_events. No SET clause: inlined into the ingest
-- statements; every name qualified; it runs only under the pinned search_path of ingest's functions.
CREATE OR REPLACE FUNCTION runhub._event_as_stored(p_project uuid, p_event jsonb)
RETURNS TABLE (event runhub.business_events, plain boolean)
LANGUAGE sql STABLE
AS $$
    SELECT runhub._event_row(p_project, p_event ->> 'type', i.occurred_at, p_event ->> 'idempotencyKey',
                             p_event ->> 'correlationId', pg_catalog.lower((p_event -> 'customer' ->> 'email') COLLATE "C") COLLATE "default",
                             nullif(runhub._trim(p_event -> 'customer' ->> 'name'), ''), p_event -> 'customer' ->> 'locale',
                             runhub._event_amount(p_event -> 'amountCents'), p_event ->> 'currency',
                             coalesce(p_event -> 'payload', '{}')),
           i.occurred_at IS NOT NULL AND runhub._is_client_instant(i.occurred_at) AND runhub._is_plain_event(p_event)
           AND NOT (p_event ->> 'type') = ANY (ARRAY(SELECT a.sent_event_type FROM runhub.actions a))
           AND (p_event -> 'currency' IS NULL OR EXISTS (SELECT 1 FROM runhub.currencies k WHERE k.code = p_event ->> 'currency'))
      FROM (SELECT CASE WHEN runhub._is_plain_instant(p_event ->> 'occurredAt')  -- a JSON string's text, or no match
                        THEN (p_event ->> 'occurredAt')::pg_catalog.timestamptz END AS occurred_at
             OFFSET 0) i  -- evaluated once (the regular expression is the check's dearest part), not where used
$$;

-- An event of the common shape as business_events stores it (one row), or no row.
CREATE OR REPLACE FUNCTION runhub._plain_event(p_project uuid, p_event jsonb)
RETURNS SETOF runhub.business_events
LANGUAGE sql STABLE
AS $$ SELECT (f.event).* FROM runhub._event_as_stored(p_project, p_event) f WHERE f.plain $$;

-- _event_as_stored of each element of the JSON array p_events (given), with its position n: one plan
-- for the batch (the sent types read once).
CREATE OR REPLACE FUNCTION runhub._plain_events(p_project uuid, p_events jsonb)
RETURNS TABLE (n bigint, event runhub.business_events, plain boolean, given jsonb)
LANGUAGE sql STABLE
AS $$
    SELECT j.n, f.event, f.plain, j.e
      FROM pg_catalog.jsonb_array_elements(p_events) WITH ORDINALITY AS j(e, n)
     CROSS JOIN LATERAL runhub._event_as_stored(p_project, j.e) f
$$;

-- Signals, inside a statement over _plain_events, an event not of the plain shape:
-- the caller's EXCEPTION block then takes the events one by one.
CREATE OR REPLACE FUNCTION runhub._unchecked_event()
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'an event not of the plain shape' USING ERRCODE = 'RH002';
END
$$;

-- Store events (business_events rows, id and received_at unset; a null row is skipped) in the
-- order given, each once per project and idempotency key: a replay, even a concurrent one, writes
-- nothing; and keep their customers up in the same statement: one upsert per customer, in project
-- and e-mail order so concurrent batches lock rows in the same order (not a trigger, whose
-- transition table cost a single event more than the upsert). A name or locale is the latest given,
-- whatever order events come in (an import of older history keeps the newer name); our own
-- *_email_sent events are not customer activity. ingest_events, the field-by-field path and the
-- sender's record of its mail store through it (ingest_event's common case has a statement of its own
-- with the same insert and merge, for speed); rebuild_customers passes events stored already
-- (p_stored), of which it keeps the customers only.
-- Returns the keys stored and their ids, in the order given (ids ascend in the order inserted).
CREATE OR REPLACE FUNCTION runhub._store_events(
    p_events runhub.business_events[], p_stored boolean DEFAULT false, OUT new_keys text[], OUT new_ids bigint[])
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    WITH stored AS (
        INSERT INTO runhub.business_events (project_id, event_type, occurred_at, idempotency_key, correlation_id,
                                            customer_email, customer_name, customer_locale, amount_cents, currency, payload)
        SELECT e.project_id, e.event_type, e.occurred_at, e.idempotency_key, e.correlation_id,
               e.customer_email, e.customer_name, e.customer_locale, e.amount_cents, e.currency, e.payload
          FROM unnest(p_events) WITH ORDINALITY AS e
         WHERE e.event_type IS NOT NULL AND NOT p_stored
         ORDER BY e.ordinality
        ON CONFLICT (project_id, idempotency_key) DO NOTHING
        RETURNING id, project_id, idempotency_key, event_type, occurred_at, customer_email, customer_name, customer_locale
    ), customer_events AS (
        SELECT s.project_id, s.event_type, s.occurred_at, s.customer_email, s.customer_name, s.customer_locale
          FROM stored s
        UNION ALL
        SELECT e.project_id, e.event_type, e.occurred_at, e.customer_email, e.customer_name, e.customer_locale
          FROM unnest(p_events) AS e
         WHERE p_stored
    ), kept AS (
        INSERT INTO runhub.customers AS c (project_id, email, name, name_at, locale, locale_at, first_seen_at,
                                           last_seen_at, signed_up_at, last_engaged_at, last_paid_at)
        SELECT e.project_id, e.customer_email,
               (array_agg(e.customer_name ORDER BY e.occurred_at DESC) FILTER (WHERE e.customer_name IS NOT NULL))[1],
               max(e.occurred_at) FILTER (WHERE e.customer_name IS NOT NULL),
               (array_agg(e.customer_locale ORDER BY e.occurred_at DESC) FILTER (WHERE e.customer_locale IS NOT NULL))[1],
               max(e.occurred_at) FILTER (WHERE e.customer_locale IS NOT NULL),
               min(e.occurred_at), max(e.occurred_at),
               max(e.occurred_at) FILTER (WHERE e.event_type = 'user_signed_up'),
               max(e.occurred_at) FILTER (WHERE e.event_type <> 'user_signed_up'),
               max(e.occurred_at) FILTER (WHERE e.event_type = 'payment_succeeded')
          FROM customer_events e
         WHERE e.customer_email IS NOT NULL AND e.event_type !~ '_email_sent$'
         GROUP BY e.project_id, e.customer_email
         ORDER BY e.project_id, e.customer_email
        ON CONFLICT (project_id, email) DO UPDATE SET
            name            = CASE WHEN excluded.name_at >= coalesce(c.name_at, c.last_seen_at) OR c.name IS NULL
                                   THEN coalesce(excluded.name, c.name) ELSE c.name END,
            name_at         = CASE WHEN excluded.name_at >= coalesce(c.name_at, c.last_seen_at) OR c.name IS NULL
                                   THEN coalesce(excluded.name_at, c.name_at) ELSE c.name_at END,
            locale          = CASE WHEN excluded.locale_at >= coalesce(c.locale_at, c.last_seen_at) OR c.locale IS NULL
                                   THEN coalesce(excluded.locale, c.locale) ELSE c.locale END,
            locale_at       = CASE WHEN excluded.locale_at >= coalesce(c.locale_at, c.last_seen_at) OR c.locale IS NULL
                                   THEN coalesce(excluded.locale_at, c.locale_at) ELSE c.locale_at END,
            first_seen_at   = least(c.first_seen_at, excluded.first_seen_at),
            last_seen_at    = greatest(c.last_seen_at, excluded.last_seen_at),
            signed_up_at    = greatest(c.signed_up_at, excluded.signed_up_at),
            last_engaged_at = greatest(c.last_engaged_at, excluded.last_engaged_at),
            last_paid_at    = greatest(c.last_paid_at, excluded.last_paid_at)
    )
    SELECT coalesce(array_agg(s.idempotency_key ORDER BY s.id), '{}'), coalesce(array_agg(s.id ORDER BY s.id), '{}')
      INTO new_keys, new_ids
      FROM stored s;
END
$$;

-- Append an event, idempotent on (project, idempotencyKey): a replay, even a concurrent one,
-- returns the first event's id with inserted = false and writes nothing. No subtransaction: the
-- project is locked as its foreign key would lock it (FOR KEY SHARE), so one deleted meanwhile is
-- refused up front rather than by a foreign-key error in mid-insert. An event of the common shape
-- is stored, and its customer kept up, by one statement of its own: the same insert and merge as
-- _store_events' (tests/db/test_ingest_plain.py holds them to the same text), without its
-- aggregates and second statement, which cost a webhook's event 30 % (0.55 → 0.72 ms a call,
-- pgbench side by side). Any other event goes field by field and through _store_events.
CREATE OR REPLACE FUNCTION runhub.ingest_event(project uuid, event jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_project ALIAS FOR project;
    p_event ALIAS FOR event;
    v_row runhub.business_events;
    v_id  bigint;
BEGIN
    -- The common case, one statement: an event of the common shape of a project that exists,
    -- stored unless a replay, and its customer with it (_store_events' merge, for one event).
    WITH stored AS (
        INSERT INTO runhub.business_events (project_id, event_type, occurred_at, idempotency_key, correlation_id,
                                            customer_email, customer_name, customer_locale, amount_cents, currency, payload)
        SELECT p_project, p.event_type, p.occurred_at, p.idempotency_key, p.correlation_id, p.customer_email,
               p.customer_name, p.customer_locale, p.amount_cents, p.currency, p.payload
          FROM runhub._plain_event(p_project, p_event) p,
               (SELECT FROM runhub.projects pr WHERE pr.id = p_project FOR KEY SHARE) locked
        ON CONFLICT (project_id, idempotency_key) DO NOTHING
        RETURNING id, event_type, occurred_at, customer_email, customer_name, customer_locale
    ), kept AS (
        INSERT INTO runhub.customers AS c (project_id, email, name, name_at, locale, locale_at, first_seen_at,
                                           last_seen_at, signed_up_at, last_engaged_at, last_paid_at)
        SELECT p_project, e.customer_email, e.customer_name, CASE WHEN e.customer_name IS NOT NULL THEN e.occurred_at END,
               e.customer_locale, CASE WHEN e.customer_locale IS NOT NULL THEN e.occurred_at END, e.occurred_at, e.occurred_at,
               CASE WHEN e.event_type = 'user_signed_up' THEN e.occurred_at END,
               CASE WHEN e.event_type <> 'user_signed_up' THEN e.occurred_at END,
               CASE WHEN e.event_type = 'payment_succeeded' THEN e.occurred_at END
          FROM stored e
         WHERE e.customer_email IS NOT NULL AND e.event_type !~ '_email_sent$'
        ON CONFLICT (project_id, email) DO UPDATE SET
            name            = CASE WHEN excluded.name_at >= coalesce(c.name_at, c.last_seen_at) OR c.name IS NULL
                                   THEN coalesce(excluded.name, c.name) ELSE c.name END,
            name_at         = CASE WHEN excluded.name_at >= coalesce(c.name_at, c.last_seen_at) OR c.name IS NULL
                                   THEN coalesce(excluded.name_at, c.name_at) ELSE c.name_at END,
            locale          = CASE WHEN excluded.locale_at >= coalesce(c.locale_at, c.last_seen_at) OR c.locale IS NULL
                                   THEN coalesce(excluded.locale, c.locale) ELSE c.locale END,
            locale_at       = CASE WHEN excluded.locale_at >= coalesce(c.locale_at, c.last_seen_at) OR c.locale IS NULL
                                   THEN coalesce(excluded.locale_at, c.locale_at) ELSE c.locale_at END,
            first_seen_at   = least(c.first_seen_at, excluded.first_seen_at),
            last_seen_at    = greatest(c.last_seen_at, excluded.last_seen_at),
            signed_up_at    = greatest(c.signed_up_at, excluded.signed_up_at),
            last_engaged_at = greatest(c.last_engaged_at, excluded.last_engaged_at),
            last_paid_at    = greatest(c.last_paid_at, excluded.last_paid_at)
    )
    SELECT s.id INTO v_id FROM stored s;
    IF v_id IS NOT NULL THEN
        RETURN jsonb_build_object('eventId', v_id, 'inserted', true);
    END IF;
    -- A replay, an unknown project, or an event to take field by field (which says why if it refuses it).
    PERFORM runhub._lock_project(p_project);
    v_row := runhub._event_from_json(p_project, p_event);
    SELECT s.new_ids[1] INTO v_id FROM runhub._store_events(ARRAY[v_row]) s;
    IF v_id IS NOT NULL THEN
        RETURN jsonb_build_object('eventId', v_id, 'inserted', true);
    END IF;
    -- ON CONFLICT waited for the first writer to commit, so a fresh snapshot sees its row.
    SELECT id INTO v_id FROM runhub.business_events
     WHERE project_id = p_project AND idempotency_key = v_row.idempotency_key;
    RETURN jsonb_build_object('eventId', v_id, 'inserted', false);
END
$$;

-- Many events at once, for imports (a shop backfilling its history): p_events is a JSON array of
-- 1 to 5,000 events (at most 32 MiB as stored), each validated exactly as ingest_event validates one and stored idempotently
-- (per project and idempotency key; a key twice in the batch is stored once). Returns a JSON array
-- in the order given: {eventId, inserted} for each event, or {error: {code, key, params, message}}
-- for one refused as ingest_event would refuse it (the others are still stored). A refusal of the
-- call itself (no such project, not an array, none or too many) stores nothing. Payments are
-- attributed as they are one by one (the row trigger), customers kept up (_store_events).
CREATE OR REPLACE FUNCTION runhub.ingest_events(project uuid, events jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_project ALIAS FOR project;
    p_events ALIAS FOR events;
    c_max     CONSTANT int := runhub._constant('maxIngestBatch');
    c_max_bytes CONSTANT int := runhub._constant('maxIngestBatchBytes');
    v_bytes   int;
    v_count   int;
    v_keys    text[];   -- each event's idempotency key, in the order given (null where refused)
    v_errors  jsonb[];  -- why each was refused (null where not)
    v_new_keys text[];
    v_new_ids  bigint[];
BEGIN
    PERFORM runhub._lock_project(p_project);
    IF jsonb_typeof(p_events) IS DISTINCT FROM 'array' THEN
        PERFORM runhub._invalid('common.invalidInput', 'events', 'must be a JSON array of events');
    END IF;
    -- A bound on the call's work that holds whatever statement_timeout the login sets: the batch's
    -- size as PostgreSQL holds it, known without reading it (about 1.2 times its JSON text for
    -- common events; up to 4 times for arrays of small numbers).
    v_bytes := pg_column_size(p_events);
    IF v_bytes > c_max_bytes THEN
        PERFORM runhub._raise('events.batchTooLarge', jsonb_build_object('bytes', v_bytes, 'maxBytes', c_max_bytes));
    END IF;
    v_count := jsonb_array_length(p_events);
    IF v_count NOT BETWEEN 1 AND c_max THEN
        PERFORM runhub._invalid('common.invalidInput', 'events', format('holds 1 to %s events, not %s', c_max, v_count));
    END IF;
    -- The common case: every event passes the set-based check (an importer's batch usually does).
    -- The first that does not stops it, and they are taken one by one.
    BEGIN
        SELECT s.new_keys, s.new_ids INTO v_new_keys, v_new_ids
          FROM runhub._store_events(ARRAY(
                   SELECT c.event FROM runhub._plain_events(p_project, p_events) c
                    WHERE CASE WHEN c.plain THEN true ELSE runhub._unchecked_event() END
                    ORDER BY c.n)) s;
        IF cardinality(v_new_ids) = v_count THEN  -- each stored, none a replay or twice here: ids in order
            RETURN (SELECT jsonb_agg(jsonb_build_object('eventId', i.id, 'inserted', true) ORDER BY i.id)
                      FROM unnest(v_new_ids) AS i(id));  -- ids ascend in the order inserted, the order given
        END IF;
        v_keys := ARRAY(SELECT x.e ->> 'idempotencyKey' FROM jsonb_array_elements(p_events) WITH ORDINALITY AS x(e, n)
                         ORDER BY x.n);
    EXCEPTION WHEN SQLSTATE 'RH002' THEN  -- _unchecked_event's (execute_run's undo is RH001)
        SELECT o.keys, o.errors, o.new_keys, o.new_ids INTO v_keys, v_errors, v_new_keys, v_new_ids
          FROM runhub._ingest_one_by_one(p_project, p_events) o;
    END;
    RETURN runhub._ingest_answers(p_project, v_keys, v_errors, v_new_keys, v_new_ids);
END
$$;

-- ingest_events' way for a batch the set-based check did not wholly accept: those it did not, field by
-- field (all in one statement while all are valid; at the first refusal, one by one through
-- _event_from_json, each in a subtransaction of its own, to say which and why), then the valid ones stored.
-- Returns each event's key (null where refused) and error (null where not), and what was stored.
CREATE OR REPLACE FUNCTION runhub._ingest_one_by_one(
    p_project uuid, p_events jsonb,
    OUT keys text[], OUT errors jsonb[], OUT new_keys text[], OUT new_ids bigint[])
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rows    runhub.business_events[];  -- v_rows[n]: the n-th event validated (null where refused)
    v_errors  jsonb[];
    v_event   jsonb;
    v_state   text;
    v_key     text;
    v_params  text;
    v_message text;
BEGIN
    BEGIN
        SELECT array_agg(CASE WHEN c.plain THEN c.event ELSE runhub._event_field_by_field(p_project, c.given) END ORDER BY c.n)
          INTO v_rows
          FROM runhub._plain_events(p_project, p_events) c;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE;
        IF v_state NOT LIKE 'PT4%' THEN
            RAISE;
        END IF;
        v_rows := '{}';
        v_errors := '{}';
        FOR v_event IN SELECT x.e FROM jsonb_array_elements(p_events) WITH ORDINALITY AS x(e, n) ORDER BY x.n LOOP
            BEGIN
                v_rows := v_rows || runhub._event_from_json(p_project, v_event);
                v_errors := v_errors || NULL::jsonb;
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_key = MESSAGE_TEXT,
                                        v_params = PG_EXCEPTION_DETAIL, v_message = PG_EXCEPTION_HINT;
                IF v_state NOT LIKE 'PT4%' THEN
                    RAISE;
                END IF;
                v_rows := v_rows || NULL::runhub.business_events;
                v_errors := v_errors || jsonb_build_object('error', jsonb_build_object(
                    'code', v_state, 'key', v_key, 'params', coalesce(v_params, '{}')::jsonb, 'message', v_message));
            END;
        END LOOP;
    END;
    errors := v_errors;
    keys := ARRAY(SELECT r.idempotency_key FROM unnest(v_rows) WITH ORDINALITY AS r ORDER BY r.ordinality);
    SELECT s.new_keys, s.new_ids INTO new_keys, new_ids FROM runhub._store_events(v_rows) s;
END
$$;

-- ingest_events' answer, in the order given: the error where refused, else the event's id, and
-- inserted only for the first of its key in the batch stored by this call. Its own statement: its
-- snapshot sees the rows of the writers ON CONFLICT waited for.
CREATE OR REPLACE FUNCTION runhub._ingest_answers(
    p_project uuid, p_keys text[], p_errors jsonb[], p_new_keys text[], p_new_ids bigint[])
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (
        SELECT jsonb_agg(coalesce(t.error, jsonb_build_object('eventId', t.id, 'inserted', t.inserted)) ORDER BY t.n)
          FROM (SELECT g.n, er.error,
                       coalesce(s.id, (SELECT e.id FROM runhub.business_events e  -- looked up only if not stored now
                                        WHERE e.project_id = p_project AND e.idempotency_key = g.key)) AS id,
                       s.id IS NOT NULL AND g.n = min(g.n) OVER (PARTITION BY g.key) AS inserted
                  FROM unnest(p_keys) WITH ORDINALITY AS g(key, n)
                  LEFT JOIN unnest(p_errors) WITH ORDINALITY AS er(error, n) ON er.n = g.n
                  LEFT JOIN unnest(p_new_keys, p_new_ids) AS s(key, id) ON s.key = g.key) t);
END
$$;

-- An event in the shape ingest_event takes, plus id and receivedAt.
CREATE OR REPLACE FUNCTION runhub._event_json(e runhub.business_events)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'id', e.id,
        'type', e.event_type,
        'occurredAt', runhub._iso(e.occurred_at),
        'receivedAt', runhub._iso(e.received_at),
        'idempotencyKey', e.idempotency_key,
        'correlationId', e.correlation_id,
        'customer', nullif(jsonb_strip_nulls(jsonb_build_object(
            'email', e.customer_email, 'name', e.customer_name, 'locale', e.customer_locale)), '{}'),
        'amountCents', e.amount_cents,
        'currency', e.currency))
      || jsonb_build_object('payload', e.payload)
$$;

-- A page of a project's events for a member, newest first, in timeline order (occurred_at DESC,
-- id DESC; cursor {occurredAt, id}) or ingestion order (id DESC; cursor {id}).
CREATE OR REPLACE FUNCTION runhub.list_events(
    project uuid, actor uuid, sort text DEFAULT 'timeline', cursor jsonb DEFAULT NULL, page_size int DEFAULT 50)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_project ALIAS FOR project;
    p_actor ALIAS FOR actor;
    p_order ALIAS FOR sort;
    p_cursor ALIAS FOR cursor;
    p_limit ALIAS FOR page_size;
    c_max_limit CONSTANT int := runhub._constant('maxPageSize');
    v_after_at  timestamptz;
    v_after_id  bigint;
    v_page      runhub.business_events[];
    v_last      runhub.business_events;
    v_next      jsonb;
BEGIN
    PERFORM runhub._authorize(p_project, p_actor);
    IF p_order IS NULL OR p_order NOT IN ('timeline', 'ingestion') THEN
        PERFORM runhub._raise('events.invalidSort', jsonb_build_object('sort', p_order));
    END IF;
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND c_max_limit THEN
        PERFORM runhub._raise('events.invalidPageSize', jsonb_build_object('pageSize', p_limit, 'max', c_max_limit));
    END IF;
    SELECT c.after_at, c.after_id INTO v_after_at, v_after_id FROM runhub._parse_cursor(p_order, p_cursor) c;

    IF p_order = 'timeline' THEN
        SELECT array_agg(e ORDER BY e.occurred_at DESC, e.id DESC) INTO v_page FROM (
            SELECT * FROM runhub.business_events
             WHERE project_id = p_project
               AND (v_after_id IS NULL OR (occurred_at, id) < (v_after_at, v_after_id))
             ORDER BY occurred_at DESC, id DESC
             LIMIT p_limit + 1) e;
    ELSE
        SELECT array_agg(e ORDER BY e.id DESC) INTO v_page FROM (
            SELECT * FROM runhub.business_events
             WHERE project_id = p_project AND (v_after_id IS NULL OR id < v_after_id)
             ORDER BY id DESC
             LIMIT p_limit + 1) e;
    END IF;

    IF coalesce(array_length(v_page, 1), 0) > p_limit THEN  -- one more row exists past this page
        v_page := v_page[1:p_limit];
        v_last := v_page[p_limit];
        v_next := CASE p_order
            WHEN 'timeline' THEN jsonb_build_object('occurredAt', runhub._iso(v_last.occurred_at), 'id', v_last.id)
            ELSE jsonb_build_object('id', v_last.id) END;
    END IF;
    RETURN jsonb_build_object(
        'events', coalesce((SELECT jsonb_agg(runhub._event_json(v_page[i]) ORDER BY i)
                              FROM generate_subscripts(v_page, 1) AS i), '[]'),
        'nextCursor', v_next);
END
$$;

-- Validate a list_events cursor for the given order; null cursor means the first page.
CREATE OR REPLACE FUNCTION runhub._parse_cursor(p_order text, p_cursor jsonb, OUT after_at timestamptz, OUT after_id bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_expected text[] := CASE p_order WHEN 'timeline' THEN ARRAY['id', 'occurredAt'] ELSE ARRAY['id'] END;
BEGIN
    IF p_cursor IS NULL OR p_cursor = 'null' THEN
        RETURN;
    END IF;
    IF jsonb_typeof(p_cursor) <> 'object'
       OR (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(p_cursor) k) IS DISTINCT FROM v_expected THEN
        PERFORM runhub._raise('events.invalidCursor', jsonb_build_object(
            'sort', p_order, 'reason', 'expected exactly the fields ' || array_to_string(v_expected, ', ')));
    END IF;
    IF jsonb_typeof(p_cursor -> 'id') <> 'number' OR (p_cursor ->> 'id') !~ '^[1-9]\d{0,17}$' THEN
        PERFORM runhub._raise('events.invalidCursor', jsonb_build_object('sort', p_order, 'reason', 'id must be a positive integer'));
    END IF;
    after_id := (p_cursor ->> 'id')::bigint;
    IF p_order = 'timeline' THEN
        after_at := CASE WHEN jsonb_typeof(p_cursor -> 'occurredAt') = 'string'
                         THEN runhub._parse_instant(p_cursor ->> 'occurredAt') END;
        IF after_at IS NULL OR NOT runhub._is_client_instant(after_at) THEN
            PERFORM runhub._raise('events.invalidCursor', jsonb_build_object(
                'sort', p_order, 'reason', 'occurredAt must be an ISO 8601 instant after 2000, at most a day ahead'));
        END IF;
    END IF;
END
$$;

-- Bring a project's customers up to date with all its stored events (idempotent): for events
-- written past ingest (a bulk load, a restore of business_events alone). For operators and
-- loaders; no runhub role may call it. Returns the number of events read; 100,000 a statement.
CREATE OR REPLACE FUNCTION runhub.rebuild_customers(p_project uuid)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c_chunk CONSTANT int := 100000;
    v_after  bigint := 0;
    v_read   bigint := 0;
    v_events runhub.business_events[];
BEGIN
    PERFORM runhub._lock_project(p_project);
    LOOP
        -- What keeping customers reads, without the payload (up to 32 KiB an event, in memory).
        SELECT array_agg(runhub._event_row(e.project_id, e.event_type, e.occurred_at, NULL, NULL, e.customer_email,
                                           e.customer_name, e.customer_locale, NULL, NULL, NULL)), max(e.id)
          INTO v_events, v_after
          FROM (SELECT * FROM runhub.business_events
                 WHERE project_id = p_project AND id > v_after AND customer_email IS NOT NULL
                 ORDER BY id LIMIT c_chunk) e;
        EXIT WHEN v_events IS NULL;
        PERFORM runhub._store_events(v_events, p_stored => true);
        v_read := v_read + cardinality(v_events);
    END LOOP;
    RETURN v_read;
END
$$;

DROP TRIGGER IF EXISTS business_events_customers ON runhub.business_events;  -- before 24: kept by a statement trigger
DROP FUNCTION IF EXISTS runhub._customers_from_events();

-- An upsert that changes nothing writes nothing (a replayed or older event of a known customer):
-- no new row version, no index entries, nothing for vacuum.
CREATE OR REPLACE TRIGGER customers_skip_unchanged
    BEFORE UPDATE ON runhub.customers
    FOR EACH ROW EXECUTE FUNCTION pg_catalog.suppress_redundant_updates_trigger();
