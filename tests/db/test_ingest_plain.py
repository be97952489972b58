"""Ingest's common shape (_is_plain_event, _plain_event, _plain_events) against the field-by-field
validation it stands in for: an event taken as it is must be one that _event_field_by_field takes,
into exactly the same row; anything else goes field by field. Events are generated around the
common shape, one or two fields at a time off it, so that both sides of every check are reached."""
from __future__ import annotations

import uuid

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import event as note_outcome
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from helpers.db import assert_refused, new_project
from helpers.workflows import ago
from test_events_input import base_event

PROPERTY = settings(max_examples=600, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
ABSENT = object()
ANY_PROJECT = uuid.UUID(int=1)  # validation does not look the project up

INSTANTS = st.sampled_from([
    "2026-11-20T10:00:00Z", "2026-11-20 10:00Z", "2026-11-20T10:00:00.123456+02:00", "2026-11-20T10:00:00.1234567Z",
    "2024-02-29T00:00:00Z", "2025-02-29T00:00:00Z", "2100-02-29T00:00:00Z", "2026-04-31T00:00:00Z", "2026-12-31T23:59:59-14:59",
    "2026-11-20T24:00:00Z", "2026-11-20T10:60:00Z", "2026-11-20T10:00:60Z", "2026-11-20T10:00:00+15:00", "2026-11-20T10:00:00+1530",
    "2026-11-20T10:00:00+02", "2026-11-20T10:00:00z", "2026-11-20T10:00:00", "1999-12-31T23:30:00Z", "2000-01-01T00:30:00+01:00",
    "2999-01-01T00:00:00Z", "0000-01-01T00:00:00Z", "2026-13-01T00:00:00Z", "2026-11-20T10:00:00.Z", "２０２６-11-20T10:00:00Z",
    "", " 2026-11-20T10:00:00Z", "now", "2026-11-20"]) | st.text(max_size=40)
TYPES = st.sampled_from(["checkout_started", "payment_succeeded", "a", "a" * 64, "a" * 65, "Checkout", "9lives", "promo_email_sent",
                         "runhub_x", "onboarding_email_sent", "x-y", "", "é"]) | st.text(max_size=70)
KEYS = st.sampled_from(["k-1", "mail:<x@y>", "MAIL:x", "runhub:1", "Runhub:x", "k" * 255, "k" * 256, "", " "]) | st.text(max_size=260)
EMAILS = st.sampled_from(["ann@example.com", "Ann@Example.COM", " ann@example.com", "ann@example.com\u00a0", "ann@bücher.de",
                          "ann@xn--bcher-kva.de", "a" * 243 + "@example.com", "a@" + "b" * 60 + ".com", "ann@example",
                          "ann@example.123", "=?utf-8?q?x?=@example.com", "\u212aelvin@example.com", "ann@@example.com", ""]) \
    | st.emails().map(str) | st.text(max_size=30)
NAMES = st.sampled_from(["Ann", " Ann ", "\u200bAnn", "\u00a0", "", "A" * 200, "A" * 201]) | st.text(max_size=210)
LOCALES = st.sampled_from(["fr-CA", "en", "EN", "zh-Hant-TW", "x", "a" * 36, "fr_CA"]) | st.text(max_size=40)
AMOUNTS = st.sampled_from([0, 1299, -1, 12.5, 12.0, 9007199254740991, 9007199254740992, 1e30, "12", True]) \
    | st.integers(-10, 10**17)
CURRENCIES = st.sampled_from(["EUR", "eur", "XXX", "EU", "EURO", "JPY", "", 978])
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=6)


def maybe(values):
    """A field's value, or None (JSON null), or the field left out."""
    return st.one_of(values, st.just(None), st.just(ABSENT))


