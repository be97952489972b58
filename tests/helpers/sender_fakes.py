"""Stand-ins for the sender's parts' other collaborators: an SMTP session that answers from a
script, a recorder that answers as the database would, a connection that takes NOTIFYs, and the
sender's log lines, read back.
(tests/unit/test_sender_fakes.py holds their methods' signatures to the real ones'.)"""
from __future__ import annotations

import io
import json
import logging
import socket
import threading

from helpers.fake_api import CallLog
from runhub_loader import logs
from runhub_loader.mail.smtp import Outcome, RelayUnavailable

ACCEPTED = Outcome(True, 250, "250 2.0.0 OK")


class FakeSmtp:
    """An SMTP session: per recipient, the answers to give in turn (an Outcome, an exception to
    raise: RelayUnavailable or a bug, or a function that gives one: to hold a send), then 250. A probe fails until `answering` is set.
    One may serve every worker (a lock keeps it whole)."""

    relay = "relay.test:25"

    def __init__(self, script: dict[str, list] | None = None):
        self.script = {recipient: list(answers) for recipient, answers in (script or {}).items()}
        self.answering = False
        self.calls = CallLog()  # "send" (message, sender, recipient), "probe", "close"
        self._lock = threading.Lock()

    def send(self, message: bytes, sender: str, recipient: str) -> Outcome:
        self.calls.add("send", (message, sender, recipient))
        with self._lock:
            answers = self.script.get(recipient)
            answer = answers.pop(0) if answers else ACCEPTED
        if callable(answer):
            answer = answer()
        if isinstance(answer, Exception):
            raise answer
        return answer

    def probe(self) -> None:
        self.calls.add("probe", ())
        if not self.answering:
            raise RelayUnavailable("SMTPConnectError: (421, b'try later')")

    def close(self) -> None:
        self.calls.add("close", ())


class FakeRecorder:
    """Records as the database would: an accepted message is sent, a refused one queued again (a
    retry); a start holds unless its id is in `lost` (another sender took it)."""

    def __init__(self, lost: set[int] = frozenset()):
        self.lost = set(lost)
        self.calls = CallLog()  # "record" (message_id, outcome, start_id)

    def record(self, message_id: int | None, outcome: Outcome | None, start_id: int | None = None) -> tuple[str | None, bool]:
        self.calls.add("record", (message_id, outcome, start_id))
        status = None if outcome is None else "sent" if outcome.accepted else "queued"
        return status, start_id is not None and start_id not in self.lost

    def outcomes(self) -> dict[int, list[Outcome]]:
        """Each message's recorded outcomes."""
        recorded: dict[int, list[Outcome]] = {}
        for message_id, outcome, _ in self.calls.of("record"):
            if message_id is not None:
                recorded.setdefault(message_id, []).append(outcome)
        return recorded


class FakeConnection:
    """A connection as the sender's loop uses it: its statements kept (the LISTENs), select()-able,
    and notified by notify(). (The API calls go through the fake typed door.)"""

    def __init__(self):
        self.statements: list[str] = []
        self._incoming, self._notifier = socket.socketpair()
        self._incoming.setblocking(False)

    def __enter__(self) -> "FakeConnection":
        return self

    def __exit__(self, *exc) -> None:
        self._incoming.close()
        self._notifier.close()

    def execute(self, statement, params=None) -> None:
        self.statements.append(statement)

    def notify(self) -> None:
        self._notifier.send(b"!")

    def fileno(self) -> int:
        return self._incoming.fileno()

    def notifies(self, timeout: float = 0, stop_after: int = 1):
        try:
            arrived = len(self._incoming.recv(stop_after))
        except BlockingIOError:
            arrived = 0
        yield from range(arrived)


class SenderLog:
    """The log lines written from now on, as JSON objects (logs.setup("json") on a stream of its own)."""

    def __init__(self):
        logs.setup("json")
        self._stream = io.StringIO()
        logging.getLogger("runhub").handlers[0].setStream(self._stream)

    def events(self, event: str) -> list[dict]:
        return [line for line in map(json.loads, self._stream.getvalue().splitlines()) if line["event"] == event]
