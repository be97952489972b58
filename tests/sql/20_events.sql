-- Business events: ingest_event (validation, normalization, idempotency), the append-only guard,
-- and list_events in timeline and ingestion order with cursors. The exhaustive bad-input sweep is
-- pytest's; here one representative refusal per field.
BEGIN;
\ir helpers.psql
SELECT * FROM no_plan();

\set p_owner '''cccccccc-0000-4000-8000-000000000001'''
\set l_owner '''cccccccc-0000-4000-8000-000000000003'''
\set e_owner '''cccccccc-0000-4000-8000-000000000004'''
\set l_member '''cccccccc-0000-4000-8000-000000000005'''
SELECT runhub.create_project('Events shop', :p_owner, 'UTC', 'EUR') AS p \gset
SELECT runhub.create_project('Other shop', 'cccccccc-0000-4000-8000-000000000002', 'Asia/Tokyo', 'JPY') AS q \gset

-- The refusal an event gets from ingest_event in project p (see pg_temp.refusal).
CREATE FUNCTION pg_temp.ingest_refusal(p_project uuid, p_event jsonb)
RETURNS text LANGUAGE sql
AS $$ SELECT pg_temp.refusal(format('SELECT runhub.ingest_event(%L, %L)', p_project, p_event)) $$;

-- ---------------------------------------------------------------------------------------------
-- Happy path: every field stored, e-mail normalized, occurredAt turned into an instant.
\set full '{"type": "checkout_completed", "occurredAt": "2024-05-01T10:00:00+02:00", "idempotencyKey": "order-77", "correlationId": "cart-9", "customer": {"email": "  Ana.Doe@Example.COM ", "name": "Ana Doe", "locale": "fr-CA"}, "amountCents": 1234, "currency": "EUR", "payload": {"cart": {"items": 2}, "note": "déjà vu"}}'
SELECT runhub.ingest_event(:'p', :'full') AS first \gset
SELECT is((:'first'::jsonb) -> 'inserted', 'true'::jsonb, 'ingest_event: inserted = true for a new event');
SELECT is(((:'first'::jsonb) ->> 'eventId')::bigint,
          (SELECT id FROM runhub.business_events WHERE project_id = :'p' AND idempotency_key = 'order-77'),
          'ingest_event: eventId is the stored row''s id');
SELECT is(jsonb_typeof((:'first'::jsonb) -> 'eventId'), 'number', 'eventId is a JSON number');
SELECT results_eq(format($$SELECT event_type, occurred_at, idempotency_key, correlation_id, customer_email,
                                  customer_name, customer_locale, amount_cents, currency::text, payload
                             FROM runhub.business_events WHERE project_id = %L$$, :'p'),
                  $$VALUES ('checkout_completed', '2024-05-01T08:00:00Z'::timestamptz, 'order-77', 'cart-9',
                            'ana.doe@example.com', 'Ana Doe', 'fr-CA', 1234::bigint, 'EUR',
                            '{"cart": {"items": 2}, "note": "déjà vu"}'::jsonb)$$,
                  'every field stored; e-mail lower-cased and trimmed; occurredAt +02:00 stored as 08:00 UTC');
SELECT is((SELECT received_at FROM runhub.business_events WHERE project_id = :'p'), now(),
          'received_at is the server''s time, not the sender''s');

SELECT runhub.ingest_event(:'p', '{"type": "lead_created", "occurredAt": "2024-05-01T12:00:00Z", "idempotencyKey": "lead-1"}') AS minimal \gset
SELECT results_eq(format($$SELECT correlation_id, customer_email, customer_name, customer_locale, amount_cents, currency::text, payload
                             FROM runhub.business_events WHERE id = %s$$, (:'minimal'::jsonb) ->> 'eventId'),
                  $$VALUES (NULL::text, NULL::text, NULL::text, NULL::text, NULL::bigint, NULL::text, '{}'::jsonb)$$,
                  'a minimal event (type, occurredAt, idempotencyKey) stores nulls and an empty payload');
SELECT lives_ok(format($$SELECT runhub.ingest_event(%L, %L)$$, :'p',
                       '{"type": "x", "occurredAt": "2024-05-01 12:00+0530", "idempotencyKey": "k", "customer": null, "amountCents": null, "currency": null, "payload": null}'),
                'explicit JSON nulls are the same as absent fields; +0530 and a space separator are ISO 8601');
SELECT is((SELECT occurred_at FROM runhub.business_events WHERE project_id = :'p' AND idempotency_key = 'k'),
          '2024-05-01T06:30:00Z'::timestamptz, 'a +0530 offset is applied');
SELECT lives_ok(format($$SELECT runhub.ingest_event(%L, %L)$$, :'p',
                       jsonb_build_object('type', 'big', 'occurredAt', '2024-05-01T00:00:00Z', 'idempotencyKey', 'big',
                                          'amountCents', 9007199254740991, 'currency', 'JPY',
                                          'payload', jsonb_build_object('x', repeat('a', 32759)))),
                'boundaries accepted: amountCents 2^53-1, payload of exactly 32768 bytes');

-- ---------------------------------------------------------------------------------------------
-- Idempotency on (project, idempotencyKey): a replay returns the first event's id, inserted = false,
-- and writes nothing, even when the replay's content differs.
SELECT is(runhub.ingest_event(:'p', :'full'),
          jsonb_build_object('eventId', ((:'first'::jsonb) ->> 'eventId')::bigint, 'inserted', false),
          'a replay returns the same eventId with inserted = false');
SELECT is(runhub.ingest_event(:'p', (:'full'::jsonb) || '{"amountCents": 1, "type": "other"}'),
          jsonb_build_object('eventId', ((:'first'::jsonb) ->> 'eventId')::bigint, 'inserted', false),
          'a replay with different content also returns the first event');
SELECT results_eq(format($$SELECT count(*)::int, min(amount_cents), min(event_type) FROM runhub.business_events
                            WHERE project_id = %L AND idempotency_key = 'order-77'$$, :'p'),
                  $$VALUES (1, 1234::bigint, 'checkout_completed')$$,
                  'one row for the key, and the first event''s content is kept');
