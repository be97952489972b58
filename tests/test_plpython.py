"""PL/Python packaging: modules import under plain pytest, and reach the server through a table."""
from __future__ import annotations

import platform

import psycopg
import pytest

from plpython import runtime
from runhub_loader.db.deploy import deploy
from runhub_loader.db.plpy_bundle import bundle_sha, find_exports, parse_signature, read_modules
from test_loader import REPO, checkout_copy


def test_modules_are_plain_python():
    described = runtime.describe("pkg", ["b", "a"])
    assert described["python"] == platform.python_version() and described["modules"] == ["a", "b"]


def test_exports_are_found_with_their_signatures():
    exports = find_exports(REPO, read_modules(REPO))
    by_name = {e.name: e for e in exports}
    assert by_name["runhub._plpython_runtime"].module == "runtime"
    assert by_name["runhub._plpython_runtime"].returns == "jsonb"


@pytest.mark.parametrize("signature", ["runhub.f", "runhub.f(x) RETURNS int", "f() int"])
def test_bad_signatures_are_refused(signature):
    with pytest.raises(ValueError):
        parse_signature(signature)


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
