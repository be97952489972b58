"""The reference model of the DST-safe digest clock (sql/12_clock.sql), from Python's zoneinfo alone,
independently of PostgreSQL: the zones and spans tested (CASES) and what the clock should say there.

A zone's UTC offset is read from zoneinfo for UTC instants only (a UTC instant has exactly one local
time, so no fold question arises): every hour, then minute by minute and second by second within an
hour where it changed. That gives the offset's pieces over the span tested, and from them
`first_showing(W)`, the first instant at which the local clock shows the wall-clock time W or later:
W itself, the first of two in a fall-back overlap, the end of the gap in a spring-forward one.
tests/unit/test_clock_model.py checks the model; tests/db/test_clock.py holds the database to it.
"""
from __future__ import annotations

import bisect
import datetime as dt
import functools
from dataclasses import dataclass
from zoneinfo import ZoneInfo

UTC = dt.timezone.utc
SECOND, MINUTE, HOUR, DAY = (dt.timedelta(seconds=1), dt.timedelta(minutes=1), dt.timedelta(hours=1),
                             dt.timedelta(days=1))
MICROSECOND = dt.timedelta(microseconds=1)


@dataclass(frozen=True)
class Case:
    zone: str
    first: dt.date
    last: dt.date
    lengths: tuple  # (hours, how many days) of every day not 24 hours long; 0 hours: an empty range

    @property
    def days(self) -> list[dt.date]:
        return [self.first + i * DAY for i in range((self.last - self.first).days + 1)]

    def __str__(self):
        years = {self.first.year, self.last.year}
        return f"{self.zone}-{'-'.join(map(str, sorted(years)))}"


TWO_SHIFTS = ((23, 2), (25, 2))  # per two years: a 23-hour spring day and a 25-hour autumn day each year
CASES = [
    Case("America/New_York", dt.date(2025, 1, 1), dt.date(2026, 12, 31), TWO_SHIFTS),
    Case("Europe/Berlin", dt.date(2025, 1, 1), dt.date(2026, 12, 31), TWO_SHIFTS),
    Case("Australia/Sydney", dt.date(2025, 1, 1), dt.date(2026, 12, 31), TWO_SHIFTS),
    Case("Asia/Kolkata", dt.date(2025, 1, 1), dt.date(2026, 12, 31), ()),
    Case("Pacific/Chatham", dt.date(2025, 1, 1), dt.date(2026, 12, 31), TWO_SHIFTS),  # 02:45 -> 03:45
    Case("America/Santiago", dt.date(2025, 1, 1), dt.date(2026, 12, 31), TWO_SHIFTS),  # at midnight
    Case("Australia/Lord_Howe", dt.date(2025, 1, 1), dt.date(2026, 12, 31), ((23.5, 2), (24.5, 2))),
    Case("UTC", dt.date(2025, 1, 1), dt.date(2026, 12, 31), ()),
    # Beyond the brief's zones, history's oddities: a day skipped altogether (2011-12-30 went from
    # -10 to +14), and double daylight time set back two hours across midnight (00:01 to 22:01).
    Case("Pacific/Apia", dt.date(2011, 12, 1), dt.date(2012, 1, 31), ((0, 1),)),
    Case("America/Goose_Bay", dt.date(1988, 3, 1), dt.date(1988, 11, 30), ((22, 1), (26, 1))),
]
DST_CASES = [c for c in CASES if c.lengths and c.first.year >= 2025]


# -- the model, from zoneinfo ---------------------------------------------------------------------

def local(zone: ZoneInfo, at: dt.datetime) -> dt.datetime:
    """The wall-clock time of instant at in zone (naive)."""
    return at.astimezone(zone).replace(tzinfo=None)


def offset(zone: ZoneInfo, at: dt.datetime) -> dt.timedelta:
    return at.astimezone(zone).utcoffset()


@functools.cache
def pieces(case: Case) -> tuple:
    """((since, offset), ...): the zone's UTC offset from a week before the case's span to a week
    after it, each change found to the second by reading the offset of UTC instants."""
    zone = ZoneInfo(case.zone)
    at = dt.datetime.combine(case.first - 7 * DAY, dt.time(), UTC)
    end = dt.datetime.combine(case.last + 8 * DAY, dt.time(), UTC)
    found = [(at, offset(zone, at))]
    while at < end:
        if offset(zone, at + HOUR) != found[-1][1]:
            minute = next(m for m in (at + i * MINUTE for i in range(1, 61)) if offset(zone, m) != found[-1][1])
            second = next(s for s in (minute - MINUTE + i * SECOND for i in range(1, 61))
                          if offset(zone, s) != found[-1][1])
            found.append((second, offset(zone, second)))
        at += HOUR
    return tuple(found)


def first_showing(case: Case, wall: dt.datetime) -> dt.datetime:
    """min{t : local(t) >= wall}: the first instant at which the clock shows wall or later."""
    ps = pieces(case)
    assert (ps[0][0] + ps[0][1]).replace(tzinfo=None) < wall, "wall is before the model's span"
    for (since, off), (until, _) in zip(ps, ps[1:] + ((None, None),)):
        # Over [since, until) the clock runs from since + off to until + off.
        if until is None or (until + off).replace(tzinfo=None) > wall:
            return max(since, (wall - off).replace(tzinfo=UTC))
    raise AssertionError("unreachable")


def day_start(case: Case, day: dt.date) -> dt.datetime:
    return first_showing(case, dt.datetime.combine(day, dt.time()))


@functools.cache
def digest_instants(case: Case, hour: int) -> list[dt.datetime]:
    """Every day's hour:00 (the first instant showing it or later), for the days around the span
    that have it on that day (not a day the zone skipped), in time order."""
    zone = ZoneInfo(case.zone)
    out = []
    for i in range(-3, (case.last - case.first).days + 4):
        day = case.first + i * DAY
        at = first_showing(case, dt.datetime.combine(day, dt.time(hour)))
        if local(zone, at).date() == day:
            out.append(at)
    assert out == sorted(set(out))
    return out


def next_digest(case: Case, hour: int, after: dt.datetime) -> dt.datetime:
    """The first of the digest instants strictly after after."""
    instants = digest_instants(case, hour)
    i = bisect.bisect_right(instants, after)
    assert 0 < i < len(instants), "after is outside the model's span"
    return instants[i]
