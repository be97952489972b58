"""`runhub db`: a private cluster run by an unprivileged user, on a socket and loopback only."""
from __future__ import annotations

import os
import pwd
import stat
import tempfile
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from conftest import event, ingest, new_project
from runhub_loader.cli import main as cli
from runhub_loader.embedded import Cluster


@pytest.fixture
def home():
    folder = Path(tempfile.mkdtemp(prefix="runhub-embedded-"))
    folder.chmod(0o755)
    yield folder / ".runhub"
    Cluster(folder / ".runhub").destroy()


def invoke(home: Path, *args: str):
    return CliRunner().invoke(cli, ["--home", str(home), *args], catch_exceptions=False)


def test_start_is_idempotent_and_the_cluster_is_private(home):
    first = invoke(home, "db", "start")
    assert first.exit_code == 0, first.output
    second = invoke(home, "db", "start")
    assert second.exit_code == 0 and second.output == first.output  # same URL, nothing re-created
    cluster = Cluster(home)
    with psycopg.connect(cluster.url()) as conn:
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('listen_addresses', 'shared_preload_libraries', 'cron.database_name', 'TimeZone')").fetchall())
        assert settings == {"listen_addresses": "127.0.0.1", "shared_preload_libraries": "pg_cron",
                            "cron.database_name": "postgres", "TimeZone": "UTC"}
    if os.geteuid() == 0:  # PostgreSQL refuses root: the server must run as the unprivileged user
        assert pwd.getpwuid(cluster.datadir.stat().st_uid).pw_name == "postgres"
    assert stat.S_IMODE(cluster.socketdir.stat().st_mode) == 0o700, "only the server's user may use the socket"


def test_tcp_needs_the_generated_password(home):
    invoke(home, "db", "start")
    cluster = Cluster(home)
    url = invoke(home, "db", "url", "--tcp").output.strip()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT inet_server_addr()::text").fetchone()[0] == "127.0.0.1/32"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(f"postgresql://postgres:wrong@127.0.0.1:{cluster.port}/runhub").close()


def test_status_stop_and_restart_keep_the_data(home):
    assert invoke(home, "db", "status").exit_code == 3  # not created yet
    invoke(home, "db", "start")
    status = invoke(home, "db", "status", "--json")
    assert status.exit_code == 0 and '"running": true' in status.output
    url = Cluster(home).url()
    invoke(home, "--database-url", url, "deploy")
    with psycopg.connect(url, autocommit=True) as conn:
        project, _ = new_project(conn)
        ingest(conn, project, event(key="kept"))
    assert invoke(home, "db", "stop").exit_code == 0
    assert invoke(home, "db", "status").exit_code == 3
    invoke(home, "db", "start")
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM runhub.business_events WHERE idempotency_key = 'kept'").fetchone()[0] == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_a_home_the_server_user_cannot_reach_moves_the_data_aside():
    private = Path(tempfile.mkdtemp(prefix="runhub-private-"))  # mode 700, like /root
    cluster = Cluster(private / ".runhub")
    try:
        cluster.start(fast=True)
        assert cluster.datadir.is_relative_to("/var/tmp"), cluster.datadir
        with psycopg.connect(cluster.url("postgres")) as conn:
            assert conn.execute("SELECT 1").fetchone()[0] == 1
    finally:
        cluster.destroy()


def test_commands_without_a_database_say_how_to_get_one(home, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    result = CliRunner().invoke(cli, ["--home", str(home), "status"])
    assert result.exit_code != 0 and "runhub db start" in result.output


def test_deploy_without_pg_cron_says_so_and_everything_else_works(home):
    cluster = Cluster(home)
    cluster.start(fast=True, cron=False)
    result = invoke(home, "--database-url", cluster.url(), "deploy")
    assert result.exit_code == 0, result.output
    assert "cron: NOT scheduled: pg_cron is not in shared_preload_libraries" in result.output
    assert "17 3 * * *" in result.output and "job_run_details" in result.output
    status = invoke(home, "--database-url", cluster.url(), "status")
    assert "cron         unavailable" in status.output
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        project, _ = new_project(conn)
        assert ingest(conn, project, event())["inserted"]