@st.composite
def near_plain_events(draw) -> dict:
    """A valid event of the common shape with some fields replaced by drawn values."""
    event = base_event()
    replacements = {
        "type": maybe(TYPES), "occurredAt": maybe(INSTANTS), "idempotencyKey": maybe(KEYS),
        "correlationId": maybe(st.text(max_size=260) | st.integers()), "amountCents": maybe(AMOUNTS),
        "currency": maybe(CURRENCIES), "payload": maybe(JSON | st.just({"big": "x" * 33000})),
        "customer": maybe(st.just("customer") | JSON), "customer.email": maybe(EMAILS), "customer.name": maybe(NAMES),
        "customer.locale": maybe(LOCALES), "extra": st.just(1),
    }
    for field in draw(st.lists(st.sampled_from(sorted(replacements)), max_size=2, unique=True)):
        value = draw(replacements[field])
        target, _, name = field.rpartition(".")
        holder = event if not target else event.get(target)
        if not isinstance(holder, dict):
            continue
        if value is ABSENT:
            holder.pop(name or field, None)
        elif value == "customer":
            holder[field] = {"email": "ann@example.com"}
        else:
            holder[name or field] = value
    return without_nul(event)


def without_nul(value):
    """jsonb holds no NUL character (the server refuses the JSON before ingest sees it)."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    return value


def field_by_field(conn, project, event) -> tuple | str:
    """The row _event_field_by_field makes of the event, or the SQLSTATE it refuses it with."""
    try:
        with conn.transaction():
            return conn.execute("SELECT * FROM runhub._event_field_by_field(%s, %s)", (project, Jsonb(event))).fetchone()[2:]
    except psycopg.Error as error:
        return error.sqlstate or "error"


@pytest.mark.slow  # ~3 s: hypothesis
@PROPERTY
@given(event=near_plain_events())
@example(event=base_event() | {"occurredAt": "2024-02-29T23:59:59.999999-14:59"})
@example(event=base_event() | {"customer": {"email": "\u212aelvin@example.com"}})
@example(event=base_event() | {"amountCents": 12.0})
def test_an_event_taken_as_it_is_is_one_field_by_field_validation_takes_the_same(conn, event):
    plain = conn.execute("SELECT * FROM runhub._plain_event(%s, %s)", (ANY_PROJECT, Jsonb(event))).fetchone()
    plain = plain and plain[2:]
    slow = field_by_field(conn, ANY_PROJECT, event)
    note_outcome("plain" if plain else "field by field: " + ("stored" if isinstance(slow, tuple) else "refused"))
    if plain is not None:
        assert isinstance(slow, tuple), (event, slow)
        # the row without id, project_id and received_at: (event_type, occurred_at, ..., payload)
        assert tuple(v for i, v in enumerate(plain) if i != 2) == tuple(v for i, v in enumerate(slow) if i != 2), event
    # The set-based form says the same of the event, at any place in a batch.
    batch = [base_event(), event]
    rows = conn.execute("SELECT plain, (event).* FROM runhub._plain_events(%s, %s) ORDER BY n",
                        (ANY_PROJECT, Jsonb(batch))).fetchall()
    assert rows[1][0] == (plain is not None), event
    if plain is not None:
        assert tuple(rows[1][3:]) == tuple(plain)


def test_a_batch_of_every_kind_is_answered_in_order_with_ids_in_order(conn):
    """Plain events, one taken field by field (an address in Unicode) and one refused, in one call:
    the slower way for the whole batch, the same answers and ids in the order given."""
    project, _ = new_project(conn)
    events = [base_event() for _ in range(3)]
    events.insert(1, base_event() | {"customer": {"email": "ann@bücher.de"}})
    events.insert(3, base_event() | {"type": "Checkout"})
    answers = conn.execute("SELECT runhub.ingest_events(%s, %s)", (project, Jsonb(events))).fetchone()[0]
    assert [("error" in a) for a in answers] == [False, False, False, True, False]
    ids = [a["eventId"] for a in answers if "eventId" in a]
    assert ids == sorted(ids)
    stored = conn.execute("SELECT customer_email FROM runhub.business_events WHERE id = %s", (ids[1],)).fetchone()[0]
    assert stored == "ann@bücher.de"
    single = [conn.execute("SELECT runhub.ingest_event(%s, %s)", (project, Jsonb(e))).fetchone()[0]
              for e in events if e["type"] != "Checkout"]
    assert single == [{"eventId": i, "inserted": False} for i in ids]


def test_an_event_that_changes_nothing_of_its_customer_rewrites_no_row(conn):
    """An event of a known customer between its first and last seen (a backfill) changes none of its
    customer row's facts: no new row version (customers_skip_unchanged); a newer one does."""
    project, _ = new_project(conn)

    def event(hours_ago: int) -> dict:
        return base_event() | {"type": "lead_created", "occurredAt": ago(hours_ago), "amountCents": None,
                               "currency": None, "customer": {"email": "ann@example.com", "name": "Ann"}}

    def version() -> tuple:
        return conn.execute("SELECT xmin::text, ctid::text, last_seen_at FROM runhub.customers WHERE project_id = %s",
                            (project,)).fetchone()

    conn.execute("SELECT runhub.ingest_event(%s, %s)", (project, Jsonb(event(1))))
    conn.execute("SELECT runhub.ingest_event(%s, %s)", (project, Jsonb(event(3))))
    first = version()
    conn.execute("SELECT runhub.ingest_event(%s, %s)", (project, Jsonb(event(2))))  # between first and last seen
    assert version() == first, "an older event with nothing new: the same row version"
    conn.execute("SELECT runhub.ingest_event(%s, %s)", (project, Jsonb(event(0))))
    assert version()[1] != first[1] and version()[2] > first[2], "a newer event: the row is updated"


