"""Bad input for runhub.ingest_event: every field of the event contract, refused with the documented
SQLSTATE, i18n key and detail, and nothing written. Plus property tests: arbitrary JSON never gets
past the error contract, and valid events round-trip through list_events."""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_outcome
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from helpers.db import DELETE, assert_refused, count_rows, event, ingest, new_project, with_field

# Deterministic examples (derandomize) and no example database written into the repository.
PROPERTY = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])



def base_event() -> dict:
    """A valid event that uses every field of the contract."""
    return {
        "type": "payment_succeeded",
        "occurredAt": "2026-11-20T10:00:00Z",
        "idempotencyKey": uuid.uuid4().hex,
        "correlationId": "corr-1",
        "customer": {"email": "ann@example.com", "name": "Ann", "locale": "fr-CA"},
        "amountCents": 1299,
        "currency": "EUR",
        "payload": {"cart": "c-1", "items": [1, 2]},
    }


def refused(conn, project, body, sqlstate: str, key: str) -> dict:
    """Ingest body, expect the refusal, check that nothing was written; returns the detail."""
    before = count_rows(conn, "business_events")
    with pytest.raises(psycopg.Error) as excinfo:
        conn.execute("SELECT runhub.ingest_event(%s, %s)", (project, body))
    detail = assert_refused(excinfo, sqlstate, key)
    assert count_rows(conn, "business_events") == before, "a refused event must write nothing"
    return detail


@pytest.fixture
def project(conn):
    project, _ = new_project(conn)
    ingest(conn, project, event(key="already-there"))  # so "unchanged" is not trivially 0 == 0
    return project


@pytest.fixture(scope="module")
def shared(cluster, cluster_server, template_db):
    """(connection, project) in one deployed database for the whole module: cloning a database per
    case would dominate this file's run time, and every refusal test checks that it wrote nothing."""
    with cluster_server.janitor(f"runhub_events_input_{uuid.uuid4().hex[:10]}", template_db) as database:
        with psycopg.connect(cluster.url(database.dbname), autocommit=True) as c:
            project, _ = new_project(c)
            ingest(c, project, event(key="already-there"))
            yield c, project


def test_base_event_is_accepted_and_round_trips(conn, project):
    body = base_event()
    result = ingest(conn, project, body)
    assert result["inserted"] is True
    page = conn.execute("SELECT runhub.list_events(id, owner_id, 'ingestion', NULL, 1) FROM runhub.projects"
                        " WHERE id = %s", (project,)).fetchone()[0]  # as the project's owner
    got = page["events"][0]
    assert got.pop("id") == result["eventId"]
    assert got.pop("receivedAt").endswith("Z")
    assert got == {**body, "occurredAt": "2026-11-20T10:00:00.000000Z"}


# -- one malformed field at a time -------------------------------------------------------------

