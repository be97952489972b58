"""PL/Python packaging: the shipped modules reach the server through a table, a redeploy reaches
sessions that loaded the old code, and a tampered table is detected. (The modules as plain Python:
tests/unit/test_plpython_bundle.py.)"""
from __future__ import annotations

import psycopg
import pytest

from helpers.files import REPO, checkout_copy
from runhub_loader.db.deploy import deploy
from runhub_loader.db.plpy_bundle import bundle_sha, read_modules


def test_the_server_runs_the_shipped_modules(conn):
    info = conn.execute("SELECT runhub._plpython_runtime()").fetchone()[0]
    assert info["python"].startswith("3.")  # the server's own python3, not this virtualenv's
    assert "runtime" in info["modules"]
    stored = dict(conn.execute("SELECT name, sha256 FROM runhub.plpython_modules").fetchall())
    assert {m.name: m.sha256 for m in read_modules(REPO)} == stored


def test_a_redeploy_reaches_sessions_that_already_loaded_the_old_code(db_url, tmp_path):
    with psycopg.connect(db_url, autocommit=True) as session:
        assert "marker" not in session.execute("SELECT runhub._plpython_runtime()").fetchone()[0]
        changed = checkout_copy(tmp_path)
        module = changed / "plpython" / "runtime.py"
        module.write_text(module.read_text().replace('"bundle": package_name,', '"bundle": package_name, "marker": 2,'))
        deploy(db_url, changed, schedule_cron=False)
        info = session.execute("SELECT runhub._plpython_runtime()").fetchone()[0]
        assert info["marker"] == 2
        assert info["bundle"].endswith(bundle_sha(read_modules(changed))[:16])


def test_a_tampered_module_table_is_detected(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE runhub.plpython_modules SET sha256 = repeat('0', 64) WHERE name = 'runtime'")
    with psycopg.connect(db_url, autocommit=True) as fresh_session:
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="do not match"):
            fresh_session.execute("SELECT runhub._plpython_runtime()")
