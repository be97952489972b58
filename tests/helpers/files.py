"""The repository's files, and files' permission bits."""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

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
