"""Bounds that hold whatever a login sets (issue: hardening, findings 4 and 5). A component login
can `SET statement_timeout = 0`, and PL/Python ignores statement_timeout anyway: so every value is
bounded before any PL/Python call, a payload cannot nest deeper than its readers can parse, and each
bulk call bounds its own work (bytes per ingest_events call, ids per sender call). The calls are made
as LOGIN roles granted one runhub role each, as `runhub login-role` makes them, with their own
timeouts lifted."""
from __future__ import annotations

import json
import uuid

import psycopg
import pytest
from psycopg.types.json import Jsonb

from helpers.db import assert_refused, count_rows, event, new_project

TOO_LONG = "a" * 250 + "@example.com"  # 262 characters: no address is longer than 254
HUGE = "a" * 2_000_000 + "@example.com"  # took 90 s of CPU in PL/Python, past any timeout


def _as(login_as, role: str) -> psycopg.Connection:
    conn = psycopg.connect(login_as(role), autocommit=True)
    conn.execute("SET statement_timeout = 0")  # what a component login may do: the bounds must not need it
    return conn


def _plpython_calls(conn, call, *params) -> tuple[str | None, dict]:
    """(SQLSTATE or None, {PL/Python function: calls}) of one call, counted by the server."""
    plpython = {row[0] for row in conn.execute(
        "SELECT p.proname FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang"
        " WHERE l.lanname = 'plpython3u' AND p.pronamespace = 'runhub'::regnamespace")}
    with conn.transaction():
        conn.execute("SET LOCAL track_functions = 'all'")
        try:
            with conn.transaction():
                conn.execute(call, params)
            sqlstate = None
        except psycopg.Error as err:
            sqlstate = err.sqlstate
        calls = {name: n for name, n in conn.execute(
            "SELECT funcname, calls FROM pg_stat_xact_user_functions WHERE schemaname = 'runhub'") if name in plpython}
    return sqlstate, calls


@pytest.fixture
def project(conn):
    return new_project(conn)


@pytest.mark.parametrize("address", [TOO_LONG, HUGE], ids=["262 characters", "2 MB"])
def test_no_address_longer_than_any_valid_one_reaches_plpython(conn, project, address):
    """Every caller of the address grammar: suppress, ingest (one and many), a digest recipient,
    an unsubscribe token. Each refuses the value (or gives no token) without calling PL/Python."""
    pid, owner = project
    calls = {
        "suppress": ("SELECT runhub.suppress(%s, %s, %s, 'manual')", pid, owner, address),
        "ingest_event": ("SELECT runhub.ingest_event(%s, %s)", pid,
                         Jsonb(event(customer={"email": address[:1000]}))),
        "ingest_events": ("SELECT runhub.ingest_events(%s, %s)", pid,
                          Jsonb([event(customer={"email": address[:1000]})])),
        "settings": ("SELECT runhub.update_project_settings(%s, %s, %s)", pid, owner,
                     Jsonb({"dailyDigestRecipient": address})),
        "unsubscribe_token": ("SELECT runhub.unsubscribe_token(%s, %s)", pid, address),
    }
    for name, (sql, *params) in calls.items():
        sqlstate, plpython = _plpython_calls(conn, sql, *params)
        assert plpython == {}, (name, plpython)
        assert sqlstate in ("PT400", None), (name, sqlstate)
    assert conn.execute("SELECT runhub.unsubscribe_token(%s, %s)", (pid, address)).fetchone()[0] is None
    assert count_rows(conn, "suppressions") == 0 and count_rows(conn, "business_events") == 0
    # The bound is on the address, not on its padding: trimmed, these reach the grammar or the
    # pattern, and are stored.
    sqlstate, plpython = _plpython_calls(conn, "SELECT runhub.suppress(%s, %s, %s, 'manual')",
                                         pid, owner, "\u2003Ann@Bücher.de\u2003")
    assert (sqlstate, plpython) == (None, {"_mailbox": 1})
    longest = "a" * 242 + "@example.com"
    assert conn.execute("SELECT runhub._address(%s)", ("\u2003 " + longest + " \u2003",)).fetchone()[0] == longest


def test_a_login_without_timeouts_gets_the_same_refusals(conn, login_as, project):
    pid, owner = project
    member = uuid.uuid4()
    conn.execute("SELECT runhub.add_member(%s, %s, %s, 'admin')", (pid, owner, member))
    with _as(login_as, "runhub_app") as app, _as(login_as, "runhub_ingest") as ingest:
        with pytest.raises(psycopg.Error) as excinfo:
            app.execute("SELECT runhub.suppress(%s, %s, %s, 'manual')", (pid, member, HUGE))
        assert assert_refused(excinfo, "PT400", "common.invalidInput")["field"] == "email"
        with pytest.raises(psycopg.Error) as excinfo:
            ingest.execute("SELECT runhub.ingest_event(%s, %s)", (pid, Jsonb(event(customer={"email": TOO_LONG}))))
        assert assert_refused(excinfo, "PT400", "events.invalid")["field"] == "customer.email"