# (field path, malformed value, SQLSTATE, key, field reported in the detail)
INVALID = "events.invalid"
UNKNOWN = "events.unknownField"
FIELD_CASES = [
    # type
    ("type", DELETE, "PT400", INVALID, "type"),
    ("type", None, "PT400", INVALID, "type"),
    ("type", "", "PT400", INVALID, "type"),
    ("type", 42, "PT400", INVALID, "type"),
    ("type", True, "PT400", INVALID, "type"),
    ("type", ["checkout"], "PT400", INVALID, "type"),
    ("type", {"name": "checkout"}, "PT400", INVALID, "type"),
    ("type", "a" * 65, "PT400", INVALID, "type"),
    ("type", "Checkout_started", "PT400", INVALID, "type"),
    ("type", "1checkout", "PT400", INVALID, "type"),
    ("type", "_checkout", "PT400", INVALID, "type"),
    ("type", "checkout-started", "PT400", INVALID, "type"),
    ("type", "checkout started", "PT400", INVALID, "type"),
    ("type", " checkout", "PT400", INVALID, "type"),
    ("type", "checkout\n", "PT400", INVALID, "type"),
    ("type", "café", "PT400", INVALID, "type"),
    # occurredAt
    ("occurredAt", DELETE, "PT400", INVALID, "occurredAt"),
    ("occurredAt", None, "PT400", INVALID, "occurredAt"),
    ("occurredAt", "", "PT400", INVALID, "occurredAt"),
    ("occurredAt", 1763632800, "PT400", INVALID, "occurredAt"),
    ("occurredAt", 1763632800.5, "PT400", INVALID, "occurredAt"),
    ("occurredAt", ["2026-11-20T10:00:00Z"], "PT400", INVALID, "occurredAt"),
    ("occurredAt", {"at": "2026-11-20T10:00:00Z"}, "PT400", INVALID, "occurredAt"),
    ("occurredAt", "2026-11-20T10:00:00", "PT400", INVALID, "occurredAt"),          # no offset
    ("occurredAt", "2026-11-20 10:00:00", "PT400", INVALID, "occurredAt"),          # no offset
    ("occurredAt", "2026-11-20", "PT400", INVALID, "occurredAt"),                   # a date
    ("occurredAt", "2026-13-45T10:00:00Z", "PT400", INVALID, "occurredAt"),
    ("occurredAt", "2026-02-30T10:00:00Z", "PT400", INVALID, "occurredAt"),
    ("occurredAt", "2026-11-20T25:00:00Z", "PT400", INVALID, "occurredAt"),
    ("occurredAt", "2026-11-20T10:61:00Z", "PT400", INVALID, "occurredAt"),
    ("occurredAt", "2026-11-20T10:00:00+99:99", "PT400", INVALID, "occurredAt"),
    ("occurredAt", "2026-11-20T10:00:00+16:00", "PT400", INVALID, "occurredAt"),
    ("occurredAt", "2026-11-20T10:00:00.1234567Z", "PT400", INVALID, "occurredAt"),
    ("occurredAt", "2026-11-20T10:00:00 UTC", "PT400", INVALID, "occurredAt"),
    ("occurredAt", "2026-11-20T10:00:00 Europe/Paris", "PT400", INVALID, "occurredAt"),
    ("occurredAt", "20261120T100000Z", "PT400", INVALID, "occurredAt"),
    ("occurredAt", "yesterday", "PT400", INVALID, "occurredAt"),
    ("occurredAt", "now", "PT400", INVALID, "occurredAt"),
    ("occurredAt", "infinity", "PT400", INVALID, "occurredAt"),
    ("occurredAt", "epoch", "PT400", INVALID, "occurredAt"),
    ("occurredAt", "٢٠٢٦-١١-٢٠T10:00:00Z", "PT400", INVALID, "occurredAt"),       # Arabic-Indic digits
    ("occurredAt", "2026-11-20T10:00:00Z" + " " * 30, "PT400", INVALID, "occurredAt"),  # > 40 chars
    ("occurredAt", "1999-01-01T00:00:00Z", "PT400", INVALID, "occurredAt"),
    ("occurredAt", "1999-12-31T23:59:59.999999Z", "PT400", INVALID, "occurredAt"),
    ("occurredAt", "2000-01-01T00:30:00+01:00", "PT400", INVALID, "occurredAt"),   # 1999 in UTC
    ("occurredAt", "0000-01-01T00:00:00Z", "PT400", INVALID, "occurredAt"),
    ("occurredAt", "2100-01-01T00:00:00Z", "PT400", INVALID, "occurredAt"),
    ("occurredAt", "9999-12-31T23:59:59Z", "PT400", INVALID, "occurredAt"),
    # idempotencyKey
    ("idempotencyKey", DELETE, "PT400", INVALID, "idempotencyKey"),
    ("idempotencyKey", None, "PT400", INVALID, "idempotencyKey"),
    ("idempotencyKey", "", "PT400", INVALID, "idempotencyKey"),
    ("idempotencyKey", 42, "PT400", INVALID, "idempotencyKey"),
    ("idempotencyKey", False, "PT400", INVALID, "idempotencyKey"),
    ("idempotencyKey", ["k"], "PT400", INVALID, "idempotencyKey"),
    ("idempotencyKey", {"k": 1}, "PT400", INVALID, "idempotencyKey"),
    ("idempotencyKey", "k" * 256, "PT400", INVALID, "idempotencyKey"),
    # correlationId (optional, so null is fine; wrong shapes are not)
    ("correlationId", "", "PT400", INVALID, "correlationId"),
    ("correlationId", 42, "PT400", INVALID, "correlationId"),
    ("correlationId", True, "PT400", INVALID, "correlationId"),
    ("correlationId", ["c"], "PT400", INVALID, "correlationId"),
    ("correlationId", {}, "PT400", INVALID, "correlationId"),
    ("correlationId", "c" * 256, "PT400", INVALID, "correlationId"),
    # customer
    ("customer", "ann@example.com", "PT400", INVALID, "customer"),
    ("customer", ["ann@example.com"], "PT400", INVALID, "customer"),
    ("customer", 42, "PT400", INVALID, "customer"),
    ("customer", True, "PT400", INVALID, "customer"),
    ("customer.phone", "+33 1 23 45 67 89", "PT400", UNKNOWN, "customer.phone"),
    ("customer.Email", "ann@example.com", "PT400", UNKNOWN, "customer.Email"),
    ("customer.id", 7, "PT400", UNKNOWN, "customer.id"),
    # customer.email
    ("customer.email", "", "PT400", INVALID, "customer.email"),
    ("customer.email", "   ", "PT400", INVALID, "customer.email"),
    ("customer.email", "ann.example.com", "PT400", INVALID, "customer.email"),
    ("customer.email", "ann@", "PT400", INVALID, "customer.email"),
    ("customer.email", "@example.com", "PT400", INVALID, "customer.email"),
    ("customer.email", "ann@example", "PT400", INVALID, "customer.email"),
    ("customer.email", "ann@@example.com", "PT400", INVALID, "customer.email"),
    ("customer.email", "ann@ex@ample.com", "PT400", INVALID, "customer.email"),
    ("customer.email", "ann smith@example.com", "PT400", INVALID, "customer.email"),
    ("customer.email", "a" * 243 + "@example.com", "PT400", INVALID, "customer.email"),  # 255 > 254
    # ... and what the sender could not deliver (tests/unit/test_mailbox_grammar.py has the grammar's every edge)
    ("customer.email", "\x01a@b.com", "PT400", INVALID, "customer.email"),
    ("customer.email", "<a@b.com>", "PT400", INVALID, "customer.email"),
    ("customer.email", "a\x85b@c.com", "PT400", INVALID, "customer.email"),
    ("customer.email", "ann.@example.com", "PT400", INVALID, "customer.email"),
    ("customer.email", "ann@example.com.", "PT400", INVALID, "customer.email"),
    ("customer.email", "ann@[192.0.2.1]", "PT400", INVALID, "customer.email"),
    ("customer.email", 42, "PT400", INVALID, "customer.email"),
    ("customer.email", ["ann@example.com"], "PT400", INVALID, "customer.email"),
    ("customer.email", {"address": "ann@example.com"}, "PT400", INVALID, "customer.email"),
    # customer.name
    ("customer.name", "", "PT400", INVALID, "customer.name"),
    ("customer.name", "n" * 201, "PT400", INVALID, "customer.name"),
    ("customer.name", 42, "PT400", INVALID, "customer.name"),
    ("customer.name", {"first": "Ann"}, "PT400", INVALID, "customer.name"),
    ("customer.name", ["Ann"], "PT400", INVALID, "customer.name"),
    # customer.locale
    ("customer.locale", "", "PT400", INVALID, "customer.locale"),
    ("customer.locale", "EN", "PT400", INVALID, "customer.locale"),
    ("customer.locale", "e", "PT400", INVALID, "customer.locale"),
    ("customer.locale", "english", "PT400", INVALID, "customer.locale"),
    ("customer.locale", "en_US", "PT400", INVALID, "customer.locale"),
    ("customer.locale", "en-", "PT400", INVALID, "customer.locale"),
    ("customer.locale", "en-U", "PT400", INVALID, "customer.locale"),
    ("customer.locale", "en-" + "a" * 9, "PT400", INVALID, "customer.locale"),
    ("customer.locale", "en" + "-abcdefgh" * 4, "PT400", INVALID, "customer.locale"),  # 38 > 35
    ("customer.locale", 42, "PT400", INVALID, "customer.locale"),
    ("customer.locale", ["en"], "PT400", INVALID, "customer.locale"),
    # amountCents
    ("amountCents", 12.5, "PT400", INVALID, "amountCents"),
    ("amountCents", 0.001, "PT400", INVALID, "amountCents"),
    ("amountCents", -1, "PT400", INVALID, "amountCents"),
    ("amountCents", -0.5, "PT400", INVALID, "amountCents"),
    ("amountCents", 1e20, "PT400", INVALID, "amountCents"),
    ("amountCents", 10 ** 30, "PT400", INVALID, "amountCents"),
    ("amountCents", 2 ** 53, "PT400", INVALID, "amountCents"),
    ("amountCents", 2 ** 63, "PT400", INVALID, "amountCents"),
    ("amountCents", "1299", "PT400", INVALID, "amountCents"),
    ("amountCents", "12.99", "PT400", INVALID, "amountCents"),
    ("amountCents", True, "PT400", INVALID, "amountCents"),
    ("amountCents", [1299], "PT400", INVALID, "amountCents"),
    ("amountCents", {"value": 1299}, "PT400", INVALID, "amountCents"),
    # currency
    ("currency", "usd", "PT400", INVALID, "currency"),
    ("currency", "Eur", "PT400", INVALID, "currency"),
    ("currency", "XYZ", "PT400", INVALID, "currency"),
    ("currency", "", "PT400", INVALID, "currency"),
    ("currency", "EU", "PT400", INVALID, "currency"),
    ("currency", "EURO", "PT400", INVALID, "currency"),
    ("currency", " EU", "PT400", INVALID, "currency"),
    ("currency", "€", "PT400", INVALID, "currency"),
    ("currency", 978, "PT400", INVALID, "currency"),
    ("currency", ["EUR"], "PT400", INVALID, "currency"),
    # amount and currency go together
    ("currency", DELETE, "PT400", INVALID, "currency"),
    ("currency", None, "PT400", INVALID, "currency"),
    ("amountCents", DELETE, "PT400", INVALID, "amountCents"),
    ("amountCents", None, "PT400", INVALID, "amountCents"),
    # payload
    ("payload", [1, 2], "PT400", INVALID, "payload"),
    ("payload", [], "PT400", INVALID, "payload"),
    ("payload", "{}", "PT400", INVALID, "payload"),
    ("payload", 42, "PT400", INVALID, "payload"),
    ("payload", True, "PT400", INVALID, "payload"),
    # unknown top-level fields
    ("Type", "checkout_started", "PT400", UNKNOWN, "Type"),
    ("amount_cents", 1299, "PT400", UNKNOWN, "amount_cents"),
    ("occurred_at", "2026-11-20T10:00:00Z", "PT400", UNKNOWN, "occurred_at"),
    ("receivedAt", "2026-11-20T10:00:00Z", "PT400", UNKNOWN, "receivedAt"),
    ("id", 1, "PT400", UNKNOWN, "id"),
    ("projectId", str(uuid.UUID(int=1)), "PT400", UNKNOWN, "projectId"),
    ("", 1, "PT400", UNKNOWN, ""),
    ("extra", None, "PT400", UNKNOWN, "extra"),
]


