"""runhub's lists and bounds are said once (sql/00_constants.sql): what Python reads from the file
is what the deployed database's runhub._constants() returns. (That the renderer uses those lists:
tests/unit/test_constants_files.py.)"""
from __future__ import annotations

from runhub_loader import constants


def test_python_reads_what_the_database_enforces(conn):
    assert constants.CONSTANTS == conn.execute("SELECT runhub._constants()").fetchone()[0]