SELECT is((runhub.ingest_event(:'q', :'full')) -> 'inserted', 'true'::jsonb,
          'the same idempotencyKey in another project is a new event');
SELECT isnt((SELECT id FROM runhub.business_events WHERE project_id = :'q' AND idempotency_key = 'order-77'),
            ((:'first'::jsonb) ->> 'eventId')::bigint, '... with its own id');

-- ---------------------------------------------------------------------------------------------
-- Refusals, one representative per field: SQLSTATE, key and field; none writes a row.
\set ok_event '{"type": "checkout_started", "occurredAt": "2024-05-01T10:00:00Z", "idempotencyKey": "bad-1"}'
SELECT count(*) AS events_before FROM runhub.business_events \gset

SELECT is(pg_temp.ingest_refusal(:'p', '[]'), 'PT400 events.invalid event', 'an array: events.invalid (event)');
SELECT is(pg_temp.ingest_refusal(:'p', NULL), 'PT400 events.invalid event', 'a null event: events.invalid (event)');
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) || '{"colour": "red"}'),
          'PT400 events.unknownField colour', 'an unknown top-level field: events.unknownField (colour)');
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) - 'type'), 'PT400 events.invalid type', 'no type: events.invalid (type)');
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) || '{"type": "Checkout"}'), 'PT400 events.invalid type',
          'an upper-case type: events.invalid (type)');
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) || '{"type": 42}'), 'PT400 events.invalid type',
          'a numeric type: events.invalid (type)');
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) - 'occurredAt'), 'PT400 events.invalid occurredAt',
          'no occurredAt: events.invalid (occurredAt)');
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) || '{"occurredAt": "2024-05-01T10:00:00"}'),
          'PT400 events.invalid occurredAt', 'occurredAt without an offset: events.invalid (the session TimeZone must not decide)');
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) || '{"occurredAt": "2024-02-30T10:00:00Z"}'),
          'PT400 events.invalid occurredAt', 'occurredAt on 30 February: events.invalid, not a 22008');
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) || '{"occurredAt": "1999-12-31T23:59:59Z"}'),
          'PT400 events.invalid occurredAt', 'occurredAt before 2000: events.invalid');
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) || jsonb_build_object('occurredAt', to_char(now() + interval '2 days', 'YYYY-MM-DD"T"HH24:MI:SSOF'))),
          'PT400 events.invalid occurredAt', 'occurredAt two days ahead: events.invalid');
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) - 'idempotencyKey'), 'PT400 events.invalid idempotencyKey',
          'no idempotencyKey: events.invalid (idempotencyKey)');
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) || jsonb_build_object('idempotencyKey', repeat('k', 256))),
          'PT400 events.invalid idempotencyKey', 'a 256-character idempotencyKey: events.invalid');
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) || '{"correlationId": 7}'), 'PT400 events.invalid correlationId',
          'a numeric correlationId: events.invalid (correlationId)');
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) || '{"customer": "ana@example.com"}'), 'PT400 events.invalid customer',
          'customer as a string: events.invalid (customer)');
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) || '{"customer": {"phone": "555"}}'),
          'PT400 events.unknownField customer.phone', 'an unknown customer field: events.unknownField (customer.phone)');
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) || '{"customer": {"email": "not-an-email"}}'),
          'PT400 events.invalid customer.email', 'a bad e-mail: events.invalid (customer.email)');
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) || jsonb_build_object('customer', jsonb_build_object('name', repeat('n', 201)))),
          'PT400 events.invalid customer.name', 'a 201-character name: events.invalid (customer.name)');
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) || '{"customer": {"locale": "EN_us"}}'),
          'PT400 events.invalid customer.locale', 'a bad locale: events.invalid (customer.locale)');
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) || '{"amountCents": -1, "currency": "EUR"}'),
          'PT400 events.invalid amountCents', 'a negative amount: events.invalid (amountCents)');
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) || '{"amountCents": 12.5, "currency": "EUR"}'),
          'PT400 events.invalid amountCents', 'a fractional amount: events.invalid (amountCents)');
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) || '{"amountCents": "100", "currency": "EUR"}'),
          'PT400 events.invalid amountCents', 'an amount as a string: events.invalid (amountCents)');
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) || '{"amountCents": 9007199254740992, "currency": "EUR"}'),
          'PT400 events.invalid amountCents', 'an amount above 2^53-1: events.invalid (amountCents)');
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) || '{"amountCents": 100, "currency": "usd"}'),
          'PT400 events.invalid currency', 'a lower-case currency: events.invalid (currency)');
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) || '{"amountCents": 100}'),
          'PT400 events.invalid currency', 'an amount without a currency: events.invalid (currency)');
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) || '{"currency": "EUR"}'),
          'PT400 events.invalid amountCents', 'a currency without an amount: events.invalid (amountCents)');
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) || '{"payload": [1, 2]}'),
          'PT400 events.invalid payload', 'an array payload: events.invalid (payload)');
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) || jsonb_build_object('payload', jsonb_build_object('x', repeat('a', 32760)))),
          'PT413 events.payloadTooLarge', 'a payload of 32769 bytes: PT413 events.payloadTooLarge');
SELECT is((pg_temp.caught(format('SELECT runhub.ingest_event(%L, %L)', :'p',
                                 (:'ok_event'::jsonb) || jsonb_build_object('payload', jsonb_build_object('x', repeat('a', 32760)))))
           ->> 'detail')::jsonb,
          '{"bytes": 32769, "maxBytes": 32768}'::jsonb, 'payloadTooLarge reports the size and the limit');
SELECT is(pg_temp.ingest_refusal('cccccccc-0000-4000-8000-0000000000ff', :'ok_event'), 'PT404 projects.notFound',
          'an unknown project: PT404 projects.notFound');
SELECT is(pg_temp.ingest_refusal(NULL, :'ok_event'), 'PT400 common.invalidInput project',
          'a null project: PT400 common.invalidInput (project)');
