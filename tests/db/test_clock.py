"""The DST-safe clock of daily digests (sql/12_clock.sql: next_digest_at, local_day_range), against
Python's zoneinfo.

What is expected is computed by the reference model in tests/helpers/clock.py, independently of
PostgreSQL; tests/unit/test_clock_model.py checks that model against a minute-by-minute scan of UTC
instants around every change and against zoneinfo's fold semantics.

Here, per zone, two years of days (2025 and 2026: both changes of every hemisphere, twice) are
computed in PostgreSQL in one statement (every day's range, and next_digest_at for every hour from
the day's local midnight) and iterated in another (next_digest_at fed its own result, every hour,
across the span), and compared with the model day by day, hour by hour.
"""
from __future__ import annotations

import datetime as dt
from collections import Counter
from zoneinfo import ZoneInfo

import psycopg
import pytest

from helpers.clock import (CASES, DAY, DST_CASES, HOUR, MICROSECOND, SECOND, UTC, day_start, digest_instants, local,
                           next_digest)
from helpers.db import assert_refused


# -- the database against the model --------------------------------------------------------------

def mismatches(label: str, got: list, expected: list, limit: int = 6) -> list[str]:
    bad = [f"{label} [{i}]: got {g}, expected {e}" for i, (g, e) in enumerate(zip(got, expected)) if g != e]
    if len(got) != len(expected):
        bad.append(f"{label}: {len(got)} values, expected {len(expected)}")
    return bad[:limit]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_clock_matches_zoneinfo(conn, case):
    """Every day of the span: local_day_range is [first instant of the day, first of the next),
    23/24/25 hours long (Lord Howe 23.5/24.5) as many times as the zone's rules say; next_digest_at
    from the day's local midnight, and from just before it, for every hour; then next_digest_at
    iterated from the span's first midnight, every hour: exactly one instant per local day, none
    skipped, each the day's hour:00 or the end of the gap it falls in."""
    zone = ZoneInfo(case.zone)
    days = case.days
    starts = [day_start(case, d) for d in days]
    rows = conn.execute(
        """SELECT u.day, runhub.local_day_range(u.day, %(tz)s),
                  array(SELECT runhub.next_digest_at(%(tz)s, h, u.start) FROM generate_series(0, 23) h ORDER BY h),
                  array(SELECT runhub.next_digest_at(%(tz)s, h, u.start - interval '1 microsecond')
                          FROM generate_series(0, 23) h ORDER BY h)
             FROM unnest(%(days)s::date[], %(starts)s::timestamptz[]) AS u(day, start)
            ORDER BY u.day""", {"tz": case.zone, "days": days, "starts": starts}).fetchall()
    assert [r[0] for r in rows] == days

    problems, lengths = [], Counter()
    for (day, got, from_midnight, from_before), start in zip(rows, starts):
        end = day_start(case, day + DAY)
        if start == end:
            lengths[0] += 1
            assert local(zone, start).date() > day  # no instant of the zone has this date
            problems += [] if got.isempty else [f"{day}: {got}, expected an empty range"]
        else:
            # start is the first instant whose local date is day
            assert local(zone, start).date() == day and local(zone, start - MICROSECOND).date() < day
            lengths[(end - start) / HOUR] += 1
            if got.isempty or (got.lower, got.upper, got.lower_inc, got.upper_inc) != (start, end, True, False):
                problems.append(f"{day}: {got}, expected [{start}, {end})")
        problems += mismatches(f"{day} from midnight", from_midnight,
                               [next_digest(case, h, start) for h in range(24)], 2)
        problems += mismatches(f"{day} from just before midnight", from_before,
                               [next_digest(case, h, start - MICROSECOND) for h in range(24)], 2)
    assert not problems, "\n".join(problems[:12])
    assert lengths == Counter({24: len(days) - sum(n for _, n in case.lengths), **dict(case.lengths)}), lengths

    begin, until = starts[0] - MICROSECOND, day_start(case, case.last + DAY)
    chains = dict(conn.execute(
        """WITH RECURSIVE chain(h, at) AS (
               SELECT h, runhub.next_digest_at(%(tz)s, h, %(begin)s) FROM generate_series(0, 23) h
               UNION ALL
               SELECT h, runhub.next_digest_at(%(tz)s, h, at) FROM chain WHERE at < %(until)s)
           SELECT h, array_agg(at ORDER BY at) FROM chain GROUP BY h ORDER BY h""",
        {"tz": case.zone, "begin": begin, "until": until}).fetchall())
    existing = [d for d, s in zip(days, starts) if day_start(case, d + DAY) != s]
    for hour, chain in chains.items():
        expected = [t for t in digest_instants(case, hour) if t > begin]
        expected = expected[:next(i for i, t in enumerate(expected) if t >= until) + 1]
        problems += mismatches(f"{hour}:00 iterated", chain, expected)
        shown = [local(zone, t) for t in chain[:-1]]  # the last one is past the span
        # one instant per local day of the span, in order, none skipped (a skipped day has no date)
        if [w.date() for w in shown] != existing:
            problems.append(f"{hour}:00 iterated: local days {Counter(w.date() for w in shown).most_common(2)}"
                            f" ... {len(shown)} instants for {len(existing)} days")
        for at, w in zip(chain, shown):
            wanted = dt.datetime.combine(w.date(), dt.time(hour))
            # hour:00 itself, or (it fell in a gap) the first instant after the gap
            if w != wanted and not (w > wanted and local(zone, at - SECOND) < wanted):
                problems.append(f"{hour}:00 iterated: {at} shows {w}")
    assert sorted(chains) == list(range(24))
    assert not problems, "\n".join(problems[:12])


