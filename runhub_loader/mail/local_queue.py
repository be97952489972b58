"""The sender's local queue: the messages it holds under lease, claimed ahead of its workers."""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

import psycopg

from .. import logs
from ..db.api import Api
from ..metrics import SenderMetrics

log = logs.get("sender")
TAKE_WAIT_S = 0.5  # how long a worker waits for a message before it looks at the stop and the relay again


class LocalQueue:
    """Claims messages a batch ahead of the workers, hands them out one at a time, and on stop gives
    back those no worker started. A message is held from its claim until a worker is done with it
    (recorded, deferred or lost): the heartbeat renews the leases of the held ones."""

    def __init__(self, worker_id: str, batch: int, lease_seconds: int,
                 open_api: Callable[[], AbstractContextManager[Api]], metrics: SenderMetrics):
        self.worker_id = worker_id
        self.batch = batch
        self.lease_seconds = lease_seconds
        self._open_api = open_api
        self._metrics = metrics
        self._waiting: queue.Queue[dict] = queue.Queue()
        self._held: set[int] = set()
        self._lock = threading.Lock()
        self._more_due = False  # the last claim was full: more may be due right now

    def size(self) -> int:
        """Messages claimed and waiting for a worker."""
        return self._waiting.qsize()

    def claim(self, api: Api) -> None:
        """Top the queue up to a batch. It is refilled when half empty (needs_refill), so the workers
        never wait on a claim. A claim charges nothing: an attempt counts when a worker starts it."""
        room = self.batch - self._waiting.qsize()
        if room <= 0:
            return
        with self._metrics.timed("claim_messages"):
            messages = api.claim_messages(self.worker_id, room, self.lease_seconds)
        self._more_due = len(messages) == room
        with self._lock:
            self._held.update(message["id"] for message in messages)
        for message in messages:
            self._waiting.put(message)
        if messages:
            log.info("messages_claimed", count=len(messages), queued_locally=self._waiting.qsize())

    def needs_refill(self) -> bool:
        """Half empty while more is due."""
        return self._more_due and self._waiting.qsize() <= self.batch // 2

    def take(self, block: bool) -> dict | None:
        """The next message, waiting up to TAKE_WAIT_S for one if `block`; None if there is none."""
        try:
            return self._waiting.get(timeout=TAKE_WAIT_S) if block else self._waiting.get_nowait()
        except queue.Empty:
            return None

    def put_back(self, message: dict) -> None:
        """A message taken but not started (a stop came meanwhile): left for the release."""
        self._waiting.put(message)

    def done(self, ids: list[int]) -> None:
        """No longer held: recorded, deferred, or lost to another sender."""
        with self._lock:
            self._held.difference_update(ids)

    def held_ids(self) -> list[int]:
        with self._lock:
            return list(self._held)

    def holds_nothing(self) -> bool:
        with self._lock:
            return not self._held and self._waiting.empty()

    def release(self) -> None:
        """Give back what no worker has started (on stop, or when the relay goes down)."""
        unstarted = []
        while (message := self.take(block=False)) is not None:
            unstarted.append(message["id"])
        if not unstarted:
            return
        self.done(unstarted)
        try:
            with self._open_api() as api:
                released = api.release_messages(self.worker_id, unstarted)
            log.info("messages_released", count=released)
        except psycopg.Error as exc:  # their leases lapse and another sender takes them
            log.warning("release_failed", error=str(exc).strip(), count=len(unstarted))