# -- payloads nested too deep for their readers ------------------------------------------------------

def _nested(levels: int) -> dict:
    """A payload of `levels` objects and arrays, one inside the other (the payload the first)."""
    value: object = "leaf"
    for level in range(levels - 1, 0, -1):
        value = [value] if level % 2 else {"n": value}
    return {"deep": value}


def test_a_payload_nested_32_deep_is_stored_and_read_back(conn, project, login_as):
    pid, owner = project
    with _as(login_as, "runhub_ingest") as ingest:
        ingest.execute("SELECT runhub.ingest_event(%s, %s)", (pid, Jsonb(event(key="p32", payload=_nested(32)))))
        [answer] = ingest.execute("SELECT runhub.ingest_events(%s, %s)",
                                  (pid, Jsonb([event(key="b32", payload=_nested(32))]))).fetchone()[0]
        assert answer["inserted"], answer
    page = conn.execute("SELECT runhub.list_events(%s, %s)", (pid, owner)).fetchone()[0]  # parsed by psycopg
    assert [e["payload"] for e in page["events"]] == [_nested(32), _nested(32)]


def _event_text(key: str, levels: int) -> str:
    """An event whose payload holds `levels` arrays and objects, as JSON text (Python's own encoder
    cannot write 5,000 levels)."""
    payload = '{"deep": ' + "[" * (levels - 1) + '"leaf"' + "]" * (levels - 1) + "}"
    return json.dumps(event(key=key))[:-1] + ', "payload": ' + payload + "}"


@pytest.mark.parametrize("levels", [33, 5000])
def test_a_payload_nested_deeper_is_refused_by_both_ingests_and_not_stored(conn, project, login_as, levels):
    """5,000 levels fit in 32 KiB; stored, they broke every Python reader of list_events
    (RecursionError in the JSON parser)."""
    pid, owner = project
    deep = _event_text("deep", levels)
    assert len(deep) < 32768
    with _as(login_as, "runhub_ingest") as ingest:
        with pytest.raises(psycopg.Error) as excinfo:
            ingest.execute("SELECT runhub.ingest_event(%s, %s::jsonb)", (pid, deep))
        assert assert_refused(excinfo, "PT400", "events.invalid")["field"] == "payload"
        answers = ingest.execute("SELECT runhub.ingest_events(%s, %s::jsonb)::text",
                                 (pid, f"[{json.dumps(event(key='ok'))}, {deep}]")).fetchone()[0]
    ok, refused = json.loads(answers)
    assert ok["inserted"] and refused["error"]["key"] == "events.invalid", refused
    assert refused["error"]["params"]["field"] == "payload"
    assert conn.execute("SELECT idempotency_key FROM runhub.business_events").fetchall() == [("ok",)]
    conn.execute("SELECT runhub.list_events(%s, %s)", (pid, owner)).fetchone()


# -- bulk calls bound their own work -------------------------------------------------------------

def test_a_batch_over_32_mib_is_refused_whole(conn, project, login_as):
    """1,100 events of 31 KiB payloads: under the 5,000 events, over the bytes."""
    pid, _ = project
    batch = [event(key=f"big-{i}", payload={"blob": "x" * 31_000}) for i in range(1100)]
    with _as(login_as, "runhub_ingest") as ingest:
        with pytest.raises(psycopg.Error) as excinfo:
            ingest.execute("SELECT runhub.ingest_events(%s, %s)", (pid, Jsonb(batch)))
        params = assert_refused(excinfo, "PT413", "events.batchTooLarge")
        assert params["maxBytes"] == 32 * 1024 * 1024 and params["bytes"] > params["maxBytes"], params
        ingest.execute("SELECT runhub.ingest_events(%s, %s)", (pid, Jsonb(batch[:1000])))  # one under it
    assert count_rows(conn, "business_events") == 1000


@pytest.mark.parametrize("call", [
    "SELECT runhub.heartbeat_messages('w', %s, 60)",
    "SELECT * FROM runhub.start_messages('w', %s)",
    "SELECT runhub.release_messages('w', %s)",
    "SELECT runhub.defer_messages('w', %s, 'relay down')",
    "SELECT * FROM runhub.record_sent_many('w', %s, array_fill('250 ok'::text, ARRAY[cardinality(%s::bigint[])]))",
])
def test_the_senders_batch_calls_take_no_more_ids_than_a_claim_gives(login_as, call):
    with _as(login_as, "runhub_sender") as sender:
        params = lambda ids: (ids,) * call.count("%s")  # noqa: E731
        sender.execute(call, params(list(range(1, 1001))))
        for bad in (list(range(1, 1002)), [1, None], [[1, 2], [3, 4]]):
            with pytest.raises(psycopg.Error) as excinfo:
                sender.execute(call, params(bad))
            assert assert_refused(excinfo, "PT400", "common.invalidInput")["field"] == "ids"
