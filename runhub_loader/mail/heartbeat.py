"""The sender's heartbeat: the leases of the messages it holds, renewed while it holds them."""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import psycopg

from .. import logs
from ..db.api import Api
from .local_queue import LocalQueue

log = logs.get("sender")


class Heartbeat:
    """Renews the held messages' leases every third of a lease (so that one lost beat costs none),
    on a connection kept between beats; after a stop, until nothing is held."""

    def __init__(self, worker_id: str, local_queue: LocalQueue, open_api: Callable[[], AbstractContextManager[Api]],
                 stopping: threading.Event, lease_seconds: int, interval_s: float | None = None):
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.interval_s = lease_seconds / 3 if interval_s is None else interval_s
        self._local_queue = local_queue
        self._open_api = open_api
        self._stopping = stopping

    def run(self) -> None:
        with contextlib.ExitStack() as connection:
            api = None
            while not (self._stopping.is_set() and not self._local_queue.held_ids()):
                time.sleep(min(self.interval_s, 1.0) if self._stopping.is_set() else self.interval_s)
                ids = self._local_queue.held_ids()
                if not ids:
                    continue
                try:
                    api = api or connection.enter_context(self._open_api())
                    api.heartbeat_messages(self.worker_id, ids, self.lease_seconds)
                except psycopg.Error as exc:
                    log.warning("heartbeat_failed", error=str(exc).strip())
                    api = None
                    with contextlib.suppress(psycopg.Error):  # a lost connection is closed already
                        connection.close()
