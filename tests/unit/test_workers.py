"""runhub_loader/mail/workers.py: a worker starts a message, has it rendered and sent, and records its
outcome once; with the fake typed door, a fake SMTP session and a fake recorder. The real SMTP path
and recorder: tests/db/test_sender_e2e.py, test_sender_faults.py and test_relay_outage.py."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest

from helpers.db import DEADLINE_SECONDS
from helpers.fake_api import FakeApi, message, own_connections
from helpers.sender_fakes import ACCEPTED, FakeRecorder, FakeSmtp, SenderLog
from runhub_loader.mail.local_queue import LocalQueue
from runhub_loader.mail.rate_limit import RateLimiter
from runhub_loader.mail.relay_gate import RelayGate
from runhub_loader.mail.smtp import Outcome, RelayUnavailable
from runhub_loader.mail.workers import Delivery, Workers
from runhub_loader.metrics import SenderMetrics


def compose(message: dict) -> tuple[bytes, str]:
    if message["template"] == "broken":
        raise KeyError("customerName")
    return f"mail {message['id']}".encode(), message["toEmail"]


@dataclass
class Sender:
    """The workers and what they work with; `start(n)` runs n worker threads."""
    api: FakeApi
    local_queue: LocalQueue
    relay_gate: RelayGate
    recorder: FakeRecorder
    smtp: FakeSmtp
    probe: FakeSmtp
    workers: Workers
    stopping: threading.Event
    woken: threading.Event
    threads: list[threading.Thread]

    def start(self, n: int = 1) -> None:
        for _ in range(n):
            self.threads.append(threading.Thread(target=self.workers.run, daemon=True))
            self.threads[-1].start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(DEADLINE_SECONDS)
        assert not any(thread.is_alive() for thread in self.threads), "the workers must stop when told to"

    def wait_recorded(self, ids) -> None:
        self.recorder.calls.wait_until(lambda: set(ids) <= set(self.recorder.outcomes()), f"outcomes of {ids}")


@pytest.fixture
def sender_of():
    made = []

    def make(messages: list[dict], script=None, lost=(), batch=10, exit_when_idle=False) -> Sender:
        api = FakeApi(messages)
        metrics = SenderMetrics()
        stopping, woken = threading.Event(), threading.Event()
        queue = LocalQueue("w1", batch, 120, own_connections(api), metrics)
        probe = FakeSmtp()
        gate = RelayGate("w1", queue, own_connections(api), lambda: probe, stopping, woken.set, metrics,
                         probe_max_s=0.02, first_probe_s=0.001)
        recorder, smtp = FakeRecorder(set(lost)), FakeSmtp(script)
        delivery = Delivery(compose, "mail@runhub.example", RateLimiter(None), RateLimiter(None), metrics)
        workers = Workers(queue, gate, recorder, delivery, lambda: smtp, stopping, woken.set, metrics, exit_when_idle)
        made.append(Sender(api, queue, gate, recorder, smtp, probe, workers, stopping, woken, []))
        queue.claim(api)
        return made[-1]

    yield make
    for sender in made:
        sender.stop()


def test_each_message_is_started_sent_and_recorded_once(sender_of):
    log = SenderLog()
    sender = sender_of([message(i, run=f"run-{i}") for i in range(1, 7)])
    sender.start(2)
    sender.wait_recorded(range(1, 7))
    sender.stop()
    recorded = sender.recorder.outcomes()
    assert recorded == {i: [ACCEPTED] for i in range(1, 7)}
    calls = sender.recorder.calls.of("record")
    starts = [start for _, _, start in calls if start is not None]
    assert sorted(starts) == list(range(1, 7)), "each started once"
    for i in range(1, 7):  # started in an earlier record than its outcome's
        assert [start for _, _, start in calls].index(i) < [done for done, _, _ in calls].index(i)
    assert sorted(recipient for _, _, recipient in sender.smtp.calls.of("send")) == \
        sorted(f"user{i}@example.com" for i in range(1, 7))
    assert {sender_ for _, sender_, _ in sender.smtp.calls.of("send")} == {"mail@runhub.example"}
    assert sender.workers.totals == {"sent": 6} and sender.local_queue.holds_nothing()
    lines = log.events("message_sent")
    assert sorted((line["run_id"], line["message_id"]) for line in lines) == \
        sorted((f"run-{i}", f"<{i}@runhub>") for i in range(1, 7))
    assert len(sender.smtp.calls.of("close")) == 2, "each worker closes its session"


def test_a_refusal_is_recorded_as_the_server_gave_it(sender_of):
    log = SenderLog()
    later = Outcome(False, 451, "451 4.7.1 try later")
    sender = sender_of([message(1)], script={"user1@example.com": [later]})
    sender.start()
    sender.wait_recorded([1])
    sender.stop()  # its log line follows its record
    assert sender.recorder.outcomes() == {1: [later]} and sender.workers.totals == {"queued": 1, "sent": 0}
    [line] = log.events("message_refused")
    assert (line["status"], line["smtp_code"], line["run_id"], line["attempt"]) == ("queued", 451, "run-1", 1)


def test_a_message_that_cannot_be_rendered_fails_unsent(sender_of):
    log = SenderLog()
    sender = sender_of([message(1, template="broken"), message(2)])
    sender.start()
    sender.wait_recorded([1, 2])
    [failed] = sender.recorder.outcomes()[1]
    assert (failed.accepted, failed.code, failed.reply) == (False, 554, "render failed: KeyError('customerName')")
    assert [recipient for *_, recipient in sender.smtp.calls.of("send")] == ["user2@example.com"]
    [line] = log.events("render_failed")
    assert (line["run_id"], line["message_id"]) == ("run-1", "<1@runhub>")


def test_an_error_of_the_sender_is_recorded_as_a_failure_to_retry(sender_of):
    log = SenderLog()
    sender = sender_of([message(1)], script={"user1@example.com": [RuntimeError("a bug")]})
    sender.start()
    sender.wait_recorded([1])
    assert sender.recorder.outcomes() == {1: [Outcome(False, None, "sender error: RuntimeError('a bug')")]}
    assert [line["message_id"] for line in log.events("delivery_error")] == ["<1@runhub>"]


def test_a_message_whose_lease_was_lost_is_not_sent(sender_of):
    log = SenderLog()
    sender = sender_of([message(1), message(2), message(3)], lost={2})
    sender.start()
    sender.wait_recorded([1, 3])
    sender.stop()
    assert set(sender.recorder.outcomes()) == {1, 3}
    assert [recipient for *_, recipient in sender.smtp.calls.of("send")] == ["user1@example.com", "user3@example.com"]
    assert [line["message_id"] for line in log.events("lease_lost_before_send")] == ["<2@runhub>"]
    assert sender.local_queue.holds_nothing()


def test_a_relay_down_defers_the_message_and_the_workers_send_again_once_it_is_back(sender_of):
    down = RelayUnavailable("ConnectionRefusedError: [Errno 111] Connection refused")
    sender = sender_of([message(i) for i in range(1, 4)], script={"user1@example.com": [down]})
    sender.start()
    sender.probe.calls.wait_for("probe")
    assert not sender.relay_gate.is_open()
    assert sender.api.calls.of("defer_messages") == [("w1", [1], f"relay unavailable: {down}")]
    assert sender.api.calls.of("release_messages") == [("w1", [2, 3])]
    assert sender.recorder.outcomes() == {} and sender.local_queue.holds_nothing()
    sender.probe.answering = True
    assert sender.woken.wait(DEADLINE_SECONDS)
    sender.local_queue.claim(sender.api)  # as the woken loop does
    sender.wait_recorded([1, 2, 3])
    assert sender.recorder.outcomes() == {i: [ACCEPTED] for i in range(1, 4)}, "each recorded once"
    assert [r for *_, r in sender.smtp.calls.of("send")].count("user1@example.com") == 2, "refused, then sent"


def test_on_stop_a_worker_finishes_the_message_in_hand_and_takes_no_other(sender_of):
    sending, go = threading.Event(), threading.Event()

    def held():
        sending.set()
        go.wait(DEADLINE_SECONDS)
        return ACCEPTED

    sender = sender_of([message(i) for i in range(1, 5)], script={"user1@example.com": [held]})
    sender.start()
    assert sending.wait(DEADLINE_SECONDS)
    assert sender.workers.busy == 1, "a worker holds message 1 until its outcome is recorded"
    sender.stopping.set()
    go.set()
    sender.stop()
    assert sender.recorder.calls.of("record")[-1] == (1, ACCEPTED, None), "recorded, and nothing started with it"
    assert sender.workers.busy == 0 and sender.local_queue.size() == 3, "the rest left for the release"
    assert sorted(sender.local_queue.held_ids()) == [2, 3, 4]


def test_a_worker_wakes_the_loop_when_the_queue_runs_low_while_more_is_due(sender_of):
    sender = sender_of([message(i) for i in range(1, 9)], batch=4)
    assert not sender.woken.is_set()
    sender.start()
    assert sender.woken.wait(DEADLINE_SECONDS)
    assert sender.local_queue.needs_refill()


def test_a_sender_that_exits_idle_wakes_the_loop_when_nothing_is_left_in_hand(sender_of):
    sender = sender_of([message(1)], exit_when_idle=True)
    sender.start()
    sender.wait_recorded([1])
    assert sender.woken.wait(DEADLINE_SECONDS) and sender.local_queue.holds_nothing()