-- What runhub records itself (its sends) never comes from a client: *_email_sent and runhub_* types,
-- and idempotency keys in the mail: and runhub: namespaces.
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) || '{"type": "recovery_email_sent"}'),
          'PT400 events.reservedForRunhub type', 'an action''s sent event type: events.reservedForRunhub (type)');
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) || '{"type": "newsletter_email_sent"}'),
          'PT400 events.reservedForRunhub type', 'any *_email_sent type: events.reservedForRunhub (type)');
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) || '{"type": "runhub_digest"}'),
          'PT400 events.reservedForRunhub type', 'a runhub_* type: events.reservedForRunhub (type)');
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) || '{"idempotencyKey": "mail:<abc@runhub>"}'),
          'PT400 events.reservedForRunhub idempotencyKey', 'a mail: key: events.reservedForRunhub (idempotencyKey)');
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) || '{"idempotencyKey": "MAIL:<abc@runhub>"}'),
          'PT400 events.reservedForRunhub idempotencyKey', 'a MAIL: key in upper case: events.reservedForRunhub (idempotencyKey)');
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) || '{"idempotencyKey": "mailbox:1"}'),
          'no error', 'a key that only starts like the namespace (mailbox:) is the client''s');
SELECT :'events_before'::bigint + 1 AS events_before \gset
SELECT is(pg_temp.ingest_refusal(:'p', (:'ok_event'::jsonb) || '{"idempotencyKey": "RunHub:later"}'),
          'PT400 events.reservedForRunhub idempotencyKey', 'a runhub: key in any case: events.reservedForRunhub (idempotencyKey)');
SELECT is((pg_temp.caught(format('SELECT runhub.ingest_event(%L, %L)', :'p',
                                 (:'ok_event'::jsonb) || '{"idempotencyKey": "mail:<secret-message-id@runhub>"}')) ->> 'detail')::jsonb,
          '{"field": "idempotencyKey", "value": "mail:…"}'::jsonb, 'the refusal names the namespace, not the whole key');
SELECT is((SELECT count(*) FROM runhub.business_events), :'events_before'::bigint, 'no refused event wrote a row');

-- ---------------------------------------------------------------------------------------------
-- Append-only: UPDATE, DELETE and TRUNCATE are refused even for the superuser; deleting the
-- project is the one way events go, by cascade.
SELECT throws_ok(format($$UPDATE runhub.business_events SET amount_cents = 1 WHERE project_id = %L$$, :'p'),
                 'PT409', 'events.appendOnly', 'UPDATE: PT409 events.appendOnly');
SELECT is((pg_temp.caught($$UPDATE runhub.business_events SET payload = '{}'$$) ->> 'detail')::jsonb,
          '{"table": "business_events", "operation": "UPDATE"}'::jsonb, 'the refusal names the table and the operation');
SELECT throws_ok(format($$DELETE FROM runhub.business_events WHERE project_id = %L$$, :'p'),
                 'PT409', 'events.appendOnly', 'DELETE: PT409 events.appendOnly');
SELECT throws_ok($$TRUNCATE runhub.business_events$$, 'PT409', 'events.appendOnly', 'TRUNCATE: PT409 events.appendOnly');
SELECT is((pg_temp.caught($$TRUNCATE runhub.business_events$$) ->> 'detail')::jsonb,
          '{"table": "business_events", "operation": "TRUNCATE"}'::jsonb, 'the TRUNCATE refusal names TRUNCATE');
SELECT is((SELECT count(*) FROM runhub.business_events), :'events_before'::bigint, 'every event is still there');
SELECT cmp_ok((SELECT count(*) FROM runhub.business_events WHERE project_id = :'q')::int, '>', 0, 'project q has events');
SELECT lives_ok(format($$DELETE FROM runhub.projects WHERE id = %L$$, :'q'), 'deleting a project with events is allowed');
SELECT is_empty(format($$SELECT id FROM runhub.business_events WHERE project_id = %L$$, :'q'),
                'its events were deleted by the cascade');
SELECT is((SELECT count(*) FROM runhub.business_events), :'events_before'::bigint - 1,
          'other projects'' events are untouched');

-- ---------------------------------------------------------------------------------------------
-- An event's documented limits (runhub._constants(): maxEventTypeLength, maxKeyLength,
-- maxCustomerNameLength, maxLocaleLength, maxAmountCents, maxPayloadBytes; the instant's window; 32
-- levels), both sides: at the limit accepted, one past refused. Each is tried in the common shape,
-- which one statement takes as it is, and with an internationalized address, which sends the event
-- field by field (_is_plain_event): the two checks must agree at every edge.
SELECT runhub.create_project('Bounds shop', :p_owner, 'UTC', 'EUR') AS b \gset
-- The refusals of an event in both shapes: as given, and with ann@bücher.de as its customer (and
-- another key of the same length, so that it is no replay of the first).
CREATE FUNCTION pg_temp.both_shapes(p_project uuid, p_event jsonb)
RETURNS text[] LANGUAGE sql
AS $$ SELECT ARRAY[pg_temp.ingest_refusal(p_project, p_event),
                   pg_temp.ingest_refusal(p_project, p_event || jsonb_build_object(
                       'customer', coalesce(p_event -> 'customer', '{}') || '{"email": "ann@bücher.de"}',
                       'idempotencyKey', overlay(p_event ->> 'idempotencyKey' placing '~' from 1 for 1)))] $$;
CREATE FUNCTION pg_temp.b_event(p_key text, p_fields jsonb DEFAULT '{}')
RETURNS jsonb LANGUAGE sql
AS $$ SELECT '{"type": "lead_created", "occurredAt": "2024-05-01T10:00:00Z"}'::jsonb || jsonb_build_object('idempotencyKey', p_key) || p_fields $$;
SELECT is(pg_temp.both_shapes(:'b', pg_temp.b_event('t64', jsonb_build_object('type', 'a' || repeat('b', 63)))),
          '{no error,no error}', 'a 64-character type is accepted (maxEventTypeLength)');
