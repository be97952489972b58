"""ingest_events: many events at once for imports, each validated exactly as ingest_event validates
one, idempotent per event, answered in order; a refusal of the call itself stores nothing."""
from __future__ import annotations

import threading
import uuid

import psycopg
import pytest
from psycopg.types.json import Jsonb

from helpers.attribution import credit, recovery_run
from helpers.db import DELETE, assert_refused, count_rows, new_project, with_field
from helpers.workflows import ago, connect
from test_events_input import FIELD_CASES, base_event


def bulk(conn, project, events) -> list[dict]:
    return conn.execute("SELECT runhub.ingest_events(%s, %s)", (project, Jsonb(events))).fetchone()[0]


def keyed(n: int, prefix="k") -> list[dict]:
    return [base_event() | {"idempotencyKey": f"{prefix}-{i}"} for i in range(n)]


def test_a_batch_is_stored_in_order_and_a_replay_returns_the_same_ids(conn):
    project, _ = new_project(conn)
    first = bulk(conn, project, keyed(50))
    assert [r["inserted"] for r in first] == [True] * 50
    ids = [r["eventId"] for r in first]
    assert ids == sorted(ids), "ids in the order given"
    again = bulk(conn, project, keyed(50))
    assert again == [{"eventId": i, "inserted": False} for i in ids]
    assert count_rows(conn, "business_events") == 50


def test_a_key_twice_in_one_batch_is_stored_once(conn):
    project, _ = new_project(conn)
    events = keyed(3) + [base_event() | {"idempotencyKey": "k-1"}]
    result = bulk(conn, project, events)
    assert [r["inserted"] for r in result] == [True, True, True, False]
    assert result[3]["eventId"] == result[1]["eventId"]


def test_a_refused_event_is_answered_in_place_and_the_others_are_stored(conn):
    project, _ = new_project(conn)
    events = keyed(2) + [with_field(base_event(), "type", DELETE)] + keyed(1, "z")
    result = bulk(conn, project, events)
    assert [("error" in r) for r in result] == [False, False, True, False]
    error = result[2]["error"]
    assert (error["code"], error["key"], error["params"]["field"]) == ("PT400", "events.invalid", "type")
    assert error["message"]
    assert count_rows(conn, "business_events") == 3


@pytest.mark.parametrize(("path", "value", "sqlstate", "key", "field"), FIELD_CASES[::4])
def test_each_event_is_refused_exactly_as_ingest_event_refuses_it(conn, path, value, sqlstate, key, field):
    project, _ = new_project(conn)
    body = with_field(base_event(), path, value)
    with pytest.raises(psycopg.Error) as excinfo:
        conn.execute("SELECT runhub.ingest_event(%s, %s)", (project, Jsonb(body)))
    one = assert_refused(excinfo, sqlstate, key)
    (answer,) = bulk(conn, project, [body])
    assert (answer["error"]["code"], answer["error"]["key"], answer["error"]["params"]) == (sqlstate, key, one)


@pytest.mark.parametrize("events", [{}, "events", 42, None, []])
def test_a_call_that_is_not_a_batch_is_refused_and_stores_nothing(conn, events):
    project, _ = new_project(conn)
    with pytest.raises(psycopg.Error) as excinfo:
        conn.execute("SELECT runhub.ingest_events(%s, %s)", (project, Jsonb(events) if events is not None else None))
    assert assert_refused(excinfo, "PT400", "common.invalidInput")["field"] == "events"
    assert count_rows(conn, "business_events") == 0


def test_more_than_5000_events_or_an_unknown_project_are_refused(conn):
    project, _ = new_project(conn)
    with pytest.raises(psycopg.Error) as excinfo:
        bulk(conn, project, keyed(5001))
    assert_refused(excinfo, "PT400", "common.invalidInput")
    with pytest.raises(psycopg.Error) as excinfo:
        bulk(conn, uuid.uuid4(), keyed(1))
    assert_refused(excinfo, "PT404", "projects.notFound")
    assert count_rows(conn, "business_events") == 0


def test_bulk_payments_are_attributed(conn):
    project, _, run = recovery_run(conn, {"ann@shop.example": ("cart-1", 4200)})
    payment = {"type": "payment_succeeded", "occurredAt": ago(0.5), "idempotencyKey": "pay-1",
               "customer": {"email": "ann@shop.example"}, "amountCents": 4200, "currency": "EUR",
               "payload": {"cartId": "cart-1"}}
    (answer,) = bulk(conn, project, [payment])
    assert credit(conn, answer["eventId"])["method"] == "cart_match"


def test_concurrent_batches_with_the_same_keys_store_each_once(conn, db_url):
    project, _ = new_project(conn)
    events = keyed(200)
    start, results = threading.Barrier(4), []

    def one():
        with connect(db_url) as c:
            start.wait()
            results.append(bulk(c, project, events))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 4 and count_rows(conn, "business_events") == 200
    ids = [[r["eventId"] for r in result] for result in results]
    assert all(i == ids[0] for i in ids) and None not in ids[0]
    assert sum(r["inserted"] for result in results for r in result) == 200
