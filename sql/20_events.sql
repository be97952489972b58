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

-- An instant as the API writes it: UTC, microseconds, 'Z'.
CREATE OR REPLACE FUNCTION runhub._iso(p_at timestamptz)
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN to_char(p_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'); END $$;

-- A JSON value as text if it is a JSON string, else raise events.invalid for field.
CREATE OR REPLACE FUNCTION runhub._event_string(p_value jsonb, p_field text, p_max int)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_text text;
BEGIN
    IF p_value IS NULL OR p_value = 'null' THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(p_value) <> 'string' THEN
        PERFORM runhub._invalid('events.invalid', p_field, 'must be a string');
    END IF;
    v_text := p_value #>> '{}';
    IF length(v_text) NOT BETWEEN 1 AND p_max THEN
        PERFORM runhub._invalid('events.invalid', p_field, format('must be 1 to %s characters', p_max));
    END IF;
    RETURN v_text;
END
$$;

-- Whether an instant a client sends is plausible: finite, after 2000, at most a day ahead of the
-- server (timestamptz also holds infinity and years up to 294276).
-- No SET clause: an expression inlined where it is used (ingest, create_run), not a function
-- call planned again each time.
CREATE OR REPLACE FUNCTION runhub._is_client_instant(p_at timestamptz)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT p_at >= '2000-01-01T00:00:00Z' AND p_at <= now() + interval '1 day' $$;

-- Event types runhub writes itself, now and later: its sends (*_email_sent, every action's
-- sent_event_type) and anything named runhub_*. Clients may not ingest them.
-- PL/pgSQL: its query's plan is cached for the session (a SQL function with a SET clause is
-- planned on every call, and every ingested event calls it).
CREATE OR REPLACE FUNCTION runhub._is_system_event_type(p_type text)
RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN p_type LIKE '%\_email\_sent' OR p_type LIKE 'runhub\_%'
        OR EXISTS (SELECT 1 FROM runhub.actions a WHERE a.sent_event_type = p_type);
END
$$;