SELECT is(pg_temp.both_shapes(:'b', pg_temp.b_event('t65', jsonb_build_object('type', 'a' || repeat('b', 64)))),
          '{PT400 events.invalid type,PT400 events.invalid type}', 'a 65-character type: events.invalid (type)');
SELECT is(pg_temp.both_shapes(:'b', pg_temp.b_event(repeat('k', 255))), '{no error,no error}',
          'a 255-character idempotencyKey is accepted (maxKeyLength)');
SELECT is(pg_temp.both_shapes(:'b', pg_temp.b_event(repeat('k', 256))),
          '{PT400 events.invalid idempotencyKey,PT400 events.invalid idempotencyKey}', 'a 256-character idempotencyKey: events.invalid');
SELECT is(pg_temp.ingest_refusal(:'b', pg_temp.b_event('')), 'PT400 events.invalid idempotencyKey', 'an empty idempotencyKey: events.invalid');
SELECT is(pg_temp.both_shapes(:'b', pg_temp.b_event('c255', jsonb_build_object('correlationId', repeat('c', 255)))), '{no error,no error}',
          'a 255-character correlationId is accepted');
SELECT is(pg_temp.both_shapes(:'b', pg_temp.b_event('c256', jsonb_build_object('correlationId', repeat('c', 256)))),
          '{PT400 events.invalid correlationId,PT400 events.invalid correlationId}', 'a 256-character correlationId: events.invalid');
SELECT is(pg_temp.both_shapes(:'b', pg_temp.b_event('c0', '{"correlationId": ""}')),
          '{PT400 events.invalid correlationId,PT400 events.invalid correlationId}', 'an empty correlationId: events.invalid');
SELECT is(pg_temp.both_shapes(:'b', pg_temp.b_event('n200', jsonb_build_object('customer', jsonb_build_object('email', 'n@example.com', 'name', repeat('n', 200))))),
          '{no error,no error}', 'a 200-character customer name is accepted (maxCustomerNameLength)');
SELECT is(pg_temp.both_shapes(:'b', pg_temp.b_event('n201', jsonb_build_object('customer', jsonb_build_object('email', 'n@example.com', 'name', repeat('n', 201))))),
          '{PT400 events.invalid customer.name,PT400 events.invalid customer.name}', 'a 201-character customer name: events.invalid');
SELECT is(pg_temp.both_shapes(:'b', pg_temp.b_event('l35', jsonb_build_object('customer', jsonb_build_object('email', 'l@example.com', 'locale', 'en' || repeat('-abcdefgh', 3) || '-abcde')))),
          '{no error,no error}', 'a 35-character language tag is accepted (maxLocaleLength)');
SELECT is(pg_temp.both_shapes(:'b', pg_temp.b_event('l36', jsonb_build_object('customer', jsonb_build_object('email', 'l@example.com', 'locale', 'en' || repeat('-abcdefgh', 3) || '-abcdef')))),
          '{PT400 events.invalid customer.locale,PT400 events.invalid customer.locale}', 'a 36-character language tag (of the pattern): events.invalid');
SELECT is(pg_temp.both_shapes(:'b', pg_temp.b_event('a0', '{"amountCents": 0, "currency": "EUR"}')), '{no error,no error}',
          'an amount of 0 is accepted');
SELECT is(pg_temp.both_shapes(:'b', pg_temp.b_event('amax', '{"amountCents": 9007199254740991, "currency": "EUR"}')), '{no error,no error}',
          'an amount of 2^53-1 is accepted (maxAmountCents)');
SELECT is(pg_temp.both_shapes(:'b', pg_temp.b_event('amax+', '{"amountCents": 9007199254740992, "currency": "EUR"}')),
          '{PT400 events.invalid amountCents,PT400 events.invalid amountCents}', 'an amount of 2^53: events.invalid (amountCents)');
SELECT is(pg_temp.both_shapes(:'b', pg_temp.b_event('aneg', '{"amountCents": -1, "currency": "EUR"}')),
          '{PT400 events.invalid amountCents,PT400 events.invalid amountCents}', 'an amount of -1: events.invalid (amountCents)');
SELECT is(pg_temp.both_shapes(:'b', pg_temp.b_event('o2000', '{"occurredAt": "2000-01-01T00:00:00Z"}')), '{no error,no error}',
          'occurredAt 2000-01-01T00:00:00Z, the first instant of 2000, is accepted');
SELECT is(pg_temp.both_shapes(:'b', pg_temp.b_event('o1999', '{"occurredAt": "1999-12-31T23:59:59.999999Z"}')),
          '{PT400 events.invalid occurredAt,PT400 events.invalid occurredAt}', 'the microsecond before: events.invalid (occurredAt)');
SELECT is(pg_temp.both_shapes(:'b', pg_temp.b_event('o+1d', jsonb_build_object('occurredAt', runhub._iso(now() + interval '1 day')))),
          '{no error,no error}', 'occurredAt exactly a day ahead of the server is accepted');
SELECT is(pg_temp.both_shapes(:'b', pg_temp.b_event('o+1d+', jsonb_build_object('occurredAt', runhub._iso(now() + interval '1 day 1 microsecond')))),
          '{PT400 events.invalid occurredAt,PT400 events.invalid occurredAt}', 'a microsecond more: events.invalid (occurredAt)');
SELECT is(pg_temp.both_shapes(:'b', pg_temp.b_event('p32768', jsonb_build_object('payload', jsonb_build_object('x', repeat('a', 32759))))),
          '{no error,no error}', 'a payload of exactly 32768 bytes is accepted (maxPayloadBytes)');
SELECT is(pg_temp.both_shapes(:'b', pg_temp.b_event('p32769', jsonb_build_object('payload', jsonb_build_object('x', repeat('a', 32760))))),
          '{PT413 events.payloadTooLarge,PT413 events.payloadTooLarge}', 'a payload of 32769 bytes: PT413 events.payloadTooLarge');
SELECT is(pg_temp.both_shapes(:'b', pg_temp.b_event('d32', jsonb_build_object('payload', ('{"d": ' || repeat('[', 31) || '1' || repeat(']', 31) || '}')::jsonb))),
          '{no error,no error}', 'a payload nested 32 levels deep (itself and 31 arrays) is accepted');