@pytest.mark.parametrize(("path", "value", "sqlstate", "key", "field"), FIELD_CASES,
                         ids=[f"{c[0] or '<empty>'}={json.dumps(c[1])[:40] if c[1] is not DELETE else '<missing>'}"
                              for c in FIELD_CASES])
def test_malformed_field_is_refused(shared, path, value, sqlstate, key, field):
    conn, project = shared
    body = with_field(base_event(), path, value)
    detail = refused(conn, project, Jsonb(body), sqlstate, key)
    assert detail["field"] == field
    if key == INVALID:
        assert detail["reason"], "an invalid field says why"


@pytest.mark.parametrize("value", [[], [base_event()], "event", 42, 4.2, True, None],
                         ids=["array", "array-of-event", "string", "integer", "float", "boolean", "json-null"])
def test_event_that_is_not_an_object_is_refused(shared, value):
    conn, project = shared
    detail = refused(conn, project, Jsonb(value), "PT400", INVALID)
    assert detail["field"] == "event"


def test_sql_null_event_is_refused(conn, project):
    detail = refused(conn, project, None, "PT400", INVALID)
    assert detail["field"] == "event"


def test_event_in_the_future_beyond_a_day_is_refused(conn, project):
    """The window's upper end is relative to the server's clock: now() + 1 day."""
    later = conn.execute("SELECT runhub._iso(now() + interval '1 day 1 minute'),"
                         "       runhub._iso(now() + interval '23 hours')").fetchone()
    detail = refused(conn, project, Jsonb(with_field(base_event(), "occurredAt", later[0])), "PT400", INVALID)
    assert detail["field"] == "occurredAt"
    assert ingest(conn, project, with_field(base_event(), "occurredAt", later[1]))["inserted"]


