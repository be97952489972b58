"""The repository's files, and files' permission bits."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]  # tests/helpers/files.py -> the checkout


def file_mode(path) -> int:
    """Permission bits of path itself (a symlink's own, not its target's)."""
    return stat.S_IMODE(os.lstat(path).st_mode)


def checkout_copy(tmp_path: Path, name: str = "checkout") -> Path:
    """A copy of this checkout's deployable folders, to modify."""
    target = tmp_path / name
    for folder in ("migrations", "sql", "plpython"):
        shutil.copytree(REPO / folder, target / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def older_checkout(tmp_path: Path, commit: str, name: str = "old") -> Path:
    """This repository's deployable folders as they were at commit (an upgrade's starting point);
    skips the test on a clone without that history (a shallow one)."""
    target = tmp_path / name
    target.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "migrations", "sql", "plpython"],
                             capture_output=True)
    if archive.returncode != 0:
        pytest.skip(f"this clone lacks commit {commit}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target