SELECT is(pg_temp.both_shapes(:'b', pg_temp.b_event('d33', jsonb_build_object('payload', ('{"d": ' || repeat('[', 32) || '1' || repeat(']', 32) || '}')::jsonb))),
          '{PT400 events.invalid payload,PT400 events.invalid payload}', 'nested 33 levels deep: events.invalid (payload)');
-- The address: at most 254 characters, each domain label at most 63 (field by field past the common shape's 63 of domain).
SELECT is(pg_temp.ingest_refusal(:'b', pg_temp.b_event('e254', jsonb_build_object('customer', jsonb_build_object('email', repeat('a', 242) || '@example.com')))),
          'no error', 'a 254-character address is accepted');
SELECT is(pg_temp.ingest_refusal(:'b', pg_temp.b_event('e255', jsonb_build_object('customer', jsonb_build_object('email', repeat('a', 243) || '@example.com')))),
          'PT400 events.invalid customer.email', 'a 255-character address: events.invalid (customer.email)');
SELECT is(pg_temp.ingest_refusal(:'b', pg_temp.b_event('e63', jsonb_build_object('customer', jsonb_build_object('email', 'ann@' || repeat('a', 63) || '.com')))),
          'no error', 'a domain label of 63 characters is accepted');
SELECT is(pg_temp.ingest_refusal(:'b', pg_temp.b_event('e64', jsonb_build_object('customer', jsonb_build_object('email', 'ann@' || repeat('a', 64) || '.com')))),
          'PT400 events.invalid customer.email', 'a domain label of 64 characters: events.invalid (customer.email)');
SELECT is(ARRAY(SELECT DISTINCT customer_email COLLATE "C" FROM runhub.business_events WHERE project_id = :'b' AND customer_email LIKE 'ann@%' ORDER BY 1),
          ARRAY['ann@' || repeat('a', 63) || '.com', 'ann@bücher.de'], 'the accepted addresses are stored (the internationalized one in Unicode)');

-- ---------------------------------------------------------------------------------------------
-- ingest_events: 1 to 5,000 events (maxIngestBatch) and at most 32 MiB as stored (maxIngestBatchBytes),
-- each event answered in place. A refusal of the call stores nothing.
CREATE FUNCTION pg_temp.batch_sql(p_project uuid, p_count int, p_prefix text)
RETURNS text LANGUAGE sql
AS $$ SELECT format($f$SELECT runhub.ingest_events(%L, (SELECT coalesce(jsonb_agg(jsonb_build_object('type', 'imported', 'occurredAt', '2024-01-01T00:00:00Z',
                                                                                       'idempotencyKey', %L || i) ORDER BY i), '[]')
                                                      FROM generate_series(1, %s) i))$f$, p_project, p_prefix, p_count) $$;
SELECT runhub.create_project('Import shop', :p_owner, 'UTC', 'EUR') AS imp \gset
SELECT is(ARRAY(SELECT v::text || ' -> ' || pg_temp.refusal(format('SELECT runhub.ingest_events(%L, %L)', :'imp', v))
                  FROM unnest(ARRAY['{}', '"events"', '42', 'null']::jsonb[]) v
                 WHERE pg_temp.refusal(format('SELECT runhub.ingest_events(%L, %L)', :'imp', v)) IS DISTINCT FROM 'PT400 common.invalidInput events'),
          '{}'::text[], 'events not an array (an object, a string, a number, JSON null): PT400 common.invalidInput (events)');
SELECT is(pg_temp.refusal(format('SELECT runhub.ingest_events(%L, NULL)', :'imp')), 'PT400 common.invalidInput events',
          'a null batch: PT400 common.invalidInput (events)');
SELECT is(pg_temp.refusal(pg_temp.batch_sql(:'imp', 0, 'none-')), 'PT400 common.invalidInput events', 'an empty batch: PT400 common.invalidInput (events)');
SELECT is(pg_temp.refusal(pg_temp.batch_sql(:'imp', 5001, 'over-')), 'PT400 common.invalidInput events', '5,001 events: PT400 common.invalidInput (events)');
SELECT is(pg_temp.refusal(pg_temp.batch_sql('cccccccc-0000-4000-8000-0000000000ff', 1, 'lost-')), 'PT404 projects.notFound',
          'an unknown project: PT404 projects.notFound');
SELECT is_empty(format('SELECT 1 FROM runhub.business_events WHERE project_id = %L', :'imp'), 'the refused batches stored nothing');
SELECT is(pg_temp.refusal(pg_temp.batch_sql(:'imp', 5000, 'max-')), 'no error', '5,000 events are accepted (maxIngestBatch)');
SELECT is((SELECT count(*)::int FROM runhub.business_events WHERE project_id = :'imp'), 5000, '... and stored');
SELECT is(pg_temp.refusal(pg_temp.batch_sql(:'imp', 1, 'one-')), 'no error', 'one event is accepted');
-- Each event in place: stored, refused as ingest_event refuses it, or a key already in the batch.
SELECT is(runhub.ingest_events(:'imp', jsonb_build_array(pg_temp.b_event('in-1'), pg_temp.b_event('in-2', '{"type": "Bad"}'),
                                                         pg_temp.b_event('in-1'), pg_temp.b_event('max-1'))) #- '{0,eventId}' #- '{2,eventId}' #- '{3,eventId}'
                                                         #- '{1,error,message}',
          '[{"inserted": true}, {"error": {"code": "PT400", "key": "events.invalid", "params": {"field": "type", "reason": "is required: lower-case letters, digits and _"}}},
            {"inserted": false}, {"inserted": false}]'::jsonb,
          'answers in the order given: stored, refused in place (code, key, params), a key twice in the batch and one stored before: inserted false');