def test_late_and_early_events_fall_in_their_local_day(conn):
    """On each day whose length changes, an event at 23:30 local (both of them where 23:30 happens
    twice) is in that day's range and not the next's; one at 00:30 the next day is in the next
    day's and not that day's."""
    probes = []  # (zone, day it belongs to, instant)
    for case in DST_CASES:
        zone = ZoneInfo(case.zone)
        changed = [d for d in case.days if day_start(case, d + DAY) - day_start(case, d) != DAY]
        assert len(changed) == 4
        for day in changed:
            for wall, belongs in ((dt.datetime.combine(day, dt.time(23, 30)), day),
                                  (dt.datetime.combine(day + DAY, dt.time(0, 30)), day + DAY)):
                instants = {wall.replace(tzinfo=zone, fold=f).astimezone(UTC) for f in (0, 1)}
                instants = [t for t in instants if local(zone, t) == wall]
                assert instants, f"{wall} does not exist in {case.zone}"
                probes += [(case.zone, belongs, t) for t in instants]
    rows = conn.execute(
        """SELECT p.zone, p.day, p.at, p.at <@ runhub.local_day_range(p.day, p.zone),
                  p.at <@ runhub.local_day_range(p.day - 1, p.zone), p.at <@ runhub.local_day_range(p.day + 1, p.zone)
             FROM unnest(%s::text[], %s::date[], %s::timestamptz[]) AS p(zone, day, at)""",
        ([p[0] for p in probes], [p[1] for p in probes], [p[2] for p in probes])).fetchall()
    wrong = [r[:3] for r in rows if r[3:] != (True, False, False)]
    assert not wrong, wrong
    twice = Counter((z, d) for z, d, _ in probes)
    assert twice[("America/Santiago", dt.date(2026, 4, 4))] == 2  # 23:30 on the 25-hour Saturday, both


# -- the cases spelled out, and what PostgreSQL does by itself ------------------------------------

