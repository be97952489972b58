"""The sender's workers: each takes a message from the local queue, has it rendered and handed to the
relay, and records its outcome once, through the recorder.

A worker holds one message at a time. It records that it starts a message before rendering and
sending it (in the same transaction as its previous outcome when the local queue has a next message
ready), and takes the next one only once its outcome is in the database: at most one mail per worker
is ever out but unrecorded."""
from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable

from .. import logs
from ..metrics import SenderMetrics
from .local_queue import TAKE_WAIT_S, LocalQueue
from .rate_limit import RateLimiter
from .recorder import Recorder
from .relay_gate import RelayGate
from .smtp import Outcome, RelayUnavailable, SmtpConnection

log = logs.get("sender")


class Delivery:
    """One message rendered and handed to the relay, within the rate limits: what the server said."""

    def __init__(self, compose: Callable[[dict], tuple[bytes, str]], envelope_from: str,
                 rate: RateLimiter, project_rate: RateLimiter, metrics: SenderMetrics):
        self._compose = compose
        self.envelope_from = envelope_from  # MAIL FROM
        self._rate = rate
        self._project_rate = project_rate
        self._metrics = metrics

    def attempt(self, smtp: SmtpConnection, message: dict) -> Outcome:
        """The server's answer; a message that cannot be rendered never will be: a permanent failure.
        Raises RelayUnavailable when the relay cannot be had."""
        with logs.bound(run_id=message.get("runId"), message_id=message["messageId"]):
            try:
                email, recipient = self._compose(message)
            except Exception as exc:
                log.error("render_failed", error=repr(exc))
                return Outcome(False, 554, f"render failed: {exc!r}"[:400])
            self._rate.wait()
            self._project_rate.wait(message["projectId"])
            with self._metrics.smtp_sends.time():
                return smtp.send(email, self.envelope_from, recipient)


class Workers:
    """What each of the sender's worker threads runs (run()), each on its own reused SMTP session."""

    def __init__(self, local_queue: LocalQueue, relay_gate: RelayGate, recorder: Recorder, delivery: Delivery,
                 new_smtp: Callable[[], SmtpConnection], stopping: threading.Event, wake: Callable[[], None],
                 metrics: SenderMetrics, exit_when_idle: bool = False):
        self._local_queue = local_queue
        self._relay_gate = relay_gate
        self._recorder = recorder
        self._delivery = delivery
        self._new_smtp = new_smtp
        self._stopping = stopping
        self._wake = wake  # the loop: to refill, or to see whether all is done
        self._metrics = metrics
        self._exit_when_idle = exit_when_idle
        self.totals: defaultdict[str, int] = defaultdict(int)  # messages finished, by status
        self._busy = 0
        self._busy_lock = threading.Lock()

    @property
    def busy(self) -> int:
        """Workers holding a message, from taking it until its outcome is recorded: the recorder
        waits for the busy workers' outcomes (Recorder.LINGER_S)."""
        return self._busy

    def run(self) -> None:
        """One worker, until the stop: then it finishes the message in hand and takes no other."""
        smtp = self._new_smtp()
        message = None  # in hand, started
        try:
            while message is not None or not self._stopping.is_set():
                if message is None:
                    message = self._take_and_start()
                if message is not None:
                    message = self._deliver(smtp, message)
        finally:
            smtp.close()

    def _take_and_start(self) -> dict | None:
        """The next message, its start recorded; None if there is none or its lease is lost."""
        message = self._take(block=True)
        if message is None:
            return None
        self._set_busy(+1)
        if self._submit(None, None, message)[1]:
            return message
        self._set_busy(-1)
        return None

    def _deliver(self, smtp: SmtpConnection, message: dict) -> dict | None:
        """Attempt `message` and record its outcome; returns the next message if one was ready (its
        start recorded with that outcome)."""
        try:
            outcome = self._delivery.attempt(smtp, message)
        except RelayUnavailable as exc:  # the relay's fault: the message is given back uncharged
            self._relay_gate.message_failed(smtp.relay, message, exc)
            self._set_busy(-1)
            return None
        except Exception as exc:  # a bug, not the server's answer: retry it later, with backoff
            log.error("delivery_error", message_id=message["messageId"], error=repr(exc))
            outcome = Outcome(False, None, f"sender error: {exc!r}"[:400])
        following = self._take(block=False)
        if not self._finish(message, outcome, following):
            following = None
            self._set_busy(-1)
        if self._local_queue.needs_refill() or (self._exit_when_idle and self._local_queue.holds_nothing()):
            self._wake()
        return following

    def _take(self, block: bool) -> dict | None:
        """The next message of the local queue, unless shutting down (it is then left for the
        release) or the relay is down (then none: wait for it to come back)."""
        if self._stopping.is_set():
            return None
        if not self._relay_gate.is_open():
            if block:
                self._relay_gate.wait_open(TAKE_WAIT_S)
            return None
        message = self._local_queue.take(block)
        if message is not None and self._stopping.is_set():
            self._local_queue.put_back(message)
            return None
        return message

    def _finish(self, message: dict, outcome: Outcome, following: dict | None) -> bool:
        """Record the outcome (and the start of `following`); whether `following` may be sent."""
        status, started = self._submit(message, outcome, following)
        if status is not None:
            self.totals[status] += 1
            self._metrics.finished(message["template"], status, outcome.code, outcome.reply)
            with logs.bound(run_id=message.get("runId"), message_id=message["messageId"]):
                log.info("message_" + ("sent" if outcome.accepted else "refused"), status=status,
                         smtp_code=outcome.code, reply=outcome.reply[:200], attempt=message["attempts"] + 1,
                         sent_total=self.totals["sent"])
        return following is not None and started

    def _submit(self, message: dict | None, outcome: Outcome | None, start: dict | None) -> tuple[str | None, bool]:
        """Through the recorder, wait included. A message whose lease was lost before it started is
        dropped (another sender has it); if the database cannot be reached (30 s into a shutdown),
        both are left to their leases."""
        failed = False
        try:
            with self._metrics.timed("record"):
                status, started = self._recorder.record(message and message["id"], outcome, start and start["id"])
        except Exception as exc:
            log.error("record_failed", error=repr(exc))
            status, started, failed = None, False, True
        if start is not None and not started and not failed:
            log.warning("lease_lost_before_send", message_id=start["messageId"], run_id=start.get("runId"))
        self._local_queue.done(([message["id"]] if message else []) + ([start["id"]] if start and not started else []))
        return status, started

    def _set_busy(self, delta: int) -> None:
        with self._busy_lock:
            self._busy += delta
