"""What the sender does for the database at each wake-up besides mail: runs and due digests."""
from __future__ import annotations

import time
from collections.abc import Callable

from .. import logs
from ..db.api import Api
from ..metrics import SenderMetrics

log = logs.get("sender")
DIGEST_CATCH_UP_S = 60.0  # how often the sender runs the digest job as a catch-up
RUNS_PER_CALL = 10


class CatchUp:
    """Executes the runs that are due, and at most once a DIGEST_CATCH_UP_S catches up on due
    digests (pg_cron's hourly job is the main way)."""

    def __init__(self, metrics: SenderMetrics, clock: Callable[[], float] = time.monotonic):
        self._metrics = metrics
        self._clock = clock
        self._digests_after = 0.0  # clock time of the next digest catch-up

    def run(self, api: Api) -> None:
        with self._metrics.timed("process_runs"):
            done = api.process_runs(RUNS_PER_CALL)
        if done:
            log.info("runs_processed", runs=done)
        self._run_due_digests(api)

    def _run_due_digests(self, api: Api) -> None:
        if self._clock() < self._digests_after:
            return
        self._digests_after = self._clock() + DIGEST_CATCH_UP_S
        queued = api.run_due_digests()
        if queued:
            log.info("digests_queued", digests=queued)
