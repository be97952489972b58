"""Where the test command's throwaway clusters go (helpers/scratch.py): a tmpfs with room, else disk."""
from __future__ import annotations

import tempfile

from helpers import scratch


def test_the_folder_named_by_the_environment_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("RUNHUB_TEST_TMPDIR", str(tmp_path))
    assert scratch.fast_cluster_parent() == str(tmp_path)


def test_a_folder_that_is_no_tmpfs_is_passed_over_for_the_temporary_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("RUNHUB_TEST_TMPDIR", raising=False)
    monkeypatch.setattr(scratch, "SHARED_MEMORY", str(tmp_path))  # a folder, mounted nowhere
    assert scratch.fast_cluster_parent() == tempfile.gettempdir()


def test_a_tmpfs_without_room_is_passed_over(monkeypatch):
    monkeypatch.delenv("RUNHUB_TEST_TMPDIR", raising=False)
    monkeypatch.setattr(scratch, "_is_tmpfs", lambda folder: True)
    monkeypatch.setattr(scratch, "MIN_FREE_BYTES", 1 << 60)  # more than any machine has
    assert scratch.fast_cluster_parent() == tempfile.gettempdir()


def test_a_tmpfs_with_room_is_chosen(monkeypatch, tmp_path):
    monkeypatch.delenv("RUNHUB_TEST_TMPDIR", raising=False)
    monkeypatch.setattr(scratch, "SHARED_MEMORY", str(tmp_path))
    monkeypatch.setattr(scratch, "_is_tmpfs", lambda folder: folder == str(tmp_path))
    monkeypatch.setattr(scratch, "MIN_FREE_BYTES", 1)
    assert scratch.fast_cluster_parent() == str(tmp_path)


def test_tmpfs_is_read_from_the_mount_table():
    with open("/proc/mounts") as mounts:
        kinds = {line.split()[1]: line.split()[2] for line in mounts}
    assert scratch._is_tmpfs("/") == (kinds.get("/") == "tmpfs")
    assert not scratch._is_tmpfs("/no/such/mount/point")
