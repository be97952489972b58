"""A self-pipe: any thread (or a signal handler) wakes a loop that is waiting in select(). The
sender's loop and the `--processes` supervisor each wait on one."""
from __future__ import annotations

import socket


class Wakeup:
    def __init__(self):
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)

    def fileno(self) -> int:
        """What select() and selectors watch: readable once woken."""
        return self._r.fileno()

    def wake(self) -> None:
        try:
            self._w.send(b"!")
        except OSError:  # full of wake-ups already, or closed: the loop has stopped
            pass

    def drain(self) -> None:
        """Read every pending wake-up: many wakes before the loop looks are one."""
        try:
            while self._r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        self._r.close()
        self._w.close()
