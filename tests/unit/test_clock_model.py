"""The reference model of the digest clock (tests/helpers/clock.py), checked before anything is compared
with the database (tests/db/test_clock.py): first_showing against a scan of UTC instants and against
zoneinfo's fold semantics."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from helpers.clock import CASES, DAY, HOUR, MINUTE, SECOND, UTC, first_showing, local, pieces


def test_the_reference_model():
    """Checks the model (no database): first_showing against a minute-by-minute scan of UTC instants
    from three days before to three days after every change, for every hour of the days around it; and
    against zoneinfo's fold semantics on every day: a wall time that exists (fold=0 comes back to it)
    is first shown at its fold=0 instant, the earlier of two; one that does not (a gap) at the change
    that skips it."""
    for case in CASES:
        zone = ZoneInfo(case.zone)
        changes = [since for since, _ in pieces(case)[1:]]
        assert len(changes) == sum(n for _, n in case.lengths), (case.zone, changes)
        for change in changes:
            assert change.second == 0  # minute steps then find every change exactly
            instants = [change - 3 * DAY + i * MINUTE for i in range(6 * 24 * 60)]
            walls = [local(zone, t) for t in instants]
            for day in {local(zone, change - SECOND).date() + i * DAY for i in (-1, 0, 1)}:
                for hour in range(25):
                    wall = dt.datetime.combine(day, dt.time()) + hour * HOUR
                    assert walls[0] < wall
                    scan = next(t for t, w in zip(instants, walls) if w >= wall)
                    assert first_showing(case, wall) == scan, (case.zone, wall)
        for day in case.days:
            for hour in range(24):
                wall = dt.datetime.combine(day, dt.time(hour))
                got = first_showing(case, wall)
                at = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
                if local(zone, at) == wall:
                    assert got == at, (case.zone, wall)
                else:  # in a gap: the change ends it
                    assert got in changes and local(zone, got - SECOND) < wall < local(zone, got), (case.zone, wall)