-- The bytes, as PostgreSQL holds the batch (pg_column_size), are checked before the count: a batch
-- of 5,001 elements of exactly 32 MiB gets past the bytes to the count's refusal; a byte more is
-- refused for its bytes.
CREATE FUNCTION pg_temp.bytes_batch(p_extra int)
RETURNS jsonb LANGUAGE sql
AS $$ SELECT (SELECT jsonb_agg(0) FROM generate_series(1, 5000))
             || jsonb_build_array(repeat('a', runhub._constant('maxIngestBatchBytes') + p_extra
                                              - pg_column_size((SELECT jsonb_agg(0) FROM generate_series(1, 5000)) || '[""]'::jsonb))) $$;
SELECT is(pg_column_size(pg_temp.bytes_batch(0)), 33554432, 'fixture: 5,001 elements, exactly 32 MiB as stored');
SELECT is(pg_temp.refusal(format('SELECT runhub.ingest_events(%L, pg_temp.bytes_batch(0))', :'imp')), 'PT400 common.invalidInput events',
          'exactly 32 MiB is within maxIngestBatchBytes: the batch is refused for its 5,001 events, not its bytes');
SELECT pg_temp.caught(format('SELECT runhub.ingest_events(%L, pg_temp.bytes_batch(1))', :'imp')) AS over_bytes \gset
SELECT is(jsonb_build_array((:'over_bytes'::jsonb) ->> 'sqlstate', (:'over_bytes'::jsonb) ->> 'message', ((:'over_bytes'::jsonb) ->> 'detail')::jsonb),
          '["PT413", "events.batchTooLarge", {"bytes": 33554433, "maxBytes": 33554432}]'::jsonb,
          'a byte more: PT413 events.batchTooLarge {bytes, maxBytes}');
SELECT is((SELECT count(*)::int FROM runhub.business_events WHERE project_id = :'imp'), 5002, 'only the accepted events are stored');

-- ---------------------------------------------------------------------------------------------
-- list_events: a project with a tie on occurred_at (e3, e4) and a late arrival (e6: oldest
-- occurredAt, newest id). Timeline = occurred_at DESC, id DESC; ingestion = id DESC.
SELECT runhub.create_project('List shop', :l_owner, 'UTC', 'EUR') AS l \gset
SELECT runhub.create_project('Empty shop', :e_owner, 'UTC', 'EUR') AS empty \gset
CREATE FUNCTION pg_temp.signup(p_project uuid, p_key text, p_at text)
RETURNS boolean LANGUAGE sql
AS $$ SELECT (runhub.ingest_event(p_project, jsonb_build_object(
        'type', 'signup', 'idempotencyKey', p_key, 'occurredAt', '2024-06-01T' || p_at || ':00Z')) ->> 'inserted')::boolean $$;
-- One statement per event, so that ids follow this order.
SELECT ok(pg_temp.signup(:'l', 'e1', '10:00'), 'e1 ingested (10:00)');
SELECT ok(pg_temp.signup(:'l', 'e2', '11:00'), 'e2 ingested (11:00)');
SELECT ok(pg_temp.signup(:'l', 'e3', '12:00'), 'e3 ingested (12:00)');
SELECT ok(pg_temp.signup(:'l', 'e4', '12:00'), 'e4 ingested (12:00, same instant as e3)');
SELECT ok(pg_temp.signup(:'l', 'e5', '13:00'), 'e5 ingested (13:00)');
SELECT ok(pg_temp.signup(:'l', 'e6', '09:00'), 'e6 ingested last, but occurred first (09:00): a late arrival');
SELECT id AS e4 FROM runhub.business_events WHERE project_id = :'l' AND idempotency_key = 'e4' \gset
SELECT id AS e5 FROM runhub.business_events WHERE project_id = :'l' AND idempotency_key = 'e5' \gset

-- Both orders, one page.
SELECT is(pg_temp.page_keys(runhub.list_events(:'l', :l_owner)), '{e5,e4,e3,e2,e1,e6}',
          'timeline (the default): occurred_at DESC, id DESC; the late e6 is last, e4 before e3');
SELECT is(pg_temp.page_keys(runhub.list_events(:'l', :l_owner, 'ingestion')), '{e6,e5,e4,e3,e2,e1}',
          'ingestion: id DESC; the late e6 is first');
SELECT is(runhub.list_events(:'l', :l_owner) -> 'nextCursor', 'null'::jsonb, 'nextCursor is null when everything fits');
SELECT is(runhub.list_events(:'l', :l_owner, 'timeline', NULL, 6) -> 'nextCursor', 'null'::jsonb,
          'nextCursor is null when the last page is exactly full (no empty extra page)');
SELECT is(runhub.list_events(:'empty', :e_owner), '{"events": [], "nextCursor": null}'::jsonb,
          'a project without events: no events, null cursor');
SELECT is(pg_temp.page_keys(runhub.list_events(:'l', :l_owner, 'timeline', 'null'::jsonb, 50)), '{e5,e4,e3,e2,e1,e6}',
          'a JSON null cursor is the first page');

-- The event shape: what ingest_event takes, plus id and receivedAt.
SELECT is((SELECT e FROM jsonb_array_elements(runhub.list_events(:'p', :p_owner, 'timeline', NULL, 500) -> 'events') e
            WHERE e ->> 'idempotencyKey' = 'order-77'),
          jsonb_build_object('id', ((:'first'::jsonb) ->> 'eventId')::bigint,
                             'receivedAt', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                             'type', 'checkout_completed', 'occurredAt', '2024-05-01T08:00:00.000000Z',
                             'idempotencyKey', 'order-77', 'correlationId', 'cart-9',
                             'customer', jsonb_build_object('email', 'ana.doe@example.com', 'name', 'Ana Doe', 'locale', 'fr-CA'),
                             'amountCents', 1234, 'currency', 'EUR',
                             'payload', '{"cart": {"items": 2}, "note": "déjà vu"}'::jsonb),
          'a listed event has the ingest shape (normalized), plus id and receivedAt, instants in UTC with Z');
SELECT is(pg_temp.page_keys(runhub.list_events(:'p', :p_owner, 'timeline', NULL, 500)) @> '{e1}', false,
          'list_events never returns another project''s events');