@pytest.mark.parametrize("value", [
    "2000-01-01T00:00:00Z", "2000-01-01T01:00:00+01:00", "2026-11-20T10:00:00.123456Z", "2026-11-20T10:00Z",
    "2026-11-20 10:00:00+05:30", "2026-11-20T10:00:00-0330", "2026-11-20T10:00:00+14",
])
def test_occurred_at_edges_that_are_accepted(conn, project, value):
    assert ingest(conn, project, with_field(base_event(), "occurredAt", value))["inserted"]


@pytest.mark.parametrize(("path", "value"), [
    ("type", "a" * 64), ("idempotencyKey", "k" * 255), ("correlationId", "c" * 255), ("correlationId", None),
    ("customer", None), ("customer", {}), ("customer.name", "n" * 200), ("customer.locale", "zh-Hant-TW"),
    ("customer.email", "a" * 242 + "@example.com"), ("customer.email", "ann@bücher.de"),
    ("amountCents", 0), ("amountCents", 2 ** 53 - 1),
    ("amountCents", 12.0), ("payload", None), ("payload", {}),
])
def test_limits_that_are_accepted(conn, project, path, value):
    assert ingest(conn, project, with_field(base_event(), path, value))["inserted"]


def test_first_unknown_field_is_named_whichever_it_is(conn, project):
    body = {**base_event(), "zeta": 1, "alpha": 2}
    detail = refused(conn, project, Jsonb(body), "PT400", UNKNOWN)
    assert detail["field"] in ("zeta", "alpha")


