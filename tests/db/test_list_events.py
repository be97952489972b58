"""runhub.list_events: cursor paging in timeline order (occurredAt DESC, id DESC) and ingestion order
(id DESC) is exact (every event once, in order, no gaps or duplicates) for any history, including late
arrivals and ties; events ingested between page fetches never jump back above the cursor; cursors
that do not fit the order, or whose instant is before 2000 or more than a day ahead, are refused; and
any member may list, while a non-member learns nothing (PT404, as for an unknown project)."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from helpers.db import assert_refused, event, ingest, new_project

PROPERTY = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])

UTC = timezone.utc
BASE = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def list_page(conn, project, actor, order, cursor=None, limit=50) -> dict:
    return conn.execute("SELECT runhub.list_events(%s, %s, %s, %s, %s)",
                        (project, actor, order, None if cursor is None else Jsonb(cursor), limit)).fetchone()[0]


def page_through(conn, project, actor, order, sizes) -> list[dict]:
    """All pages of the listing as actor; sizes(i) gives the limit of page i."""
    pages, cursor = [], None
    for i in range(10_000):
        page = list_page(conn, project, actor, order, cursor, sizes(i))
        pages.append({"limit": sizes(i), **page})
        cursor = page["nextCursor"]
        if cursor is None:
            return pages
    pytest.fail("paging never ended")


def expected_order(history: list[dict], order: str) -> list[int]:
    """history: [{'id', 'at'}]; the ids in the order the listing must return them."""
    if order == "timeline":
        return [e["id"] for e in sorted(history, key=lambda e: (e["at"], e["id"]), reverse=True)]
    return sorted((e["id"] for e in history), reverse=True)


def check_pages(pages: list[dict], order: str, history: list[dict]):
    by_id = {e["id"]: e for e in history}
    ids = [e["id"] for p in pages for e in p["events"]]
    assert len(ids) == len(set(ids)), "an event appeared twice"
    assert ids == expected_order(history, order)
    for i, p in enumerate(pages):
        last = i == len(pages) - 1
        assert len(p["events"]) <= p["limit"]
        if not last:
            assert len(p["events"]) == p["limit"], "only the last page may be short"
            tail = p["events"][-1]
            # The cursor names the last event of the page, and nothing else.
            if order == "timeline":
                assert p["nextCursor"] == {"occurredAt": tail["occurredAt"], "id": tail["id"]}
            else:
                assert p["nextCursor"] == {"id": tail["id"]}
        else:
            assert p["nextCursor"] is None
            assert p["events"] or len(pages) == 1, "no empty trailing page after a cursor"
    for e in (e for p in pages for e in p["events"]):
        assert e["occurredAt"] == iso(by_id[e["id"]]["at"])


# -- property: any history pages exactly, in both orders -----------------------------------------

# occurredAt drawn from few distinct instants (ties are common), with microsecond differences too,
# in any ingestion order (late arrivals are the rule, not the exception).
_instants = st.one_of(
    st.integers(min_value=0, max_value=12).map(lambda m: BASE + timedelta(minutes=m)),
    st.integers(min_value=0, max_value=3).map(lambda us: BASE + timedelta(microseconds=us)),
    st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2026, 11, 1)).map(lambda d: d.replace(tzinfo=UTC)),
)
_offsets = st.sampled_from([timezone.utc, timezone(timedelta(hours=2)), timezone(timedelta(hours=-9, minutes=-30))])


@PROPERTY
@given(instants=st.lists(st.tuples(_instants, _offsets), max_size=30), data=st.data())
def test_paging_yields_every_event_once_in_order(conn, instants, data):
    project, owner = new_project(conn)
    history = []
    for n, (at, tz) in enumerate(instants):
        sent = at.astimezone(tz).isoformat()  # the same instant, spelled in another offset
        history.append({"id": ingest(conn, project, event(at=sent, key=f"e{n}"))["eventId"], "at": at})
    for order in ("timeline", "ingestion"):
        sizes = data.draw(st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=31), label=order)
        pages = page_through(conn, project, owner, order, lambda i: sizes[i % len(sizes)])
        check_pages(pages, order, history)


# -- late arrivals between page fetches ------------------------------------------------------------

def _minute(m: int, seconds: int = 0) -> datetime:
    return BASE + timedelta(minutes=m, seconds=seconds)


@pytest.fixture
def six(conn):
    """Six events at 12:00 .. 12:05, ingested in time order; returns (project, owner, {minute: id})."""
    project, owner = new_project(conn)
    ids = {m: ingest(conn, project, event(at=iso(_minute(m)), key=f"on-time-{m}"))["eventId"] for m in range(6)}
    return project, owner, ids


def test_late_event_between_pages_appears_only_if_it_sorts_after_the_cursor(conn, six):
    project, owner, ids = six
    page1 = list_page(conn, project, owner, "timeline", None, 3)
    assert [e["id"] for e in page1["events"]] == [ids[5], ids[4], ids[3]]
    assert page1["nextCursor"] == {"occurredAt": iso(_minute(3)), "id": ids[3]}

    late = {
        "newer-than-cursor": ingest(conn, project, event(at=iso(_minute(4)), key="late-12:04"))["eventId"],
        "tie-with-cursor": ingest(conn, project, event(at=iso(_minute(3)), key="late-12:03"))["eventId"],
        "just-before-cursor": ingest(conn, project, event(at=iso(_minute(3) - timedelta(microseconds=1)),
                                                          key="late-12:02:59.999999"))["eventId"],
        "between-old": ingest(conn, project, event(at=iso(_minute(1, 30)), key="late-12:01:30"))["eventId"],
        "oldest": ingest(conn, project, event(at=iso(_minute(-60)), key="late-11:00"))["eventId"],
    }
    page2 = list_page(conn, project, owner, "timeline", page1["nextCursor"], 3)
    page3 = list_page(conn, project, owner, "timeline", page2["nextCursor"], 3)
    rest = [e["id"] for e in page2["events"] + page3["events"]]
    # Those sorting before the cursor (newer, or the same instant with a higher id) belong to page 1.
    assert late["newer-than-cursor"] not in rest
    assert late["tie-with-cursor"] not in rest
    assert rest == [late["just-before-cursor"], ids[2], late["between-old"], ids[1], ids[0], late["oldest"]]
    assert page3["nextCursor"] is None

    # A fresh listing has everything, in timeline order.
    fresh = [e["id"] for e in list_page(conn, project, owner, "timeline", None, 50)["events"]]
    assert fresh == [ids[5], late["newer-than-cursor"], ids[4], late["tie-with-cursor"], ids[3]] + rest


def test_late_event_between_pages_does_not_appear_past_an_ingestion_cursor(conn, six):
    project, owner, ids = six
    page1 = list_page(conn, project, owner, "ingestion", None, 3)
    assert [e["id"] for e in page1["events"]] == [ids[5], ids[4], ids[3]]
    late = ingest(conn, project, event(at=iso(_minute(-60)), key="late"))["eventId"]
    page2 = list_page(conn, project, owner, "ingestion", page1["nextCursor"], 3)
    assert [e["id"] for e in page2["events"]] == [ids[2], ids[1], ids[0]]
    assert page2["nextCursor"] is None
    assert list_page(conn, project, owner, "ingestion", None, 1)["events"][0]["id"] == late


def test_ties_on_occurred_at_page_by_id(conn):
    project, owner = new_project(conn)
    at = iso(BASE)
    ids = [ingest(conn, project, event(at=at, key=f"tie-{i}"))["eventId"] for i in range(5)]
    pages = page_through(conn, project, owner, "timeline", lambda i: 2)
    assert [[e["id"] for e in p["events"]] for p in pages] == [ids[:2:-1], ids[2:0:-1], ids[:1]]
    assert [p["nextCursor"] for p in pages] == [{"occurredAt": at, "id": ids[3]}, {"occurredAt": at, "id": ids[1]},
                                                None]


def test_exact_multiple_of_the_page_size_has_no_empty_last_page(conn, six):
    project, owner, ids = six
    for order in ("timeline", "ingestion"):
        pages = page_through(conn, project, owner, order, lambda i: 3)
        assert [len(p["events"]) for p in pages] == [3, 3]
        assert pages[1]["nextCursor"] is None


def test_empty_project_lists_nothing(conn):
    project, owner = new_project(conn)
    for order in ("timeline", "ingestion"):
        assert list_page(conn, project, owner, order) == {"events": [], "nextCursor": None}
        assert list_page(conn, project, owner, order, None, 1) == {"events": [], "nextCursor": None}


def test_json_null_cursor_is_the_first_page(conn, six):
    project, owner, _ = six
    for order in ("timeline", "ingestion"):
        first = list_page(conn, project, owner, order, None, 2)
        assert conn.execute("SELECT runhub.list_events(%s, %s, %s, 'null'::jsonb, 2)",
                            (project, owner, order)).fetchone()[0] == first


def test_cursor_instant_in_another_offset_is_the_same_cursor(conn, six):
    project, owner, ids = six
    page1 = list_page(conn, project, owner, "timeline", None, 2)
    cursor = dict(page1["nextCursor"])
    at = datetime.strptime(cursor["occurredAt"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    shifted = {"occurredAt": at.astimezone(timezone(timedelta(hours=5, minutes=45))).isoformat(), "id": cursor["id"]}
    assert list_page(conn, project, owner, "timeline", shifted, 2) == list_page(conn, project, owner, "timeline", cursor, 2)


def test_paging_is_the_same_whatever_the_session_timezone(conn, db_url, six):
    project, owner, _ = six
    ingest(conn, project, event(at=iso(_minute(3)), key="tie"))  # a tie straddling a page boundary
    options = "-c TimeZone=America/St_Johns -c DateStyle=SQL,DMY"
    with psycopg.connect(db_url, autocommit=True, options=options) as odd:
        for order in ("timeline", "ingestion"):
            assert page_through(odd, project, owner, order, lambda i: 2) == page_through(conn, project, owner, order, lambda i: 2)


def test_other_projects_events_are_not_listed(conn, six):
    project, owner, ids = six
    other, _ = new_project(conn)
    ingest(conn, other, event(at=iso(_minute(2)), key="other"))
    for order in ("timeline", "ingestion"):
        listed = [e["id"] for p in page_through(conn, project, owner, order, lambda i: 4) for e in p["events"]]
        assert sorted(listed) == sorted(ids.values())


# -- bad cursors, orders, limits and projects ------------------------------------------------------

GOOD_AT = "2026-11-01T12:03:00.000000Z"
# More than a day ahead of the server: its id names it, so that every collection of the tests
# (each pytest-xdist worker's) has the same ids.
TWO_DAYS_AHEAD = {"id": 1, "occurredAt": iso(datetime.now(UTC) + timedelta(days=2))}
BAD_CURSORS = [
    ("timeline", []), ("timeline", [1, GOOD_AT]), ("timeline", "abc"), ("timeline", 5), ("timeline", True),
    ("timeline", {}), ("timeline", {"id": 1}), ("timeline", {"occurredAt": GOOD_AT}),
    ("timeline", {"id": 1, "occurredAt": GOOD_AT, "extra": 1}),
    ("timeline", {"ID": 1, "occurredAt": GOOD_AT}),
    ("timeline", {"id": "1", "occurredAt": GOOD_AT}),
    ("timeline", {"id": -1, "occurredAt": GOOD_AT}),
    ("timeline", {"id": 1.5, "occurredAt": GOOD_AT}),
    ("timeline", {"id": 1e30, "occurredAt": GOOD_AT}),
    ("timeline", {"id": 10 ** 20, "occurredAt": GOOD_AT}),
    ("timeline", {"id": None, "occurredAt": GOOD_AT}),
    ("timeline", {"id": True, "occurredAt": GOOD_AT}),
    ("timeline", {"id": [1], "occurredAt": GOOD_AT}),
    ("timeline", {"id": 1, "occurredAt": None}),
    ("timeline", {"id": 1, "occurredAt": 1762000000}),
    ("timeline", {"id": 1, "occurredAt": ""}),
    ("timeline", {"id": 1, "occurredAt": "garbage"}),
    ("timeline", {"id": 1, "occurredAt": "2026-11-01T12:03:00"}),          # no offset
    ("timeline", {"id": 1, "occurredAt": "2026-13-45T12:03:00Z"}),
    ("timeline", {"id": 1, "occurredAt": "2026-02-30T12:03:00Z"}),
    ("timeline", {"id": 1, "occurredAt": "2026-11-01T12:03:00.1234567Z"}),
    ("timeline", {"id": 1, "occurredAt": "infinity"}),
    ("timeline", {"id": 1, "occurredAt": "1999-12-31T23:59:59.999999Z"}),  # before 2000
    ("timeline", {"id": 1, "occurredAt": "2000-01-01T00:59:59+01:00"}),     # the same, in another offset
    ("timeline", {"id": 1, "occurredAt": "0001-01-01T00:00:00Z"}),
    ("timeline", {"id": 1, "occurredAt": "9999-12-31T23:59:59Z"}),
    ("timeline", TWO_DAYS_AHEAD),
    ("timeline", {"id": 1, "occurredAt": [GOOD_AT]}),
    ("ingestion", []), ("ingestion", "abc"), ("ingestion", 5), ("ingestion", {}),
    ("ingestion", {"id": 1, "occurredAt": GOOD_AT}),                         # a timeline cursor
    ("ingestion", {"occurredAt": GOOD_AT}),
    ("ingestion", {"id": "1"}), ("ingestion", {"id": -5}), ("ingestion", {"id": 1.5}), ("ingestion", {"id": True}),
    ("ingestion", {"id": None}), ("ingestion", {"id": 10 ** 20}), ("ingestion", {"id": {"id": 1}}),
]


@pytest.mark.parametrize(("order", "cursor"), BAD_CURSORS,
                         ids=["timeline-two days ahead" if c is TWO_DAYS_AHEAD else f"{o}-{c!r}"[:60] for o, c in BAD_CURSORS])
def test_bad_cursor_is_refused(conn, six, order, cursor):
    project, owner, _ = six
    with pytest.raises(psycopg.Error) as excinfo:
        list_page(conn, project, owner, order, cursor, 3)
    detail = assert_refused(excinfo, "PT400", "events.invalidCursor")
    assert detail["sort"] == order and detail["reason"]


@pytest.mark.parametrize("order", [None, "", "Timeline", "TIMELINE", "newest", "occurredAt", "id"])
def test_bad_order_is_refused(conn, six, order):
    project, owner, _ = six
    with pytest.raises(psycopg.Error) as excinfo:
        list_page(conn, project, owner, order, None, 3)
    assert assert_refused(excinfo, "PT400", "events.invalidSort") == {"sort": order}


@pytest.mark.parametrize("limit", [None, 0, -1, 501, 2 ** 31 - 1])
def test_bad_limit_is_refused(conn, six, limit):
    project, owner, _ = six
    with pytest.raises(psycopg.Error) as excinfo:
        list_page(conn, project, owner, "timeline", None, limit)
    assert assert_refused(excinfo, "PT400", "events.invalidPageSize") == {"pageSize": limit, "max": 500}


def test_limit_500_is_accepted(conn, six):
    project, owner, ids = six
    assert len(list_page(conn, project, owner, "timeline", None, 500)["events"]) == len(ids)


def test_cursor_instants_at_the_bounds_are_pages(conn, six):
    project, owner, ids = six
    oldest = list_page(conn, project, owner, "timeline", {"id": 1, "occurredAt": "2000-01-01T00:00:00Z"}, 3)
    assert oldest == {"events": [], "nextCursor": None}
    ahead = iso(datetime.now(UTC) + timedelta(hours=23))
    assert [e["id"] for e in list_page(conn, project, owner, "timeline", {"id": 1, "occurredAt": ahead}, 6)["events"]] \
        == [ids[m] for m in range(5, -1, -1)]


# -- the actor: any member lists; a non-member learns nothing ----------------------------------------

@pytest.mark.parametrize("role", ["member", "admin", "owner"])
def test_any_member_lists_what_the_owner_lists(conn, six, role):
    project, owner, _ = six
    user = uuid.uuid4()
    conn.execute("SELECT runhub.add_member(%s, %s, %s, %s)", (project, owner, user, role))
    for order in ("timeline", "ingestion"):
        assert page_through(conn, project, user, order, lambda i: 4) == page_through(conn, project, owner, order, lambda i: 4)


@pytest.mark.parametrize("who", ["stranger", "other project's owner", "removed member"])
def test_a_non_member_is_not_found(conn, six, who):
    project, owner, _ = six
    if who == "stranger":
        actor = uuid.uuid4()
    elif who == "other project's owner":
        _, actor = new_project(conn)
    else:
        actor = uuid.uuid4()
        conn.execute("SELECT runhub.add_member(%s, %s, %s, 'member')", (project, owner, actor))
        conn.execute("DELETE FROM runhub.project_members WHERE project_id = %s AND user_id = %s", (project, actor))
    for order, cursor, limit in [("timeline", None, 50), ("newest", [], 0)]:  # the actor is checked first
        with pytest.raises(psycopg.Error) as excinfo:
            list_page(conn, project, actor, order, cursor, limit)
        assert assert_refused(excinfo, "PT404", "projects.notFound") == {"projectId": str(project)}


# -- property: any JSON as a cursor is a page or an invalidCursor refusal ----------------------------

_text = st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=30)
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                     | _text, lambda c: st.lists(c, max_size=3) | st.dictionaries(_text, c, max_size=3),
                     max_leaves=8)
_instant_shaped = st.from_regex(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}(:?\d{2})?)", fullmatch=True)
_cursor_shaped = st.fixed_dictionaries(
    {"id": st.integers(min_value=-5, max_value=10 ** 19) | _json, "occurredAt": _instant_shaped | _json})


@PROPERTY
@given(order=st.sampled_from(["timeline", "ingestion"]),
       cursor=_json | _cursor_shaped | _cursor_shaped.map(lambda c: {"id": c["id"]}))
def test_any_cursor_is_a_page_or_an_invalid_cursor(conn, six, order, cursor):
    project, owner, ids = six
    try:
        page = list_page(conn, project, owner, order, cursor, 3)
    except psycopg.Error as err:
        assert err.sqlstate == "PT400" and err.diag.message_primary == "events.invalidCursor", \
            (err.sqlstate, str(err), cursor)
        return
    assert set(page) == {"events", "nextCursor"}
    assert len(page["events"]) <= 3
    assert all(e["id"] in ids.values() for e in page["events"])
