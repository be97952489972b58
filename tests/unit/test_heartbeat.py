"""runhub_loader/mail/heartbeat.py: the held messages' leases renewed on one connection until the
stop and nothing held; against the fake typed door. Leases against a real database:
tests/db/test_sender_faults.py (a paused sender's leases lapse)."""
from __future__ import annotations

import contextlib
import threading

import pytest

from helpers.db import DEADLINE_SECONDS
from helpers.fake_api import FakeApi, message, own_connections
from helpers.sender_fakes import SenderLog
from runhub_loader.mail.heartbeat import Heartbeat
from runhub_loader.mail.local_queue import LocalQueue
from runhub_loader.metrics import SenderMetrics


@pytest.fixture
def beating():
    """(the fake door, the local queue holding messages 1 to 3, the stop, the connections opened,
    a function that starts the heartbeat's thread); the thread ended at the end."""
    api = FakeApi([message(i) for i in range(1, 4)])
    stopping, opened, threads = threading.Event(), [], []

    def open_api():
        opened.append(api)
        return contextlib.nullcontext(api)

    queue = LocalQueue("w1", 10, 120, own_connections(api), SenderMetrics())
    queue.claim(api)

    def start() -> threading.Thread:
        heartbeat = Heartbeat("w1", queue, open_api, stopping, 120, interval_s=0.001)
        threads.append(threading.Thread(target=heartbeat.run, daemon=True))
        threads[-1].start()
        return threads[-1]

    yield api, queue, stopping, opened, start
    stopping.set()
    queue.done(queue.held_ids())
    for thread in threads:
        thread.join(DEADLINE_SECONDS)


def test_the_held_leases_are_renewed_on_one_connection(beating):
    api, queue, stopping, opened, start = beating
    start()
    beats = api.calls.wait_for("heartbeat_messages", 3)
    assert all((worker, sorted(ids), lease) == ("w1", [1, 2, 3], 120) for worker, ids, lease in beats)
    assert len(opened) == 1


def test_after_the_stop_it_beats_until_nothing_is_held(beating):
    api, queue, stopping, opened, start = beating
    thread = start()
    api.calls.wait_for("heartbeat_messages")
    stopping.set()
    beats = len(api.calls.of("heartbeat_messages"))
    api.calls.wait_for("heartbeat_messages", beats + 1)
    assert thread.is_alive(), "messages in flight: their leases must hold"
    queue.done([1, 2, 3])
    thread.join(DEADLINE_SECONDS)
    assert not thread.is_alive()


def test_a_failed_beat_is_logged_and_the_next_one_connects_again(beating):
    api, queue, stopping, opened, start = beating
    log = SenderLog()
    api.reachable = False
    start()
    api.calls.wait_for("heartbeat_messages")
    api.reachable = True
    beats = len(api.calls.of("heartbeat_messages"))
    api.calls.wait_for("heartbeat_messages", beats + 2)
    failed = log.events("heartbeat_failed")
    assert failed and {line["level"] for line in failed} == {"warning"}
    assert len(opened) == len(failed) + 1, "a new connection after each failure, then one kept"


def test_a_stopped_heartbeat_holding_nothing_ends_without_connecting():
    api = FakeApi()
    stopping = threading.Event()
    stopping.set()
    opened = []
    queue = LocalQueue("w1", 10, 120, own_connections(api), SenderMetrics())
    Heartbeat("w1", queue, lambda: opened.append(1), stopping, 120).run()
    assert opened == [] and api.calls.of("heartbeat_messages") == []