# -- customer.email is stored lower-cased and trimmed (docs/sql-contract.md) -------------------------

# Padding that copy-paste, CSV exports and web forms add. Every one must be trimmed like a space is:
# an address stored with invisible padding never matches the same customer's other events (attribution
# by exact normalized e-mail, suppression), and a refused one is a lost signal.
EMAIL_PADDING = [" ", "  \t", "\t", "\n", "\r\n", "\u00a0", "\u200b", "\ufeff", "\u2003"]


@pytest.mark.parametrize("pad", EMAIL_PADDING,
                         ids=["space", "space-tab", "tab", "newline", "crlf", "nbsp", "zwsp", "bom", "em-space"])
def test_email_padded_with_any_white_space_is_stored_trimmed(conn, project, pad):
    body = with_field(base_event(), "customer.email", f"{pad}Ann@Example.COM{pad}")
    result = ingest(conn, project, body)  # refused today for tab, newline, em space
    stored = conn.execute("SELECT customer_email FROM runhub.business_events WHERE id = %s",
                          (result["eventId"],)).fetchone()[0]
    assert stored == "ann@example.com", f"stored as {stored!r}"


# -- payload size --------------------------------------------------------------------------------

def _payload_of_bytes(n: int) -> dict:
    """A payload whose PostgreSQL jsonb text form is exactly n bytes ('{"blob": "..."}' is 12 + len)."""
    return {"blob": "x" * (n - 12)}


def test_payload_at_the_limit_is_accepted(conn, project):
    payload = _payload_of_bytes(32768)
    assert conn.execute("SELECT octet_length(%s::jsonb::text)", (Jsonb(payload),)).fetchone()[0] == 32768
    assert ingest(conn, project, with_field(base_event(), "payload", payload))["inserted"]


@pytest.mark.parametrize("payload", [
    _payload_of_bytes(32769),
    {"blob": "é" * 16380},                            # 16 380 characters, 32 772 bytes
    {f"k{i}": i for i in range(4000)},
    {"deep": [[["x" * 1000] * 10] * 10]},
], ids=["one-byte-over", "multibyte", "many-keys", "nested"])
def test_payload_over_32768_bytes_is_refused_with_its_size(conn, project, payload):
    size = conn.execute("SELECT octet_length(%s::jsonb::text)", (Jsonb(payload),)).fetchone()[0]
    assert size > 32768
    detail = refused(conn, project, Jsonb(with_field(base_event(), "payload", payload)), "PT413",
                     "events.payloadTooLarge")
    assert detail == {"bytes": size, "maxBytes": 32768}


