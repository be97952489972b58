"""runhub_loader/mail/wakeup.py: the self-pipe the sender's loop and the supervisor wait on."""
from __future__ import annotations

import select

from runhub_loader.mail.wakeup import Wakeup


def readable(wakeup: Wakeup) -> bool:
    return bool(select.select([wakeup.fileno()], [], [], 0)[0])


def test_many_wakes_are_one_wake_up_and_drain_empties_it():
    wakeup = Wakeup()
    try:
        assert not readable(wakeup)
        for _ in range(1000):
            wakeup.wake()
        assert readable(wakeup)
        wakeup.drain()
        assert not readable(wakeup)
        wakeup.drain()  # nothing pending: returns at once
    finally:
        wakeup.close()


def test_a_wake_after_close_is_silent():
    wakeup = Wakeup()
    wakeup.close()
    wakeup.wake()  # a signal arriving as the loop stops must not raise
