"""Fixtures for every room (tests/unit and tests/db). Nothing here touches a database: the database
fixtures are in tests/db/conftest.py, the shared helper functions in tests/helpers/."""
from __future__ import annotations

import os

import pytest


@pytest.fixture
def umask_022():
    """The usual umask, which would make a plain mkdir 755 and a plain file 644."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)