# -- the project argument ------------------------------------------------------------------------

def test_unknown_project_is_not_found(conn, project):
    ghost = uuid.uuid4()
    detail = refused(conn, ghost, Jsonb(base_event()), "PT404", "projects.notFound")
    assert detail == {"projectId": str(ghost)}


def test_null_project_is_bad_input(conn, project):
    detail = refused(conn, None, Jsonb(base_event()), "PT400", "common.invalidInput")
    assert detail["field"] == "project"


def test_unknown_project_wins_over_a_malformed_event(conn, project):
    """Nothing about the event is revealed for a project that does not exist."""
    refused(conn, uuid.uuid4(), Jsonb([]), "PT404", "projects.notFound")


# -- property: no input gets past the error contract -------------------------------------------

_text = st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=12)
_leaves = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
           | _text)
json_values = st.recursive(
    _leaves, lambda children: st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4),
    max_leaves=12)

# Near misses reach deeper than random JSON: strings shaped like instants (Python's \d includes every
# Unicode digit), e-mails, locales, currencies, and numbers around the amount limits.
instant_shaped = st.from_regex(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}(:?\d{2})?)", fullmatch=True)
near_misses = (
    instant_shaped
    | st.from_regex(r"20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-6][0-9]:[0-6][0-9](Z|[+-][01][0-9]:[0-6][0-9])",
                    fullmatch=True)
    | st.from_regex(r"\s?[A-Za-z0-9.+-]{0,5}@[A-Za-z0-9.-]{0,5}\.?[A-Za-z]{0,3}\s?", fullmatch=True)
    | st.from_regex(r"[A-Za-z]{1,4}([-_][A-Za-z0-9]{1,9}){0,2}", fullmatch=True)
    | st.sampled_from(["EUR", "usd", "JPY", "XYZ", "", " ", "EUR ", "a@b.co", "payment_succeeded"])
    | st.integers(min_value=-2, max_value=2) | st.integers(min_value=2 ** 53 - 2, max_value=2 ** 53 + 1)
    | st.decimals(allow_nan=False, allow_infinity=False).map(float)
)
any_value = json_values | near_misses

FIELDS = ["type", "occurredAt", "idempotencyKey", "correlationId", "customer", "customer.email",
          "customer.name", "customer.locale", "amountCents", "currency", "payload"]
# Events shaped like the contract more often than chance would: known keys with arbitrary values.
contract_shaped = st.dictionaries(st.sampled_from(FIELDS[:5] + FIELDS[8:]) | _text, json_values, max_size=9)


def _catalog(conn) -> dict:
    return dict(conn.execute("SELECT key, sqlstate FROM runhub.error_catalog()").fetchall())


def _ingest_anything(conn, project, body, catalog):
    """Success, or a catalogued PTxxx refusal that wrote nothing."""
    before = count_rows(conn, "business_events")
    try:
        result = conn.execute("SELECT runhub.ingest_event(%s, %s)", (project, Jsonb(body))).fetchone()[0]
    except psycopg.Error as err:
        assert err.sqlstate and err.sqlstate.startswith("PT"), (err.sqlstate, str(err), body)
        note_outcome(f"refused: {err.diag.message_primary}")
        assert catalog.get(err.diag.message_primary) == err.sqlstate, (err.diag.message_primary, err.sqlstate)
        assert isinstance(json.loads(err.diag.message_detail), dict)
        assert err.diag.message_hint
        assert count_rows(conn, "business_events") == before, ("a refusal wrote something", body)
        return None
    note_outcome("accepted")
    assert set(result) == {"eventId", "inserted"} and isinstance(result["eventId"], int)
    assert count_rows(conn, "business_events") == before + (1 if result["inserted"] else 0)
    return result


@PROPERTY
@given(body=json_values | contract_shaped)
def test_any_json_as_the_event_is_accepted_or_refused_cleanly(conn, project, body):
    _ingest_anything(conn, project, body, _catalog(conn))


