"""`runhub db`: a private cluster run by an unprivileged user, on a socket and loopback only."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import re
import shutil
import stat
import tempfile
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from helpers.db import event, ingest, new_project
from runhub_loader.cli import main as cli
from runhub_loader.db.embedded import Cluster, EmbeddedError, free_port

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")


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


# -- the fallback folder in /var/tmp, where any local user may plant things for root to chown --------

def owner_group_mode(path: Path) -> tuple[str, int, int]:
    st = os.lstat(path)
    return pwd.getpwuid(st.st_uid).pw_name, st.st_gid, stat.S_IMODE(st.st_mode)


def snapshot(folder: Path) -> dict[str, tuple]:
    """Owner, group and mode of a folder and of each entry in it (never following a symlink)."""
    return {entry.name: owner_group_mode(entry) for entry in [folder, *folder.iterdir()]}


def give_to(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)


@pytest.fixture
def unreachable_home():
    """A home under a 700 folder, like a checkout in /root: the server's user cannot reach it."""
    private = Path(tempfile.mkdtemp(prefix="runhub-private-"))
    home = private / ".runhub"
    home.mkdir()
    yield home
    with contextlib.suppress(EmbeddedError):
        Cluster(home).destroy()
    shutil.rmtree(private)


@pytest.fixture
def victim():
    """A folder of root's, outside any cluster, that a planted symlink points at."""
    folder = Path(tempfile.mkdtemp(prefix="runhub-victim-"))
    folder.chmod(0o755)
    (folder / "passwd").write_text("root:x:0:0\n")
    yield folder
    shutil.rmtree(folder)


@pytest.fixture
def recorded_root(unreachable_home):
    """A fallback folder in /var/tmp that db.json records, as for a cluster made earlier."""
    root = Path(tempfile.mkdtemp(prefix="runhub-", dir="/var/tmp"))
    (unreachable_home / "db.json").write_text(json.dumps({"root": str(root), "port": free_port(), "password": "x"}))
    yield root
    if root.is_symlink():
        root.unlink()
    else:
        shutil.rmtree(root, ignore_errors=True)


@as_root
def test_a_home_the_server_user_cannot_reach_gets_a_new_private_folder_in_var_tmp(unreachable_home, victim):
    # What older versions used: a name anyone could compute and plant first.
    predictable = Path("/var/tmp") / f"runhub-{hashlib.sha256(str(unreachable_home).encode()).hexdigest()[:12]}"
    predictable.mkdir()
    (predictable / "pgdata").symlink_to(victim)
    for path in (predictable, predictable / "pgdata"):
        give_to(path, "nobody")
    planted = snapshot(predictable), snapshot(victim)
    cluster = Cluster(unreachable_home)
    try:
        cluster.start(fast=True)
        root = cluster.root
        assert root.parent == Path("/var/tmp") and root.name.startswith("runhub-") and root != predictable
        for folder in (root, cluster.datadir, cluster.socketdir):
            assert owner_group_mode(folder) == ("postgres", pwd.getpwnam("postgres").pw_gid, 0o700), folder
        with psycopg.connect(cluster.url("postgres")) as conn:
            assert conn.execute("SELECT 1").fetchone()[0] == 1
        cluster.stop()
        cluster.start(fast=True)  # a restart finds (and re-checks) the folder db.json records
        assert cluster.root == root
        with psycopg.connect(cluster.url("postgres")) as conn:
            assert conn.execute("SELECT 1").fetchone()[0] == 1
        assert (snapshot(predictable), snapshot(victim)) == planted, "the planted folder was left alone"
    finally:
        cluster.destroy()
        shutil.rmtree(predictable)
    assert not root.exists()


def plant_symlinked_root(root: Path, victim: Path) -> Path:
    root.rmdir()  # the folder vanished (a tmp cleaner, say) and someone put a symlink in its place
    root.symlink_to(victim)
    give_to(root, "nobody")
    return root


def plant_foreign_root(root: Path, victim: Path) -> Path:
    give_to(root, "nobody")
    return root


def plant_symlinked_pgdata(root: Path, victim: Path) -> Path:
    give_to(root, "postgres")
    (root / "pgdata").symlink_to(victim)
    return root / "pgdata"


def plant_foreign_pgdata(root: Path, victim: Path) -> Path:
    give_to(root, "postgres")
    (root / "pgdata").mkdir()
    give_to(root / "pgdata", "nobody")
    return root / "pgdata"


def plant_symlinked_run_beside_a_cluster(root: Path, victim: Path) -> Path:
    """pgdata looks initialised, so start takes the restart path, which must re-check too."""
    give_to(root, "postgres")
    (root / "pgdata").mkdir(mode=0o700)
    (root / "pgdata" / "PG_VERSION").write_text("15\n")
    for path in (root / "pgdata", root / "pgdata" / "PG_VERSION"):
        give_to(path, "postgres")
    (root / "run").symlink_to(victim)
    return root / "run"