# -- customers, kept by ingest's own statements ---------------------------------------------------

def test_one_statement_stores_events_and_keeps_their_customers(conn):
    """ingest_events, the sender, the field-by-field path and rebuild_customers store through
    _store_events; ingest_event's common case alone has a statement of its own (speed: one
    statement a webhook), held to the same merge below. No other function writes either table."""
    writers = conn.execute(
        r"""SELECT p.proname, regexp_count(p.prosrc, 'INSERT INTO runhub.business_events'),
                  regexp_count(p.prosrc, 'INSERT INTO runhub.customers')
             FROM pg_proc p
            WHERE p.pronamespace = 'runhub'::regnamespace
              AND p.prosrc ~ 'INSERT INTO runhub\.(business_events|customers)'
            ORDER BY p.proname""").fetchall()
    assert writers == [("_store_events", 1, 1), ("ingest_event", 1, 1)]


def _merge_clause(conn, function: str) -> str:
    """The ON CONFLICT clause by which a function merges a customer row, white space folded."""
    source = conn.execute("SELECT prosrc FROM pg_proc WHERE oid = %s::regprocedure", (function,)).fetchone()[0]
    clause = source[source.index("ON CONFLICT (project_id, email) DO UPDATE SET"):]
    clause = clause[:clause.index("last_paid_at)") + len("last_paid_at)")]
    return " ".join(clause.split())


def test_one_event_and_a_batch_merge_a_customer_by_the_same_clause(conn):
    """ingest_event merges its one event into the customer row in its own statement (no call, no
    aggregate); _store_events merges a batch's: the rule is one text in two places."""
    assert _merge_clause(conn, "runhub.ingest_event(uuid, jsonb)") == \
        _merge_clause(conn, "runhub._store_events(runhub.business_events[], boolean)")


def test_ingest_event_opens_no_subtransaction(conn):
    """No EXCEPTION block (a subtransaction for every event): an unknown or deleted project is
    refused by the lock taken before the insert, not caught in mid-insert."""
    source = conn.execute("SELECT prosrc FROM pg_proc WHERE oid = 'runhub.ingest_event(uuid, jsonb)'::regprocedure").fetchone()[0]
    assert "EXCEPTION" not in source.upper().replace("RAISE EXCEPTION", "")


CUSTOMER_STORY = [  # (hours ago, type, name, locale): out of order, names and locales coming and going
    (30, "lead_created", "Ann", None), (5, "checkout_started", None, "fr-CA"), (40, "user_signed_up", "Annie", "en"),
    (2, "payment_succeeded", "Ann B.", None), (20, "user_signed_up", None, None), (1, "page_viewed", None, "de"),
    (50, "payment_succeeded", "Old Ann", "es"),
]