EXAMPLES = [  # (zone, hour, after, expected)
    ("America/New_York", 2, "2026-03-08T00:00-05:00", "2026-03-08T03:00-04:00"),  # 02:00 is in the gap
    ("America/New_York", 1, "2026-11-01T00:00-04:00", "2026-11-01T01:00-04:00"),  # twice: the first (EDT)
    ("America/New_York", 1, "2026-11-01T01:00-04:00", "2026-11-02T01:00-05:00"),  # never the second (EST)
    ("Pacific/Chatham", 3, "2026-09-27T00:00+12:45", "2026-09-27T03:45+13:45"),   # in the 02:45-03:45 gap
    ("Australia/Lord_Howe", 2, "2026-10-04T00:00+10:30", "2026-10-04T02:30+11:00"),  # a 30-minute gap
    ("Australia/Lord_Howe", 1, "2026-04-05T00:00+11:00", "2026-04-05T01:00+11:00"),
    ("America/Santiago", 0, "2026-09-05T12:00-04:00", "2026-09-06T01:00-03:00"),  # midnight is in the gap
    ("America/Santiago", 23, "2026-04-04T12:00-03:00", "2026-04-04T23:00-03:00"),  # 23:00 twice: the first
    ("America/Santiago", 23, "2026-04-04T23:00-03:00", "2026-04-05T23:00-04:00"),
    ("Pacific/Apia", 9, "2011-12-29T10:00-10:00", "2011-12-31T09:00+14:00"),  # 2011-12-30 never happened
    ("America/Goose_Bay", 1, "1988-04-03T00:00-04:00", "1988-04-03T02:01-02:00"),  # a two-hour gap at 00:01
    ("UTC", 0, "2026-12-31T23:59:59.999999Z", "2027-01-01T00:00Z"),
]
DAY_EXAMPLES = [  # (zone, day, range)
    ("America/Santiago", "2026-09-06", "[2026-09-06 04:00Z, 2026-09-07 03:00Z)"),  # starts at 01:00 -03
    ("America/Santiago", "2026-04-04", "[2026-04-04 03:00Z, 2026-04-05 04:00Z)"),  # 25 hours
    ("Europe/Berlin", "2026-03-29", "[2026-03-28 23:00Z, 2026-03-29 22:00Z)"),
    ("Pacific/Apia", "2011-12-30", "empty"),
    ("Pacific/Apia", "2011-12-31", "[2011-12-30 10:00Z, 2011-12-31 10:00Z)"),
    ("America/Goose_Bay", "1988-10-29", "[1988-10-29 02:00Z, 1988-10-30 02:00Z)"),  # the repeated 22:01-24:00
    ("America/Goose_Bay", "1988-10-30", "[1988-10-30 02:00Z, 1988-10-31 04:00Z)"),  # count in the next day
]


def test_examples(conn):
    rows = conn.execute(
        """SELECT runhub.next_digest_at(e.zone, e.hour, e.after) = e.expected, runhub.next_digest_at(e.zone, e.hour, e.after)
             FROM unnest(%s::text[], %s::int[], %s::timestamptz[], %s::timestamptz[]) AS e(zone, hour, after, expected)""",
        [list(c) for c in zip(*EXAMPLES)]).fetchall()
    assert [(e, r[1]) for e, r in zip(EXAMPLES, rows) if not r[0]] == []
    rows = conn.execute(
        """SELECT runhub.local_day_range(e.day, e.zone) = e.expected, runhub.local_day_range(e.day, e.zone)
             FROM unnest(%s::text[], %s::date[], %s::tstzrange[]) AS e(zone, day, expected)""",
        [list(c) for c in zip(*DAY_EXAMPLES)]).fetchall()
    assert [(e, r[1]) for e, r in zip(DAY_EXAMPLES, rows) if not r[0]] == []


def test_what_postgresql_does_by_itself(conn):
    """Why the functions do not use `wall AT TIME ZONE zone` as it is: in a gap PostgreSQL reads the
    wall time with the offset before the gap (02:30 becomes 03:30 EDT, not 03:00; Chatham's 03:00
    becomes 04:00 +13:45, not 03:45), and of two instants it picks the later (01:00 EST)."""
    got = conn.execute(
        """SELECT '2026-03-08 02:30'::timestamp AT TIME ZONE 'America/New_York',
                  '2026-09-27 03:00'::timestamp AT TIME ZONE 'Pacific/Chatham',
                  '2026-11-01 01:00'::timestamp AT TIME ZONE 'America/New_York',
                  runhub.next_digest_at('America/New_York', 1, '2026-11-01 00:00-04')""").fetchone()
    assert got == (dt.datetime(2026, 3, 8, 7, 30, tzinfo=UTC), dt.datetime(2026, 9, 26, 14, 15, tzinfo=UTC),
                   dt.datetime(2026, 11, 1, 6, 0, tzinfo=UTC), dt.datetime(2026, 11, 1, 5, 0, tzinfo=UTC))


