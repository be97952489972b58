"""Where the tests' throwaway clusters live: a tmpfs (/dev/shm) when the machine has one with room,
else the usual temporary folder.

A test clones runhub's template database (CREATE DATABASE ... TEMPLATE): ~440 files made and
written. On a disk that is a few hundred milliseconds a clone, nearly all of it creating files; on a
tmpfs a few dozen. A fast cluster (fsync off) loses nothing by living in memory, which the test
command throws away anyway. The fault tests' cluster (fsync on, as in production) stays on disk.

Run as a script, prints the folder: `scripts/test` makes its cluster there and exports it as
RUNHUB_TEST_TMPDIR, which also chooses it for the clusters the tests start themselves."""
from __future__ import annotations

import os
import tempfile

SHARED_MEMORY = "/dev/shm"
# The room the test command needs there, with a wide margin: a full run peaks near 400 MiB.
MIN_FREE_BYTES = 2 << 30


def _is_tmpfs(folder: str) -> bool:
    try:
        with open("/proc/mounts") as mounts:
            return any(line.split()[1:3] == [folder, "tmpfs"] for line in mounts)
    except OSError:
        return False


def _has_room(folder: str) -> bool:
    try:
        stats = os.statvfs(folder)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize >= MIN_FREE_BYTES and os.access(folder, os.W_OK | os.X_OK)


def fast_cluster_parent() -> str:
    """The folder new fast clusters go in: RUNHUB_TEST_TMPDIR if set, else /dev/shm when it is a
    tmpfs with MIN_FREE_BYTES free, else tempfile's folder ($TMPDIR or /tmp)."""
    chosen = os.environ.get("RUNHUB_TEST_TMPDIR")
    if chosen:
        return chosen
    if _is_tmpfs(SHARED_MEMORY) and _has_room(SHARED_MEMORY):
        return SHARED_MEMORY
    return tempfile.gettempdir()


if __name__ == "__main__":
    print(fast_cluster_parent())