@PROPERTY
@given(path=st.sampled_from(FIELDS + ["unknownField", "customer.other"]), value=any_value)
def test_any_json_in_one_field_is_accepted_or_refused_cleanly(conn, project, path, value):
    _ingest_anything(conn, project, with_field(base_event(), path, value), _catalog(conn))


# -- property: valid events round-trip ----------------------------------------------------------

UTC = timezone.utc
WINDOW_START = datetime(2000, 1, 1, tzinfo=UTC)
WINDOW_END = datetime(2026, 11, 19, tzinfo=UTC)  # helpers.db.event() already assumes a clock past this
CURRENCIES = ["EUR", "USD", "GBP", "JPY", "KWD", "CLF", "AED", "CHF"]

_plain_text = st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
                      min_size=1, max_size=40)


@st.composite
def occurred_at(draw):
    """(text as sent with a random offset and spelling, the same instant as list_events writes it)."""
    instant = draw(st.datetimes(min_value=WINDOW_START.replace(tzinfo=None) + timedelta(microseconds=1),
                                max_value=WINDOW_END.replace(tzinfo=None))).replace(tzinfo=UTC)
    minutes = draw(st.integers(min_value=-12 * 60, max_value=14 * 60))
    local = instant.astimezone(timezone(timedelta(minutes=minutes)))
    sign = "+" if minutes >= 0 else "-"
    hh, mm = divmod(abs(minutes), 60)
    offset = draw(st.sampled_from(
        [f"{sign}{hh:02}:{mm:02}", f"{sign}{hh:02}{mm:02}"] + ([f"{sign}{hh:02}"] if mm == 0 else [])
        + (["Z"] if minutes == 0 else [])))
    sep = draw(st.sampled_from(["T", " "]))
    fraction = f".{local.microsecond:06}" if local.microsecond else draw(st.sampled_from(["", ".000000", ".0"]))
    text = local.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + fraction + offset
    return text, instant.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@st.composite
def emails(draw):
    """(email as sent, with mixed case and padding, the normalized address)."""
    local = draw(st.from_regex(r"[A-Za-z0-9_%+-]{1,10}(\.[A-Za-z0-9_%+-]{1,10}){0,2}", fullmatch=True))  # a dot-atom
    domain = draw(st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,18}[A-Za-z0-9])?\.[A-Za-z]{2,6}", fullmatch=True))
    left, right = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    address = f"{local}@{domain}"
    return " " * left + address + " " * right, address.lower()


# Names stored as sent: no white space at either end (trimming has its own test below).
_untrimmable_names = st.text(alphabet=st.characters(whitelist_categories=("L", "N", "P", "S", "Zs")),
                             min_size=1, max_size=40).filter(lambda s: s == s.strip())