def _story_events(tag: str, at: dict) -> list[dict]:
    events = []
    for i, (hours, kind, name, locale) in enumerate(CUSTOMER_STORY):
        customer = {"email": "ann@example.com"} | ({"name": name} if name else {}) | ({"locale": locale} if locale else {})
        events.append({"type": kind, "occurredAt": at[hours], "idempotencyKey": f"{tag}-{i}", "customer": customer}
                      | ({"amountCents": 100, "currency": "EUR"} if kind == "payment_succeeded" else {}))
    return events


def _customer_row(conn, project) -> tuple:
    return conn.execute("""SELECT email, name, locale, first_seen_at, last_seen_at, signed_up_at, last_engaged_at, last_paid_at
                             FROM runhub.customers WHERE project_id = %s""", (project,)).fetchall()


@pytest.mark.parametrize("order", ["as told", "reversed"])
def test_a_customer_is_the_same_one_by_one_in_bulk_and_rebuilt(conn, order):
    """The same events give the same customer row whichever way they are stored: one by one
    (ingest_event), in one batch (ingest_events), or written past ingest and
    brought up by rebuild_customers (which reads them again, idempotently)."""
    at = {hours: ago(hours) for hours, *_ in CUSTOMER_STORY}
    events = _story_events(order, at)
    if order == "reversed":
        events.reverse()
    single, _ = new_project(conn)
    for e in events:
        assert conn.execute("SELECT runhub.ingest_event(%s, %s)", (single, Jsonb(e))).fetchone()[0]["inserted"]
    bulk, _ = new_project(conn)
    assert all(a["inserted"] for a in conn.execute("SELECT runhub.ingest_events(%s, %s)", (bulk, Jsonb(events))).fetchone()[0])
    loaded, _ = new_project(conn)
    conn.execute("""INSERT INTO runhub.business_events (project_id, event_type, occurred_at, idempotency_key,
                                                        customer_email, customer_name, customer_locale, amount_cents, currency)
                    SELECT %s, e->>'type', (e->>'occurredAt')::timestamptz, e->>'idempotencyKey', e->'customer'->>'email',
                           e->'customer'->>'name', e->'customer'->>'locale', (e->>'amountCents')::bigint, e->>'currency'
                      FROM jsonb_array_elements(%s) e""", (loaded, Jsonb(events)))
    assert _customer_row(conn, loaded) == []
    assert conn.execute("SELECT runhub.rebuild_customers(%s)", (loaded,)).fetchone()[0] == len(events)
    rebuilt = _customer_row(conn, loaded)
    assert conn.execute("SELECT runhub.rebuild_customers(%s)", (loaded,)).fetchone()[0] == len(events)
    assert _customer_row(conn, loaded) == rebuilt, "rebuilding again changes nothing"
    row = _customer_row(conn, single)
    assert row == _customer_row(conn, bulk) == rebuilt
    (email, name, locale, first, last, signed_up, engaged, paid), = row
    hours = {h: conn.execute("SELECT %s::timestamptz", (text,)).fetchone()[0] for h, text in at.items()}
    assert (email, name, locale) == ("ann@example.com", "Ann B.", "de")  # the latest name, the latest locale
    assert (first, last, signed_up, engaged, paid) == (hours[50], hours[1], hours[20], hours[1], hours[2])


def test_rebuild_customers_refuses_an_unknown_project_and_no_role_may_call_it(conn):
    with pytest.raises(psycopg.Error) as excinfo:
        conn.execute("SELECT runhub.rebuild_customers(%s)", (uuid.uuid4(),))
    assert_refused(excinfo, "PT404", "projects.notFound")
    conn.rollback()
    granted = conn.execute("""SELECT array_agg(r.rolname ORDER BY r.rolname) FROM pg_roles r
                               WHERE r.rolname LIKE 'runhub\\_%%' AND r.rolname <> 'runhub_owner'
                                 AND has_function_privilege(r.oid, 'runhub.rebuild_customers(uuid)', 'EXECUTE')""").fetchone()[0]
    assert granted is None
