"""runhub_loader/mail/catch_up.py: at each wake-up the due runs, and the due digests at most once a
minute; against the fake typed door. The digest job itself: tests/db/test_digests.py."""
from __future__ import annotations

from helpers.fake_api import FakeApi
from helpers.sender_fakes import SenderLog
from runhub_loader.mail.catch_up import DIGEST_CATCH_UP_S, CatchUp
from runhub_loader.metrics import SenderMetrics


def test_runs_are_executed_at_every_catch_up_and_said_when_there_were_some():
    log = SenderLog()
    api = FakeApi(runs_due=12)
    catch_up = CatchUp(SenderMetrics())
    for _ in range(3):
        catch_up.run(api)
    assert api.calls.of("process_runs") == [(10,)] * 3
    assert [line["runs"] for line in log.events("runs_processed")] == [10, 2]


def test_due_digests_are_caught_up_at_most_once_a_minute():
    log = SenderLog()
    now = [1000.0]
    api = FakeApi(digests_due=3)
    catch_up = CatchUp(SenderMetrics(), clock=lambda: now[0])
    catch_up.run(api)
    api.digests_due = 2
    now[0] += DIGEST_CATCH_UP_S - 1
    catch_up.run(api)
    assert len(api.calls.of("run_due_digests")) == 1
    now[0] += 1
    catch_up.run(api)
    catch_up.run(api)
    assert len(api.calls.of("run_due_digests")) == 2
    assert [line["digests"] for line in log.events("digests_queued")] == [3, 2]