-- Idempotency-key namespaces runhub writes in: mail:<Message-ID> for its sends, runhub:* for later.
CREATE OR REPLACE FUNCTION runhub._is_system_idempotency_key(p_key text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT lower(p_key) LIKE 'mail:%' OR lower(p_key) LIKE 'runhub:%' $$;  -- no SET clause: inlined

-- Validate an incoming event and return it as a business_events row (id and received_at unset).
CREATE OR REPLACE FUNCTION runhub._event_from_json(p_project uuid, p_event jsonb)
RETURNS runhub.business_events
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row      runhub.business_events;
    v_key      text;
    v_customer jsonb;
    v_text     text;
    v_amount   jsonb;
    v_number   numeric;
    v_bytes    int;
BEGIN
    IF p_event IS NULL OR jsonb_typeof(p_event) <> 'object' THEN
        PERFORM runhub._invalid('events.invalid', 'event', 'must be a JSON object');
    END IF;
    SELECT k INTO v_key FROM jsonb_object_keys(p_event) k
     WHERE k NOT IN ('type', 'occurredAt', 'idempotencyKey', 'correlationId', 'customer',
                     'amountCents', 'currency', 'payload')
     ORDER BY k LIMIT 1;
    IF v_key IS NOT NULL THEN
        PERFORM runhub._raise('events.unknownField', jsonb_build_object('field', v_key));
    END IF;
    v_row.project_id := p_project;

    v_row.event_type := runhub._event_string(p_event -> 'type', 'type', 64);
    IF v_row.event_type IS NULL OR v_row.event_type !~ '^[a-z][a-z0-9_]{0,63}$' THEN
        PERFORM runhub._invalid('events.invalid', 'type', 'is required: lower-case letters, digits and _');
    END IF;

    v_text := runhub._event_string(p_event -> 'occurredAt', 'occurredAt', 40);
    v_row.occurred_at := runhub._parse_instant(v_text);
    IF v_row.occurred_at IS NULL THEN
        PERFORM runhub._invalid('events.invalid', 'occurredAt', 'is required: an ISO 8601 instant with an offset');
    ELSIF NOT runhub._is_client_instant(v_row.occurred_at) THEN
        PERFORM runhub._invalid('events.invalid', 'occurredAt', 'must be after 2000 and at most a day ahead of the server');
    END IF;

    v_row.idempotency_key := runhub._event_string(p_event -> 'idempotencyKey', 'idempotencyKey', 255);
    IF v_row.idempotency_key IS NULL THEN
        PERFORM runhub._invalid('events.invalid', 'idempotencyKey', 'is required');
    END IF;
    -- What runhub records itself (its sends) must never come from a client: a forged send could
    -- earn a workflow money, and a key taken in advance would silence the real one.
    IF runhub._is_system_event_type(v_row.event_type) THEN
        PERFORM runhub._raise('events.reservedForRunhub', jsonb_build_object('field', 'type', 'value', v_row.event_type));
    END IF;
    IF runhub._is_system_idempotency_key(v_row.idempotency_key) THEN
        PERFORM runhub._raise('events.reservedForRunhub', jsonb_build_object(
            'field', 'idempotencyKey', 'value', split_part(v_row.idempotency_key, ':', 1) || ':…'));
    END IF;
    v_row.correlation_id := runhub._event_string(p_event -> 'correlationId', 'correlationId', 255);

    v_customer := p_event -> 'customer';
    IF v_customer IS NOT NULL AND v_customer <> 'null' THEN
        IF jsonb_typeof(v_customer) <> 'object' THEN
            PERFORM runhub._invalid('events.invalid', 'customer', 'must be an object');
        END IF;
        SELECT k INTO v_key FROM jsonb_object_keys(v_customer) k
         WHERE k NOT IN ('email', 'name', 'locale') ORDER BY k LIMIT 1;
        IF v_key IS NOT NULL THEN
            PERFORM runhub._raise('events.unknownField', jsonb_build_object('field', 'customer.' || v_key));
        END IF;
        -- Trimmed of every kind of white space before the length check: an address padded with an
        -- invisible character would never match the same customer's other events.
        v_row.customer_email := lower(runhub._trim(runhub._event_string(v_customer -> 'email', 'customer.email', 1000)));
        -- Only an address the sender can deliver (plpython/addresses.py). The common ones are checked
        -- here, sparing a PL/Python call (and a session's first, ~20 ms): ASCII_FAST_PATTERN there,
        -- with the lengths (tests/test_mailbox.py proves it agrees); the grammar takes the rest.
        IF v_row.customer_email !~ '^[a-z0-9!#$%&\x27*+/=^_`{|}~-]+(\.[a-z0-9!#$%&\x27*+/=^_`{|}~-]+)*@([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z]([a-z0-9-]*[a-z0-9])?$'
           OR length(v_row.customer_email) > 254 OR length(split_part(v_row.customer_email, '@', 2)) > 63
           OR strpos(v_row.customer_email, 'xn--') > 0 THEN  -- A-labels are stored in Unicode
            v_row.customer_email := runhub._mailbox(v_row.customer_email);
            IF v_row.customer_email IS NULL THEN
                PERFORM runhub._invalid('events.invalid', 'customer.email', 'is not a deliverable e-mail address (ASCII local part, host name, at most 254 characters)');
            END IF;
        END IF;
        v_row.customer_name := nullif(runhub._trim(runhub._event_string(v_customer -> 'name', 'customer.name', 200)), '');
        v_row.customer_locale := runhub._event_string(v_customer -> 'locale', 'customer.locale', 35);
        IF v_row.customer_locale !~ '^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$' THEN
            PERFORM runhub._invalid('events.invalid', 'customer.locale', 'is not a language tag such as en or fr-CA');
        END IF;
    END IF;

    v_amount := p_event -> 'amountCents';
    IF v_amount IS NOT NULL AND v_amount <> 'null' THEN
        -- Nested tests: SQL does not promise to short-circuit OR, and a string must never reach ::numeric.
        IF jsonb_typeof(v_amount) = 'number' THEN
            v_number := (v_amount::text)::numeric;
        END IF;
        IF v_number IS NULL OR v_number <> trunc(v_number) OR v_number NOT BETWEEN 0 AND 9007199254740991 THEN
            PERFORM runhub._invalid('events.invalid', 'amountCents', 'must be a whole number of minor units, 0 or more');
        END IF;
        v_row.amount_cents := v_number;
    END IF;
    v_text := runhub._event_string(p_event -> 'currency', 'currency', 3);
    IF v_text IS NOT NULL AND NOT EXISTS (SELECT 1 FROM runhub.currencies WHERE code = v_text) THEN
        PERFORM runhub._invalid('events.invalid', 'currency', 'is not an ISO 4217 currency code');
    END IF;
    v_row.currency := v_text;
    IF (v_row.amount_cents IS NULL) <> (v_row.currency IS NULL) THEN
        PERFORM runhub._invalid('events.invalid', CASE WHEN v_row.currency IS NULL THEN 'currency' ELSE 'amountCents' END,
                                'amountCents and currency go together');
    END IF;

    v_row.payload := coalesce(nullif(p_event -> 'payload', 'null'), '{}');
    IF jsonb_typeof(v_row.payload) <> 'object' THEN
        PERFORM runhub._invalid('events.invalid', 'payload', 'must be an object');
    END IF;
    v_bytes := octet_length(v_row.payload::text);
    IF v_bytes > 32768 THEN
        PERFORM runhub._raise('events.payloadTooLarge', jsonb_build_object('bytes', v_bytes, 'maxBytes', 32768));
    END IF;
    RETURN v_row;
END
$$;

-- Append an event, idempotent on (project, idempotencyKey): a replay, even a concurrent one,
-- returns the first event's id with inserted = false and writes nothing.
CREATE OR REPLACE FUNCTION runhub.ingest_event(p_project uuid, p_event jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row runhub.business_events;
    v_id  bigint;
BEGIN
    PERFORM runhub._require_project(p_project);
    v_row := runhub._event_from_json(p_project, p_event);
    INSERT INTO runhub.business_events (project_id, event_type, occurred_at, idempotency_key, correlation_id,
                                        customer_email, customer_name, customer_locale, amount_cents, currency, payload)
    VALUES (v_row.project_id, v_row.event_type, v_row.occurred_at, v_row.idempotency_key, v_row.correlation_id,
            v_row.customer_email, v_row.customer_name, v_row.customer_locale, v_row.amount_cents, v_row.currency,
            v_row.payload)
    ON CONFLICT (project_id, idempotency_key) DO NOTHING
    RETURNING id INTO v_id;
    IF v_id IS NOT NULL THEN
        RETURN jsonb_build_object('eventId', v_id, 'inserted', true);
    END IF;
    -- ON CONFLICT waited for the first writer to commit, so a fresh snapshot sees its row.
    SELECT id INTO v_id FROM runhub.business_events WHERE project_id = p_project AND idempotency_key = v_row.idempotency_key;
    RETURN jsonb_build_object('eventId', v_id, 'inserted', false);
EXCEPTION WHEN foreign_key_violation THEN  -- the project was deleted under us
    PERFORM runhub._raise('projects.notFound', jsonb_build_object('projectId', p_project));
END
$$;

-- Many events at once, for imports (a shop backfilling its history): p_events is a JSON array of
-- 1 to 5,000 events, each validated exactly as ingest_event validates one and stored idempotently
-- (per project and idempotency key; a key twice in the batch is stored once). Returns a JSON array
-- in the order given: {eventId, inserted} for each event, or {error: {code, key, params, message}}
-- for one refused as ingest_event would refuse it (the others are still stored). A refusal of the
-- call itself (no such project, not an array, none or too many) stores nothing. Payments are
-- attributed as they are one by one (the row trigger), customers kept up (the statement trigger).
CREATE OR REPLACE FUNCTION runhub.ingest_events(p_project uuid, p_events jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c_max     CONSTANT int := 5000;
    v_count   int;
    v_rows    runhub.business_events[];  -- v_rows[n]: the n-th event validated (null where refused)
    v_errors  jsonb[];                   -- v_errors[n]: why the n-th was refused
    v_event   jsonb;
    v_n       int;
    v_state   text;
    v_key     text;
    v_params  text;
    v_message text;
    v_new_keys text[];
    v_new_ids  bigint[];
    v_result  jsonb;
BEGIN
    PERFORM runhub._require_project(p_project);
    IF jsonb_typeof(p_events) IS DISTINCT FROM 'array' THEN
        PERFORM runhub._invalid('common.invalidInput', 'events', 'must be a JSON array of events');
    END IF;
    v_count := jsonb_array_length(p_events);
    IF v_count NOT BETWEEN 1 AND c_max THEN
        PERFORM runhub._invalid('common.invalidInput', 'events', format('holds 1 to %s events, not %s', c_max, v_count));
    END IF;
    -- All validated in one go while all are valid (a batch from an importer usually is); at the
    -- first refusal, one by one, each in a subtransaction of its own, to say which and why.
    BEGIN
        SELECT array_agg(runhub._event_from_json(p_project, x.e) ORDER BY x.n) INTO v_rows
          FROM jsonb_array_elements(p_events) WITH ORDINALITY AS x(e, n);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE;
        IF v_state NOT LIKE 'PT4%' THEN
            RAISE;
        END IF;
        v_rows := array_fill(NULL::runhub.business_events, ARRAY[v_count]);
        v_errors := array_fill(NULL::jsonb, ARRAY[v_count]);
        v_n := 0;
        FOR v_event IN SELECT x.e FROM jsonb_array_elements(p_events) WITH ORDINALITY AS x(e, n) ORDER BY x.n LOOP
            v_n := v_n + 1;
            BEGIN
                v_rows[v_n] := runhub._event_from_json(p_project, v_event);
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_key = MESSAGE_TEXT,
                                        v_params = PG_EXCEPTION_DETAIL, v_message = PG_EXCEPTION_HINT;
                IF v_state NOT LIKE 'PT4%' THEN
                    RAISE;
                END IF;
                v_errors[v_n] := jsonb_build_object('error', jsonb_build_object(
                    'code', v_state, 'key', v_key, 'params', coalesce(v_params, '{}')::jsonb, 'message', v_message));
            END;
        END LOOP;
    END;
    WITH stored AS (
        INSERT INTO runhub.business_events (project_id, event_type, occurred_at, idempotency_key, correlation_id,
                                            customer_email, customer_name, customer_locale, amount_cents, currency, payload)
        SELECT (x.r).project_id, (x.r).event_type, (x.r).occurred_at, (x.r).idempotency_key, (x.r).correlation_id,
               (x.r).customer_email, (x.r).customer_name, (x.r).customer_locale, (x.r).amount_cents, (x.r).currency,
               (x.r).payload
          FROM (SELECT v_rows[gs.n] AS r, gs.n FROM generate_series(1, v_count) AS gs(n) OFFSET 0) x
         WHERE (x.r).event_type IS NOT NULL
         ORDER BY x.n  -- ids in the order given
        ON CONFLICT (project_id, idempotency_key) DO NOTHING
        RETURNING id, idempotency_key
    )
    SELECT coalesce(array_agg(s.idempotency_key), '{}'), coalesce(array_agg(s.id), '{}') INTO v_new_keys, v_new_ids
      FROM stored s;
    -- A statement of its own: its snapshot sees the rows of the writers ON CONFLICT waited for.
    SELECT jsonb_agg(coalesce(v_errors[t.n], jsonb_build_object('eventId', t.id, 'inserted', t.inserted)) ORDER BY t.n)
      INTO v_result
      FROM (SELECT g.n, coalesce(s.id, e.id) AS id,
                   -- inserted: by this call, and only for the first of its key in the batch
                   s.id IS NOT NULL AND g.n = min(g.n) OVER (PARTITION BY g.key) AS inserted
              FROM (SELECT gs.n, (v_rows[gs.n]).idempotency_key AS key FROM generate_series(1, v_count) AS gs(n)) g
              LEFT JOIN unnest(v_new_keys, v_new_ids) AS s(key, id) ON s.key = g.key
              LEFT JOIN runhub.business_events e
                     ON s.id IS NULL AND g.key IS NOT NULL AND e.project_id = p_project AND e.idempotency_key = g.key) t;
    RETURN v_result;
EXCEPTION WHEN foreign_key_violation THEN  -- the project was deleted under us
    PERFORM runhub._raise('projects.notFound', jsonb_build_object('projectId', p_project));
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
    p_project uuid, p_actor uuid, p_order text DEFAULT 'timeline', p_cursor jsonb DEFAULT NULL, p_limit int DEFAULT 50)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c_max_limit CONSTANT int := 500;
    v_after_at  timestamptz;
    v_after_id  bigint;
    v_page      runhub.business_events[];
    v_last      runhub.business_events;
    v_next      jsonb;
BEGIN
    PERFORM runhub._authorize(p_project, p_actor);
    IF p_order IS NULL OR p_order NOT IN ('timeline', 'ingestion') THEN
        PERFORM runhub._raise('events.invalidOrder', jsonb_build_object('order', p_order));
    END IF;
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND c_max_limit THEN
        PERFORM runhub._raise('events.invalidLimit', jsonb_build_object('limit', p_limit, 'max', c_max_limit));
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
            'order', p_order, 'reason', 'expected exactly the fields ' || array_to_string(v_expected, ', ')));
    END IF;
    IF jsonb_typeof(p_cursor -> 'id') <> 'number' OR (p_cursor ->> 'id') !~ '^[1-9]\d{0,17}$' THEN
        PERFORM runhub._raise('events.invalidCursor', jsonb_build_object('order', p_order, 'reason', 'id must be a positive integer'));
    END IF;
    after_id := (p_cursor ->> 'id')::bigint;
    IF p_order = 'timeline' THEN
        after_at := CASE WHEN jsonb_typeof(p_cursor -> 'occurredAt') = 'string'
                         THEN runhub._parse_instant(p_cursor ->> 'occurredAt') END;
        IF after_at IS NULL OR NOT runhub._is_client_instant(after_at) THEN
            PERFORM runhub._raise('events.invalidCursor', jsonb_build_object(
                'order', p_order, 'reason', 'occurredAt must be an ISO 8601 instant after 2000, at most a day ahead'));
        END IF;
    END IF;
END
$$;

-- Keep runhub.customers in step with the events of each INSERT statement (one upsert per customer,
-- in e-mail order so concurrent batches lock rows in the same order). Our own *_email_sent events
-- are not customer activity.
CREATE OR REPLACE FUNCTION runhub._customers_from_events()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO runhub.customers AS c (project_id, email, name, locale, first_seen_at, last_seen_at,
                                       signed_up_at, last_engaged_at, last_paid_at)
    SELECT e.project_id, e.customer_email,
           (array_agg(e.customer_name ORDER BY e.occurred_at DESC) FILTER (WHERE e.customer_name IS NOT NULL))[1],
           (array_agg(e.customer_locale ORDER BY e.occurred_at DESC) FILTER (WHERE e.customer_locale IS NOT NULL))[1],
           min(e.occurred_at), max(e.occurred_at),
           max(e.occurred_at) FILTER (WHERE e.event_type = 'user_signed_up'),
           max(e.occurred_at) FILTER (WHERE e.event_type <> 'user_signed_up'),
           max(e.occurred_at) FILTER (WHERE e.event_type = 'payment_succeeded')
      FROM new_events e
     WHERE e.customer_email IS NOT NULL AND e.event_type !~ '_email_sent$'
     GROUP BY e.project_id, e.customer_email
     ORDER BY e.project_id, e.customer_email
    ON CONFLICT (project_id, email) DO UPDATE SET
        name            = CASE WHEN excluded.last_seen_at >= c.last_seen_at
                               THEN coalesce(excluded.name, c.name) ELSE coalesce(c.name, excluded.name) END,
        locale          = CASE WHEN excluded.last_seen_at >= c.last_seen_at
                               THEN coalesce(excluded.locale, c.locale) ELSE coalesce(c.locale, excluded.locale) END,
        first_seen_at   = least(c.first_seen_at, excluded.first_seen_at),
        last_seen_at    = greatest(c.last_seen_at, excluded.last_seen_at),
        signed_up_at    = greatest(c.signed_up_at, excluded.signed_up_at),
        last_engaged_at = greatest(c.last_engaged_at, excluded.last_engaged_at),
        last_paid_at    = greatest(c.last_paid_at, excluded.last_paid_at);
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER business_events_customers
    AFTER INSERT ON runhub.business_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION runhub._customers_from_events();
