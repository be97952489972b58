"""runhub_loader/mail/local_queue.py: claimed a batch ahead of the workers, refilled at low water,
given back on stop; against the fake typed door (tests/helpers/fake_api.py). The sender's stop
and its release against a real database: tests/db/test_sender_e2e.py and test_sender_faults.py."""
from __future__ import annotations

from helpers.fake_api import FakeApi, message, own_connections
from helpers.sender_fakes import SenderLog
from runhub_loader.mail.local_queue import LocalQueue
from runhub_loader.metrics import SenderMetrics


def local_queue(api: FakeApi, batch: int = 10) -> LocalQueue:
    return LocalQueue("w1", batch, 120, own_connections(api), SenderMetrics())


def take(queue: LocalQueue, n: int) -> list[int]:
    return [queue.take(block=False)["id"] for _ in range(n)]


def test_a_claim_tops_the_queue_up_to_a_batch_and_refills_only_at_low_water():
    api = FakeApi([message(i) for i in range(1, 26)])
    queue = local_queue(api, batch=10)
    queue.claim(api)
    assert api.calls.of("claim_messages") == [("w1", 10, 120)] and queue.size() == 10
    queue.claim(api)
    assert len(api.calls.of("claim_messages")) == 1, "a full queue claims nothing"
    assert take(queue, 4) == [1, 2, 3, 4] and not queue.needs_refill(), "6 left: above low water (5)"
    take(queue, 1)
    assert queue.needs_refill()
    queue.claim(api)
    assert api.calls.of("claim_messages")[-1] == ("w1", 5, 120), "only the room left"
    assert queue.size() == 10 and not queue.needs_refill()


def test_a_claim_short_of_its_room_means_nothing_more_is_due():
    api = FakeApi([message(1), message(2)])
    queue = local_queue(api, batch=10)
    queue.claim(api)
    take(queue, 2)
    assert queue.size() == 0 and not queue.needs_refill()


def test_a_message_is_held_from_its_claim_until_a_worker_is_done_with_it():
    api = FakeApi([message(1), message(2)])
    queue = local_queue(api)
    assert queue.holds_nothing()
    queue.claim(api)
    assert sorted(queue.held_ids()) == [1, 2]
    take(queue, 2)
    assert sorted(queue.held_ids()) == [1, 2] and not queue.holds_nothing(), "taken, not yet recorded"
    queue.done([1, 2])
    assert queue.held_ids() == [] and queue.holds_nothing()


def test_the_release_gives_back_what_no_worker_took():
    log = SenderLog()
    api = FakeApi([message(i) for i in range(1, 6)])
    queue = local_queue(api)
    queue.claim(api)
    take(queue, 2)
    queue.release()
    assert api.calls.of("release_messages") == [("w1", [3, 4, 5])]
    assert sorted(queue.held_ids()) == [1, 2], "the taken ones are still the workers'"
    assert queue.size() == 0 and [e["count"] for e in log.events("messages_released")] == [3]
    queue.release()
    assert len(api.calls.of("release_messages")) == 1, "nothing left: no call"


def test_a_message_put_back_is_released():
    api = FakeApi([message(1)])
    queue = local_queue(api)
    queue.claim(api)
    queue.put_back(queue.take(block=False))
    queue.release()
    assert api.calls.of("release_messages") == [("w1", [1])]


def test_a_release_the_database_does_not_take_is_left_to_the_leases():
    log = SenderLog()
    api = FakeApi([message(1), message(2)])
    queue = local_queue(api)
    queue.claim(api)
    api.reachable = False
    queue.release()
    [failed] = log.events("release_failed")
    assert (failed["level"], failed["count"]) == ("warning", 2) and queue.holds_nothing()
