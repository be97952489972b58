"""runhub_loader/mail/loop.py: the sender's loop LISTENs, wakes on a NOTIFY or its own threads'
wake-up, catches up, claims while the relay is up, reconnects, and stops; with fake connections and
the fake typed door. Against a real server: tests/db/test_sender_e2e.py, test_pooler.py (a pooler,
a separate LISTEN connection, polling) and test_sender_faults.py (a lost connection)."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import psycopg
import pytest

from helpers.db import DEADLINE_SECONDS
from helpers.fake_api import FakeApi, message, own_connections
from helpers.sender_fakes import FakeConnection, FakeSmtp, SenderLog
from runhub_loader.db import queries
from runhub_loader.mail.catch_up import CatchUp
from runhub_loader.mail.daemon import SenderConfig
from runhub_loader.mail.local_queue import LocalQueue
from runhub_loader.mail.loop import Loop
from runhub_loader.mail.relay_gate import RelayGate
from runhub_loader.mail.smtp import RelayUnavailable, SmtpConfig
from runhub_loader.mail.wakeup import Wakeup
from runhub_loader.metrics import SenderMetrics

DATABASE = "postgresql://db.test/runhub"
NEVER_S = DEADLINE_SECONDS * 10  # a poll that never comes within a test: only a wake-up wakes the loop


@dataclass
class Sender:
    """The loop and what it works with; `connections` lists each (url, connection) it opened."""
    loop: Loop
    api: FakeApi
    local_queue: LocalQueue
    relay_gate: RelayGate
    probe: FakeSmtp
    wakeup: Wakeup
    stopping: threading.Event
    connections: list[tuple[str, FakeConnection]]
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self.loop.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.wakeup.wake()
        self.join()

    def join(self) -> None:
        self.thread.join(DEADLINE_SECONDS)
        assert not self.thread.is_alive(), "the loop must end"


@pytest.fixture
def sender_of():
    made = []

    def make(api: FakeApi, refused_connections: int = 0, batch: int = 10, **config) -> Sender:
        config = SenderConfig(DATABASE, SmtpConfig("relay.test", 25), batch=batch,
                              **{"poll_seconds": NEVER_S, "wake_seconds": 0, **config})
        metrics, stopping, wakeup = SenderMetrics(), threading.Event(), Wakeup()
        queue = LocalQueue("w1", batch, 120, own_connections(api), metrics)
        probe = FakeSmtp()
        gate = RelayGate("w1", queue, own_connections(api), lambda: probe, stopping, wakeup.wake, metrics,
                         probe_max_s=0.02, first_probe_s=0.001)
        connections = []

        def connect(url: str) -> FakeConnection:
            if len(connections) < refused_connections:
                connections.append((url, None))
                raise psycopg.OperationalError("connection refused")
            connections.append((url, FakeConnection()))
            return connections[-1][1]

        loop = Loop(config, stopping, wakeup, queue, gate, CatchUp(metrics), connect=connect, door=lambda conn: api)
        made.append(Sender(loop, api, queue, gate, probe, wakeup, stopping, connections))
        return made[-1]

    yield make
    for sender in made:
        sender.stopping.set()
        sender.wakeup.wake()
        if sender.thread is not None:
            sender.join()
        sender.wakeup.close()


@pytest.mark.parametrize("listen_url, listening, separate", [
    (None, [DATABASE], False), ("postgresql://direct.test/runhub", [DATABASE, "postgresql://direct.test/runhub"], True),
    ("", [DATABASE], None)], ids=["on-its-connection", "beside-a-pooler", "polling"])
def test_a_loop_that_exits_idle_listens_catches_up_claims_and_ends(sender_of, listen_url, listening, separate):
    log = SenderLog()
    sender = sender_of(FakeApi(runs_due=2), exit_when_idle=True, listen_url=listen_url)
    sender.start()
    sender.join()
    assert [url for url, _ in sender.connections] == listening
    listens = [queries.LISTEN_RUNS, queries.LISTEN_OUTBOX]
    assert [conn.statements for _, conn in sender.connections] == (
        [[]] if separate is None else [[], listens] if separate else [listens])
    assert sender.api.calls.names() == ["process_runs", "run_due_digests", "claim_messages", "sender_idle"]
    assert [line["separate_connection"] for line in log.events("listening")] == ([] if separate is None else [separate])
    assert [line["every_s"] for line in log.events("polling")] == ([NEVER_S] if separate is None else [])
    assert len(log.events("idle")) == 1


def test_a_notify_wakes_the_loop_to_catch_up_and_claim(sender_of):
    sender = sender_of(FakeApi([message(1)]))
    sender.start()
    sender.api.calls.wait_for("claim_messages")
    sender.api.due.append(message(2))
    [(_, conn)] = sender.connections
    conn.notify()
    sender.api.calls.wait_for("claim_messages", 2)
    assert len(sender.api.calls.of("process_runs")) == 2 and sorted(sender.local_queue.held_ids()) == [1, 2]


def test_a_sender_that_does_not_drive_runs_only_claims(sender_of):
    sender = sender_of(FakeApi([message(1)]), drive_runs=False)
    sender.start()
    sender.api.calls.wait_for("claim_messages")
    sender.stop()
    assert sender.api.calls.of("process_runs") == [] and sender.api.calls.of("run_due_digests") == []


def test_a_wake_up_at_low_water_refills_without_catching_up(sender_of):
    sender = sender_of(FakeApi([message(i) for i in range(1, 11)]), batch=4)
    sender.start()
    sender.api.calls.wait_for("claim_messages")
    for _ in range(2):  # what two workers do: take a message each, and wake the loop at low water
        sender.local_queue.take(block=False)
    sender.wakeup.wake()
    claims = sender.api.calls.wait_for("claim_messages", 2)
    assert [limit for _, limit, _ in claims] == [4, 2]
    assert len(sender.api.calls.of("process_runs")) == 1


def test_while_the_relay_is_down_nothing_is_claimed_and_its_return_wakes_the_loop(sender_of):
    sender = sender_of(FakeApi([message(1)]), exit_when_idle=True)
    sender.relay_gate.message_failed(sender.probe.relay, message(9), RelayUnavailable("421 try later"))
    sender.start()
    sender.api.calls.wait_for("sender_idle")
    assert sender.api.calls.of("claim_messages") == []
    sender.probe.answering = True
    sender.api.calls.wait_for("claim_messages")
    assert sender.local_queue.held_ids() == [1]


def test_a_lost_database_is_connected_to_again_and_caught_up(sender_of):
    log = SenderLog()
    sender = sender_of(FakeApi([message(1)]), refused_connections=1)
    sender.start()
    sender.api.calls.wait_for("claim_messages")
    assert [url for url, _ in sender.connections] == [DATABASE, DATABASE]
    [lost] = log.events("database_unavailable")
    assert (lost["level"], lost["retry_in_s"]) == ("warning", 0.5)
    sender.api.reachable = False  # a call that fails on a live connection: connect again
    [(_, conn)] = sender.connections[1:]
    conn.notify()
    sender.api.calls.wait_for("process_runs", 2)
    sender.api.reachable = True
    sender.api.calls.wait_for("claim_messages", 2)
    assert len(sender.connections) >= 3 and len(log.events("database_unavailable")) == len(sender.connections) - 1


def test_a_stop_wakes_the_loop_and_ends_it(sender_of):
    sender = sender_of(FakeApi())
    sender.start()
    sender.api.calls.wait_for("claim_messages")
    sender.stop()
    assert len(sender.api.calls.of("process_runs")) == 1