-- Cursors: their shape per order, and paging through without gaps or duplicates.
SELECT is(runhub.list_events(:'l', :l_owner, 'timeline', NULL, 2) -> 'nextCursor',
          jsonb_build_object('occurredAt', '2024-06-01T12:00:00.000000Z', 'id', :e4),
          'timeline cursor: {occurredAt, id} of the last event on the page');
SELECT is(runhub.list_events(:'l', :l_owner, 'ingestion', NULL, 2) -> 'nextCursor', jsonb_build_object('id', :e5),
          'ingestion cursor: {id} of the last event on the page');
SELECT is(pg_temp.page_keys(runhub.list_events(:'l', :l_owner, 'timeline', jsonb_build_object('occurredAt', '2024-06-01T12:00:00.000000Z', 'id', :e4), 2)),
          '{e3,e2}', 'the page after a cursor that splits the 12:00 tie starts with e3');
SELECT is(pg_temp.all_pages(:'l', :l_owner, 'timeline', 1), '{e5,e4,e3,e2,e1,e6}', 'timeline, pages of 1: no gap, no duplicate');
SELECT is(pg_temp.all_pages(:'l', :l_owner, 'timeline', 2), '{e5,e4,e3,e2,e1,e6}', 'timeline, pages of 2: no gap, no duplicate');
SELECT is(pg_temp.all_pages(:'l', :l_owner, 'timeline', 4), '{e5,e4,e3,e2,e1,e6}', 'timeline, pages of 4: no gap, no duplicate');
SELECT is(pg_temp.all_pages(:'l', :l_owner, 'ingestion', 1), '{e6,e5,e4,e3,e2,e1}', 'ingestion, pages of 1: no gap, no duplicate');
SELECT is(pg_temp.all_pages(:'l', :l_owner, 'ingestion', 4), '{e6,e5,e4,e3,e2,e1}', 'ingestion, pages of 4: no gap, no duplicate');
SELECT is(runhub.list_events(:'l', :l_owner, 'timeline', runhub.list_events(:'l', :l_owner, 'timeline', NULL, 5) -> 'nextCursor', 5),
          jsonb_build_object('events', runhub.list_events(:'l', :l_owner, 'ingestion', NULL, 1) -> 'events', 'nextCursor', NULL),
          'the last page (pages of 5) holds e6 alone and has a null nextCursor');

-- A late arrival while a client pages: it shows up in its place, never twice, nothing skipped.
SELECT runhub.list_events(:'l', :l_owner, 'timeline', NULL, 3) AS tl_page1 \gset
SELECT runhub.list_events(:'l', :l_owner, 'ingestion', NULL, 3) AS in_page1 \gset
SELECT ok(pg_temp.signup(:'l', 'e7', '09:30'), 'e7 arrives late (09:30) between pages');
SELECT is(pg_temp.page_keys(:'tl_page1') || pg_temp.page_keys(runhub.list_events(:'l', :l_owner, 'timeline', (:'tl_page1'::jsonb) -> 'nextCursor', 50)),
          '{e5,e4,e3,e2,e1,e7,e6}', 'timeline: the rest of the pages has e7 in its place, between e1 and e6');
SELECT is(pg_temp.page_keys(:'in_page1') || pg_temp.page_keys(runhub.list_events(:'l', :l_owner, 'ingestion', (:'in_page1'::jsonb) -> 'nextCursor', 50)),
          '{e6,e5,e4,e3,e2,e1}', 'ingestion: the rest of the pages is unchanged (e7 is newer than the cursor)');
SELECT is(pg_temp.page_keys(runhub.list_events(:'l', :l_owner, 'ingestion', NULL, 1)), '{e7}', 'ingestion: a fresh first page starts with e7');

-- Bad order, limit and cursor: PT400 with their keys; an unknown project: PT404.
SELECT is(pg_temp.refusal(format($$SELECT runhub.list_events(%L, %L, 'newest')$$, :'l', :l_owner)), 'PT400 events.invalidSort', 'order newest: events.invalidSort');
SELECT is(pg_temp.refusal(format($$SELECT runhub.list_events(%L, %L, NULL)$$, :'l', :l_owner)), 'PT400 events.invalidSort', 'a null order: events.invalidSort');
SELECT is(pg_temp.refusal(format($$SELECT runhub.list_events(%L, %L, 'timeline', NULL, 0)$$, :'l', :l_owner)), 'PT400 events.invalidPageSize', 'limit 0: events.invalidPageSize');
SELECT is(pg_temp.refusal(format($$SELECT runhub.list_events(%L, %L, 'timeline', NULL, 501)$$, :'l', :l_owner)), 'PT400 events.invalidPageSize', 'limit 501: events.invalidPageSize');
SELECT is(pg_temp.refusal(format($$SELECT runhub.list_events(%L, %L, 'timeline', NULL, NULL)$$, :'l', :l_owner)), 'PT400 events.invalidPageSize', 'a null limit: events.invalidPageSize');
SELECT lives_ok(format($$SELECT runhub.list_events(%L, %L, 'ingestion', NULL, 500)$$, :'l', :l_owner), 'limit 500 is accepted');
SELECT is(pg_temp.refusal(format($$SELECT runhub.list_events(%L, %L, 'timeline', '[]')$$, :'l', :l_owner)), 'PT400 events.invalidCursor', 'an array cursor: events.invalidCursor');
SELECT is(pg_temp.refusal(format($$SELECT runhub.list_events(%L, %L, 'timeline', '"abc"')$$, :'l', :l_owner)), 'PT400 events.invalidCursor', 'a string cursor: events.invalidCursor');
SELECT is(pg_temp.refusal(format($$SELECT runhub.list_events(%L, %L, 'timeline', '{"id": 5}')$$, :'l', :l_owner)), 'PT400 events.invalidCursor',
          'an ingestion cursor in timeline order: events.invalidCursor');
SELECT is(pg_temp.refusal(format($$SELECT runhub.list_events(%L, %L, 'ingestion', '{"id": 5, "occurredAt": "2024-06-01T12:00:00Z"}')$$, :'l', :l_owner)),
          'PT400 events.invalidCursor', 'a timeline cursor in ingestion order: events.invalidCursor');