@as_root
@pytest.mark.parametrize("plant,why", [
    (plant_symlinked_root, "it is a symlink"),
    (plant_foreign_root, "it is owned by nobody"),
    (plant_symlinked_pgdata, "it is a symlink"),
    (plant_foreign_pgdata, "it is owned by nobody"),
    (plant_symlinked_run_beside_a_cluster, "it is a symlink"),
], ids=["symlinked-root", "foreign-root", "symlinked-pgdata", "foreign-pgdata", "symlinked-run"])
def test_a_planted_fallback_path_is_refused_and_nothing_is_chowned(unreachable_home, recorded_root, victim,
                                                                   plant, why):
    planted = plant(recorded_root, victim)
    before = snapshot(victim), owner_group_mode(planted)
    cluster = Cluster(unreachable_home)
    with pytest.raises(EmbeddedError, match=f"refusing {re.escape(str(planted))}: {why}"):
        cluster.start(fast=True)
    assert (snapshot(victim), owner_group_mode(planted)) == before
    assert not cluster.running()
    cluster.destroy()  # forgets the cluster; deletes nothing through the planted path
    assert snapshot(victim) == before[0] and (victim / "passwd").read_text() == "root:x:0:0\n"
    assert not cluster.state_file.exists()


@as_root
@pytest.mark.parametrize("tamper", ["owned by postgres", "a symlink"])
def test_a_db_json_someone_else_wrote_is_refused(unreachable_home, victim, tamper):
    """The home may belong to the server's user; db.json says which folders root chowns."""
    state = unreachable_home / "db.json"
    forged = victim / "forged.json"
    forged.write_text(json.dumps({"root": str(victim), "port": free_port(), "password": "x"}))
    if tamper == "a symlink":
        state.symlink_to(forged)
    else:
        shutil.copy(forged, state)
        give_to(state, "postgres")
    before = snapshot(victim)
    with pytest.raises(EmbeddedError, match=f"refusing {re.escape(str(state))}: it is {tamper}"):
        Cluster(unreachable_home).start(fast=True)
    assert snapshot(victim) == before
    state.unlink()


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


# -- a home someone else planted -----------------------------------------------------------------------

@pytest.fixture
def sticky_folder():
    """A world-writable sticky folder, like /tmp, where another local user can plant a name first."""
    folder = Path(tempfile.mkdtemp(prefix="runhub-sticky-"))
    folder.chmod(0o1777)
    yield folder
    shutil.rmtree(folder)


@pytest.fixture
def victim_cluster_files(victim):
    """The victim folder laid out as a cluster's home: what `db destroy` would delete through a link."""
    (victim / "pgdata").mkdir()
    (victim / "pgdata" / "PG_VERSION").write_text("15\n")
    (victim / "run").mkdir()
    (victim / "db.json").write_text(json.dumps({"root": str(victim), "port": free_port(), "password": "x"}))
    return victim


@as_root
@pytest.mark.parametrize("command", [["db", "start", "--fast"], ["db", "destroy", "--yes"], ["db", "status"], ["db", "stop"]])
def test_a_home_that_is_a_symlink_another_user_planted_is_refused_and_its_target_untouched(
        sticky_folder, victim_cluster_files, command):
    """RUNHUB_HOME names a symlink another user planted in a sticky world-writable folder, pointing at
    a folder of root's: start chowned the target and made pgdata in it, destroy deleted its pgdata/,
    run/ and db.json. The home is checked itself now, before anything is resolved or read."""
    home = sticky_folder / "runhub-home"
    home.symlink_to(victim_cluster_files)
    give_to(home, "nobody")
    before = snapshot(victim_cluster_files), sorted(p.name for p in victim_cluster_files.rglob("*"))
    result = CliRunner().invoke(cli, ["--home", str(home), *command])
    assert result.exit_code != 0
    assert f"refusing {home}: it is a symlink" in result.output
    assert (snapshot(victim_cluster_files), sorted(p.name for p in victim_cluster_files.rglob("*"))) == before
    result = CliRunner(env={"RUNHUB_HOME": str(home)}).invoke(cli, command)  # the same through the variable
    assert result.exit_code != 0 and f"refusing {home}: it is a symlink" in result.output
    assert (snapshot(victim_cluster_files), sorted(p.name for p in victim_cluster_files.rglob("*"))) == before


@as_root
def test_a_home_another_user_owns_is_refused(sticky_folder):
    home = sticky_folder / "runhub-home"
    home.mkdir()
    give_to(home, "nobody")
    before = owner_group_mode(home)
    for command in (["db", "start", "--fast"], ["db", "destroy", "--yes"]):
        result = CliRunner().invoke(cli, ["--home", str(home), *command])
        assert result.exit_code != 0 and f"refusing {home}: it is owned by nobody" in result.output, result.output
    assert owner_group_mode(home) == before and not any(home.iterdir())