# -- refusals -----------------------------------------------------------------------------------

NEXT = "SELECT runhub.next_digest_at(%s, %s, %s::timestamptz)"
RANGE = "SELECT runhub.local_day_range(%s::date, %s)"
REFUSALS = [  # (sql, params, key, field)
    (NEXT, (None, 9, "2026-03-29T00:00Z"), "projects.invalidTimezone", None),
    (NEXT, ("Mars/Olympus", 9, "2026-03-29T00:00Z"), "projects.invalidTimezone", None),
    (NEXT, ("EST", 9, "2026-03-29T00:00Z"), "projects.invalidTimezone", None),
    (NEXT, ("posix/Europe/Paris", 9, "2026-03-29T00:00Z"), "projects.invalidTimezone", None),
    (NEXT, ("europe/paris", 9, "2026-03-29T00:00Z"), "projects.invalidTimezone", None),
    (NEXT, ("Europe/Paris", None, "2026-03-29T00:00Z"), "common.invalidInput", "hour"),
    (NEXT, ("Europe/Paris", -1, "2026-03-29T00:00Z"), "common.invalidInput", "hour"),
    (NEXT, ("Europe/Paris", 24, "2026-03-29T00:00Z"), "common.invalidInput", "hour"),
    (NEXT, ("Europe/Paris", 9, None), "common.invalidInput", "after"),
    (NEXT, ("Europe/Paris", 9, "infinity"), "common.invalidInput", "after"),
    (NEXT, ("Europe/Paris", 9, "-infinity"), "common.invalidInput", "after"),
    (NEXT, ("Europe/Paris", 9, "294276-12-31 23:59:59+00"), "common.invalidInput", "after"),
    (NEXT, ("Europe/Paris", 9, "4714-11-24 00:00:00+00 BC"), "common.invalidInput", "after"),
    (RANGE, (None, "Europe/Paris"), "common.invalidInput", "day"),
    (RANGE, ("infinity", "Europe/Paris"), "common.invalidInput", "day"),
    (RANGE, ("-infinity", "Europe/Paris"), "common.invalidInput", "day"),
    (RANGE, ("5874897-12-31", "Europe/Paris"), "common.invalidInput", "day"),
    (RANGE, ("4714-11-24 BC", "Europe/Paris"), "common.invalidInput", "day"),
    (RANGE, ("2026-03-29", None), "projects.invalidTimezone", None),
    (RANGE, ("2026-03-29", "localtime"), "projects.invalidTimezone", None),
    (RANGE, ("2026-03-29", "+05:00"), "projects.invalidTimezone", None),
]


def test_bad_input_is_refused(conn):
    for sql, params, key, field in REFUSALS:
        with pytest.raises(psycopg.Error) as excinfo:
            conn.execute(sql, params)
        detail = assert_refused(excinfo, "PT400", key)
        if field:
            assert detail["field"] == field, (sql, params, detail)
        else:
            assert detail == {"timezone": params[0] if sql is NEXT else params[1]}, (sql, params, detail)
    # the bounds themselves are accepted (checked in SQL: Python's datetime stops at 9999 and at 1)
    assert conn.execute(
        """SELECT runhub.next_digest_at('Pacific/Kiritimati', 23, '9999-12-31 23:59:59.999999+00') > '9999-12-31 23:59:59.999999+00',
                  runhub.next_digest_at('Asia/Manila', 0, '0001-01-01 00:00:00+00') > '0001-01-01 00:00:00+00',
                  upper(r1) - lower(r1), upper(r2) - lower(r2)
             FROM runhub.local_day_range('9999-12-31', 'Pacific/Kiritimati') r1,
                  runhub.local_day_range('0001-01-01', 'America/Metlakatla') r2""").fetchone() == (
        True, True, DAY, DAY)
