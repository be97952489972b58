"""The sender's rate limits: `--rate` for all its mail, `--project-rate` for each project's."""
from __future__ import annotations

import threading
import time
from collections import defaultdict


class RateLimiter:
    """Spaces sends so that no more than `rate` per second go out (per key)."""

    def __init__(self, rate: float | None):
        self.interval = 1.0 / rate if rate else 0.0
        self._next: dict[object, float] = defaultdict(float)
        self._lock = threading.Lock()

    def wait(self, key: object = None) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next[key])
            self._next[key] = slot + self.interval
        if slot > now:
            time.sleep(slot - now)
