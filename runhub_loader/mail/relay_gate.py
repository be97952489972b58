"""The relay gate: a relay that cannot be reached is a state of the sender, not a failure of its messages."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import psycopg

from .. import logs
from ..db.api import Api
from ..metrics import SenderMetrics
from .local_queue import LocalQueue
from .smtp import RelayUnavailable, SmtpConnection

log = logs.get("sender")


class RelayGate:
    """Open while the relay answers. The first worker to find it down closes the gate: nothing is
    claimed or sent meanwhile, what was claimed goes back to the database uncharged, and one thread
    probes the relay with backoff until it answers, then reopens the gate and wakes the loop. Each
    way is said once, at error level."""

    def __init__(self, worker_id: str, local_queue: LocalQueue, open_api: Callable[[], AbstractContextManager[Api]],
                 new_probe: Callable[[], SmtpConnection], stopping: threading.Event, wake: Callable[[], None],
                 metrics: SenderMetrics, probe_max_s: float, first_probe_s: float = 1.0):
        self.worker_id = worker_id
        self._local_queue = local_queue
        self._open_api = open_api
        self._new_probe = new_probe
        self._stopping = stopping
        self._wake = wake
        self._metrics = metrics
        self._probe_max_s = probe_max_s
        self._first_probe_s = first_probe_s
        self._lock = threading.Lock()
        self._open = threading.Event()
        self._open.set()
        self._closed_at: float | None = None

    def is_open(self) -> bool:
        return self._open.is_set()

    def wait_open(self, timeout: float) -> None:
        self._open.wait(timeout)

    def message_failed(self, relay: str, message: dict, exc: RelayUnavailable) -> None:
        """A worker could not hand `message` to the relay: the message goes back without its attempt;
        the first to see the relay down says so, closes the gate, gives back the local queue and
        starts the probe."""
        with self._lock:
            first = self._open.is_set()
            if first:
                self._open.clear()
                self._metrics.relay_up.set(0)
                self._closed_at = time.monotonic()
        self._metrics.deferred(message["template"])
        self._call("defer_messages",
                   lambda api: api.defer_messages(self.worker_id, [message["id"]], f"relay unavailable: {exc}"))
        self._local_queue.done([message["id"]])
        if first:
            log.error("relay_unreachable", relay=relay, error=str(exc))
            self._call("report_relay", lambda api: api.report_relay(self.worker_id, relay, str(exc)))
            self._local_queue.release()
            logs.thread(self._probe, "relay-probe").start()

    def _probe(self) -> None:
        """Probe the relay with backoff until it answers (or the sender stops), then reopen."""
        probe = self._new_probe()
        wait = self._first_probe_s
        while not self._stopping.wait(wait):
            try:
                probe.probe()
            except RelayUnavailable:
                wait = min(wait * 2, self._probe_max_s)
                continue
            down_for = time.monotonic() - (self._closed_at or time.monotonic())
            log.error("relay_reachable", relay=probe.relay, down_for_s=round(down_for, 1))
            self._call("report_relay", lambda api: api.report_relay(self.worker_id, probe.relay, None))
            self._open.set()
            self._metrics.relay_up.set(1)
            self._wake()  # claim again now
            return

    def _call(self, name: str, call: Callable[[Api], object]) -> None:
        """`call(api)` on a connection of its own: if the database is away too, the message's lease
        lapses and it comes back by itself."""
        try:
            with self._open_api() as api:
                call(api)
        except psycopg.Error as exc:
            log.warning("database_unavailable", error=str(exc).strip(), call=f"runhub.{name}")
