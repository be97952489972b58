"""The sender's loop: woken by NOTIFY, its poll, or its own threads, it catches up and claims."""
from __future__ import annotations

import contextlib
import select
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

import psycopg

from .. import logs
from ..db import queries
from ..db.api import Api
from ..db.session import connect as sender_connect
from .catch_up import CatchUp
from .local_queue import LocalQueue
from .relay_gate import RelayGate
from .wakeup import Wakeup

if TYPE_CHECKING:
    from .daemon import SenderConfig

log = logs.get("sender")
NOTIFY_READ_MAX = 10_000  # NOTIFYs read in one go; more are read at the next wake-up
FIRST_BACKOFF_S = 0.5     # before connecting again; doubled up to MAX_BACKOFF_S
MAX_BACKOFF_S = 30.0


class Loop:
    """Connects (again after a loss, with backoff: a NOTIFY is only a wake-up, so it then catches
    up), LISTENs, and at each wake-up executes due runs (when it drives them) and tops the local
    queue up while the relay is up. Runs until the stop, or until nothing is due if it exits idle."""

    def __init__(self, config: SenderConfig, stopping: threading.Event, wakeup: Wakeup, local_queue: LocalQueue,
                 relay_gate: RelayGate, catch_up: CatchUp,
                 connect: Callable[[str], AbstractContextManager] = sender_connect, door: Callable[..., Api] = Api):
        self.config = config
        self._stopping = stopping
        self._wakeup = wakeup  # the sender's own threads and stop() write here
        self._local_queue = local_queue
        self._relay_gate = relay_gate
        self._catch_up = catch_up
        self._connect = connect
        self._door = door
        self._next_wake = 0.0  # monotonic time before which a NOTIFY does not wake the sender

    def run(self) -> None:
        backoff = FIRST_BACKOFF_S
        while not self._stopping.is_set():
            try:
                with contextlib.ExitStack() as stack:
                    conn = stack.enter_context(self._connect(self.config.database_url))
                    wakeups = self._listen(stack, conn)
                    backoff = FIRST_BACKOFF_S
                    if self._serve(self._door(conn), wakeups):
                        return
            except psycopg.Error as exc:  # lost connection, restart, failover: reconnect and catch up
                log.warning("database_unavailable", error=str(exc).strip(), retry_in_s=backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _serve(self, api: Api, wakeups) -> bool:
        """Wake-up after wake-up on one connection, until the stop (False) or idle (True)."""
        catch_up = True
        while not self._stopping.is_set():
            if catch_up:  # first, and after every NOTIFY or poll; not for a refill
                self._next_wake = time.monotonic() + self.config.wake_seconds
                if self.config.drive_runs:
                    self._catch_up.run(api)
            if self._relay_gate.is_open():  # while it is down, what is due stays in the database
                self._local_queue.claim(api)
            if self.config.exit_when_idle and self._idle(api):
                log.info("idle")
                return True
            catch_up = self._wait(wakeups)
        return False

    def _listen(self, stack: contextlib.ExitStack, conn) -> psycopg.Connection | None:
        """The connection that LISTENs (the work's own, or a direct one beside a pooler), or None:
        polling only (a pooler in transaction mode cannot keep a LISTEN)."""
        url = self.config.wakeups_url
        if url is None:
            log.info("polling", every_s=self.config.poll_seconds)
            return None
        listener = conn if url == self.config.database_url else stack.enter_context(self._connect(url))
        listener.execute(queries.LISTEN_RUNS)
        listener.execute(queries.LISTEN_OUTBOX)
        log.info("listening", separate_connection=listener is not conn)
        return listener

    def _wait(self, wakeups) -> bool:
        """Until the local queue runs low while more is due (False: just refill), or a stop, the
        poll interval or a NOTIFY (True: catch up on runs too). A NOTIFY wakes the sender no sooner
        than wake_seconds after its last catch-up: any login may send one, and a flood of them must
        cost no more than polling that often. The NOTIFYs that come meanwhile (also during the
        catch-up, read with its results) are read at once, one wake-up."""
        deadline = time.monotonic() + self.config.poll_seconds
        notified = wakeups is not None and self._notified(wakeups)
        while not self._stopping.is_set():
            if self._local_queue.needs_refill():
                return False
            now = time.monotonic()
            wake_at = min(deadline, self._next_wake) if notified else deadline
            if now >= wake_at:
                return True
            watched = [self._wakeup.fileno()] + ([wakeups.fileno()] if wakeups is not None and not notified else [])
            ready, _, _ = select.select(watched, [], [], wake_at - now)
            if self._wakeup.fileno() in ready:
                self._wakeup.drain()
                if self.config.exit_when_idle and self._local_queue.holds_nothing():
                    return True
            if len(watched) > 1 and watched[1] in ready:
                notified = self._notified(wakeups)  # (raises if the server is gone)
        return True

    @staticmethod
    def _notified(wakeups) -> bool:
        """Whether NOTIFYs came, reading all that did (up to a bound, so a flood cannot hold the loop)."""
        return sum(1 for _ in wakeups.notifies(timeout=0, stop_after=NOTIFY_READ_MAX)) > 0

    def _idle(self, api: Api) -> bool:
        """Nothing in hand, and nothing due: no run to execute, no message due or being sent."""
        return self._local_queue.holds_nothing() and api.sender_idle()
