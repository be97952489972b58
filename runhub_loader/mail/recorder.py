"""The sender's recorder: SMTP outcomes and next starts written together, kept across outages."""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable

import psycopg

from .. import logs
from ..db.api import Api
from ..db import queries
from ..db.session import connect
from .smtp import Outcome

log = logs.get("sender")


@dataclass
class _Pending:
    message_id: int | None  # the message whose outcome this is (None: a start only)
    outcome: Outcome | None
    start_id: int | None    # the message the worker starts next
    done: threading.Event
    status: str | None = None
    started: bool = False
    error: BaseException | None = None


class Recorder:
    """Writes the workers' outcomes, and the starts of their next messages, to the database
    together: one statement (record_sent_many for the 250s and start_messages, so one round trip
    and one commit) for every worker that is waiting; refusals, rare, go one by one. Having one, it
    lingers up to LINGER_S for the other busy workers' (they are mid-SMTP, about to report).
    Across a lost connection it keeps what it has and retries on a new one: a 250 must not be
    lost. It gives up only 30 s into a shutdown (the leases then lapse and another sender finishes
    those messages)."""

    MAX_BATCH = 200
    LINGER_S = 0.002

    def __init__(self, database_url: str, worker_id: str, stopping: threading.Event, busy: Callable[[], int]):
        self.database_url = database_url
        self.worker_id = worker_id
        self.stopping = stopping
        self._busy = busy
        self._stopped_at: float | None = None
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._conn: psycopg.Connection | None = None

    def record(self, message_id: int | None, outcome: Outcome | None, start_id: int | None = None) -> tuple[str | None, bool]:
        """(the message's status, whether start_id may be sent), once in the database (blocks)."""
        pending = _Pending(message_id, outcome, start_id, threading.Event())
        self._queue.put(pending)
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.status, pending.started

    def close(self) -> None:
        """After the last record(): finish what is waiting, then stop."""
        self._queue.put(None)

    def run(self) -> None:
        closing = False
        try:
            while not closing:
                batch = [self._queue.get()]
                linger_until = time.monotonic() + self.LINGER_S
                while len(batch) < self.MAX_BATCH and batch[-1] is not None:
                    # Whatever is waiting; and while some busy worker has not reported, a little more.
                    wait = linger_until - time.monotonic() if len(batch) < self._busy() else 0.0
                    try:
                        batch.append(self._queue.get(timeout=max(wait, 0.0)))
                    except queue.Empty:
                        break
                if None in batch:
                    closing = True
                    batch = [p for p in batch if p is not None]
                if batch:
                    self._write(batch)
        finally:
            if self._conn is not None and not self._conn.closed:
                self._conn.close()

    def _write(self, batch: list[_Pending]) -> None:
        try:
            while True:
                conn = self._connection()
                try:
                    self._write_once(conn, batch)
                    break
                except psycopg.OperationalError as exc:  # keep the outcomes until the database is back
                    log.warning("record_retry", error=str(exc).strip(), outcomes=len(batch))
                    conn.close()
        except BaseException as exc:  # noqa: BLE001 (handed to the waiting workers)
            for pending in batch:
                pending.error = exc
        for pending in batch:
            pending.done.set()

    def _write_once(self, conn, batch: list[_Pending]) -> None:
        accepted = [p for p in batch if p.outcome is not None and p.outcome.accepted]
        for pending in batch:  # refusals (rare): one by one, each a transaction of its own
            if pending.outcome is not None and not pending.outcome.accepted:
                pending.status = Api(conn).record_failure(pending.message_id, self.worker_id,
                                                          pending.outcome.code, pending.outcome.reply)
        starting = [p.start_id for p in batch if p.start_id is not None]
        params = []
        if accepted:
            params += [self.worker_id, [p.message_id for p in accepted], [p.outcome.reply for p in accepted]]
        if starting:
            params += [self.worker_id, starting]
        # One statement, so one transaction and one round trip.
        rows = (conn.execute(queries.record_sent_and_start(bool(accepted), bool(starting)), params).fetchall()
                if accepted or starting else [])
        recorded = {message_id: status for call, message_id, status in rows if call == "sent"}
        held = {message_id for call, message_id, _ in rows if call == "start"}
        for pending in accepted:
            pending.status = recorded[pending.message_id]
        for pending in batch:
            pending.started = pending.start_id in held

    def _connection(self) -> psycopg.Connection:
        wait = 0.5
        while self._conn is None or self._conn.closed:
            try:
                self._conn = connect(self.database_url)
            except psycopg.OperationalError as exc:
                if self.stopping.is_set():
                    self._stopped_at = self._stopped_at or time.monotonic()
                    if time.monotonic() - self._stopped_at > 30:
                        raise
                log.warning("database_unavailable", error=str(exc).strip(), retry_in_s=wait)
                time.sleep(wait)
                wait = min(wait * 2, 10.0)
        return self._conn