SELECT is(pg_temp.refusal(format($$SELECT runhub.list_events(%L, %L, 'ingestion', '{"id": "5"}')$$, :'l', :l_owner)), 'PT400 events.invalidCursor', 'a string id: events.invalidCursor');
SELECT is(pg_temp.refusal(format($$SELECT runhub.list_events(%L, %L, 'ingestion', '{"id": -1}')$$, :'l', :l_owner)), 'PT400 events.invalidCursor', 'a negative id: events.invalidCursor');
SELECT is(pg_temp.refusal(format($$SELECT runhub.list_events(%L, %L, 'ingestion', '{"id": 1.5}')$$, :'l', :l_owner)), 'PT400 events.invalidCursor', 'a fractional id: events.invalidCursor');
SELECT is(pg_temp.refusal(format($$SELECT runhub.list_events(%L, %L, 'ingestion', '{"id": 1e30}')$$, :'l', :l_owner)), 'PT400 events.invalidCursor', 'an id beyond bigint: events.invalidCursor');
SELECT is(pg_temp.refusal(format($$SELECT runhub.list_events(%L, %L, 'timeline', '{"id": 5, "occurredAt": "2024-06-01T12:00:00"}')$$, :'l', :l_owner)),
          'PT400 events.invalidCursor', 'a cursor occurredAt without an offset: events.invalidCursor');
SELECT is(pg_temp.refusal(format($$SELECT runhub.list_events(%L, %L, 'timeline', '{"id": 5, "occurredAt": "2024-13-01T12:00:00Z"}')$$, :'l', :l_owner)),
          'PT400 events.invalidCursor', 'a cursor occurredAt in month 13: events.invalidCursor');
SELECT is(pg_temp.refusal(format($$SELECT runhub.list_events(%L, %L, 'timeline', '{"id": 5, "occurredAt": "1999-12-31T23:59:59Z"}')$$, :'l', :l_owner)),
          'PT400 events.invalidCursor', 'a cursor occurredAt before 2000: events.invalidCursor');
SELECT is(pg_temp.refusal(format($$SELECT runhub.list_events(%L, %L, 'timeline', %L)$$, :'l', :l_owner,
                                 jsonb_build_object('id', 5, 'occurredAt', to_char(now() + interval '2 days', 'YYYY-MM-DD"T"HH24:MI:SSOF')))),
          'PT400 events.invalidCursor', 'a cursor occurredAt two days ahead: events.invalidCursor');
SELECT is(pg_temp.refusal(format($$SELECT runhub.list_events(%L, %L, 'timeline', '{"id": 5, "occurredAt": "infinity"}')$$, :'l', :l_owner)),
          'PT400 events.invalidCursor', 'a cursor occurredAt of infinity: events.invalidCursor');
SELECT is(pg_temp.refusal(format($$SELECT runhub.list_events(%L, %L, 'ingestion', '{"id": 0}')$$, :'l', :l_owner)), 'PT400 events.invalidCursor',
          'a cursor id of 0 (ids are positive): events.invalidCursor');
SELECT is(runhub.list_events(:'l', :l_owner, 'ingestion', '{"id": 1}'), '{"events": [], "nextCursor": null}'::jsonb,
          'a cursor id of 1 is accepted (nothing before it)');
SELECT is(runhub.list_events(:'l', :l_owner, 'timeline', '{"id": 1, "occurredAt": "2000-01-01T00:00:00Z"}'), '{"events": [], "nextCursor": null}'::jsonb,
          'a cursor occurredAt of 2000-01-01T00:00:00Z, the first instant allowed, is accepted');
SELECT is(pg_temp.page_keys(runhub.list_events(:'l', :l_owner, 'timeline', jsonb_build_object('id', 1, 'occurredAt', runhub._iso(now() + interval '1 day')), 1)),
          '{e5}', 'a cursor occurredAt exactly a day ahead is accepted');
SELECT is(pg_temp.refusal(format($$SELECT runhub.list_events(%L, %L, 'timeline', %L)$$, :'l', :l_owner,
                                 jsonb_build_object('id', 1, 'occurredAt', runhub._iso(now() + interval '1 day 1 microsecond')))),
          'PT400 events.invalidCursor', 'a microsecond more: events.invalidCursor');
SELECT is(pg_temp.refusal(format($$SELECT runhub.list_events('cccccccc-0000-4000-8000-0000000000ff', %L)$$, :l_owner)), 'PT404 projects.notFound',
          'an unknown project: PT404 projects.notFound');
SELECT is(pg_temp.refusal(format($$SELECT runhub.list_events(NULL, %L)$$, :l_owner)), 'PT400 common.invalidInput project',
          'a null project: PT400 common.invalidInput (project)');

-- The actor: any member may list; a non-member (the owner of another project) learns nothing.
SELECT runhub.add_member(:'l', :l_owner, :l_member, 'member') \g /dev/null
SELECT is(pg_temp.page_keys(runhub.list_events(:'l', :l_member, 'ingestion', NULL, 500)),
          pg_temp.page_keys(runhub.list_events(:'l', :l_owner, 'ingestion', NULL, 500)),
          'a plain member lists the same events as the owner');
SELECT is(pg_temp.refusal(format($$SELECT runhub.list_events(%L, %L)$$, :'l', :p_owner)), 'PT404 projects.notFound',
          'the owner of another project: PT404 projects.notFound, as for an unknown project');
SELECT is(pg_temp.refusal(format($$SELECT runhub.list_events(%L, %L, 'newest', '[]', 0)$$, :'l', :p_owner)), 'PT404 projects.notFound',
          'a non-member with bad arguments: PT404 first');
SELECT is(pg_temp.refusal(format($$SELECT runhub.list_events(%L, NULL)$$, :'l')), 'PT400 common.invalidInput actor',
          'a null actor: PT400 common.invalidInput (actor)');

SELECT * FROM finish();
ROLLBACK;