@st.composite
def valid_events(draw):
    """(event as sent, the event list_events should return without id and receivedAt)."""
    at, at_utc = draw(occurred_at())
    # Types runhub writes itself (*_email_sent, runhub_*) are refused from clients: not valid here.
    sent = {"type": draw(st.from_regex(r"[a-z][a-z0-9_]{0,63}", fullmatch=True)
                         .filter(lambda t: not t.endswith("_email_sent") and not t.startswith("runhub_"))),
            "occurredAt": at,
            "idempotencyKey": uuid.uuid4().hex + draw(st.text(max_size=100).filter(lambda s: "\x00" not in s))}
    expected = {**sent, "occurredAt": at_utc}
    if draw(st.booleans()):
        sent["correlationId"] = expected["correlationId"] = draw(_plain_text)
    customer, expected_customer = {}, {}
    if draw(st.booleans()):
        customer["email"], expected_customer["email"] = draw(emails())
    if draw(st.booleans()):
        customer["name"] = expected_customer["name"] = draw(_untrimmable_names)
    if draw(st.booleans()):
        customer["locale"] = expected_customer["locale"] = draw(
            st.from_regex(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}", fullmatch=True))
    if customer or draw(st.booleans()):
        sent["customer"] = customer
    if expected_customer:
        expected["customer"] = expected_customer
    if draw(st.booleans()):
        sent["amountCents"] = expected["amountCents"] = draw(st.integers(0, 2 ** 53 - 1))
        sent["currency"] = expected["currency"] = draw(st.sampled_from(CURRENCIES))
    payload = draw(st.none() | st.dictionaries(_text, json_values, max_size=5))
    if payload is not None or draw(st.booleans()):
        sent["payload"] = payload
    expected["payload"] = payload or {}
    return sent, expected


def _decimal_json(text: str):
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


@PROPERTY
@given(pair=valid_events())
def test_valid_events_round_trip(conn, project, pair):
    sent, expected = pair
    result = ingest(conn, project, sent)
    assert result["inserted"] is True
    # Compare JSON numbers as decimals: 1e300 comes back as the same number spelled in full.
    text = conn.execute("SELECT runhub.list_events(id, owner_id, 'ingestion', NULL, 1)::text FROM runhub.projects"
                        " WHERE id = %s", (project,)).fetchone()[0]  # as the project's owner
    got = _decimal_json(text)["events"][0]
    assert got.pop("id") == result["eventId"]
    received = got.pop("receivedAt")
    assert datetime.strptime(received, "%Y-%m-%dT%H:%M:%S.%fZ")
    assert got == _decimal_json(json.dumps(expected))
    # The same event again is a replay: same id, nothing written.
    again = ingest(conn, project, sent)
    assert again == {"eventId": result["eventId"], "inserted": False}


# -- the session's settings never decide an instant ------------------------------------------------

ODD_SESSION = "-c TimeZone=Pacific/Kiritimati -c DateStyle=SQL,DMY -c IntervalStyle=sql_standard"


def test_session_timezone_and_datestyle_do_not_change_instants(db_url):
    with psycopg.connect(db_url, autocommit=True, options=ODD_SESSION) as odd:
        project, owner = new_project(odd)
        ingest(odd, project, with_field(base_event(), "occurredAt", "2026-11-20T10:00:00+02:00"))
        ingest(odd, project, with_field(base_event(), "occurredAt", "2000-01-01T00:00:00Z"))
        page = odd.execute("SELECT runhub.list_events(%s, %s, 'timeline', NULL, 10)", (project, owner)).fetchone()[0]
        assert [e["occurredAt"] for e in page["events"]] == ["2026-11-20T08:00:00.000000Z",
                                                             "2000-01-01T00:00:00.000000Z"]
        with pytest.raises(psycopg.Error) as excinfo:  # 1999 in UTC, 2000 in Kiritimati (UTC+14)
            ingest(odd, project, with_field(base_event(), "occurredAt", "1999-12-31T23:59:59Z"))
        assert assert_refused(excinfo, "PT400", INVALID)["field"] == "occurredAt"
        with pytest.raises(psycopg.Error) as excinfo:  # an instant without offset is never read in session time
            ingest(odd, project, with_field(base_event(), "occurredAt", "2026-11-20T10:00:00"))
        assert assert_refused(excinfo, "PT400", INVALID)["field"] == "occurredAt"


@pytest.mark.parametrize("padded, stored", [
    ("  Ann  ", "Ann"), ("\tAnn\n", "Ann"), ("\u00a0Ann Lee\u00a0", "Ann Lee"), ("\u200bAnn\ufeff", "Ann"),
    (" \t ", None),  # nothing but white space: no name
])
def test_customer_names_are_trimmed_of_every_kind_of_white_space(conn, project, padded, stored):
    body = event("lead_created", customer={"email": "ann@example.com", "name": padded})
    event_id = ingest(conn, project, body)["eventId"]
    assert conn.execute("SELECT customer_name FROM runhub.business_events WHERE id = %s",
                        (event_id,)).fetchone()[0] == stored


@pytest.mark.parametrize(("occurred_at", "says"), [
    (DELETE, "is required"),
    ("2026-11-20T10:00:00", "needs a UTC offset"),   # was "is required", for a value that is there
    ("2026-11-20 10:00", "needs a UTC offset"),
    ("yesterday", "is not an ISO 8601 instant"),
    ("2026-11-20T25:00:00Z", "is not an ISO 8601 instant"),
])
def test_a_refused_instant_says_what_is_wrong_with_it(conn, project, occurred_at, says):
    detail = refused(conn, project, Jsonb(with_field(base_event(), "occurredAt", occurred_at)), "PT400", INVALID)
    assert detail["field"] == "occurredAt" and detail["reason"].startswith(says), detail
