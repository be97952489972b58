"""The loader: idempotent deploys, upgrades from an older checkout, atomic failure, pg_cron jobs."""
from __future__ import annotations

import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from helpers.db import event, ingest, new_project
from helpers.files import REPO, checkout_copy, older_checkout
from runhub_loader.cli import main as cli
from runhub_loader.db.deploy import DeployError, deploy

# The first commit with a deployable tree (migration 0001 only): the "older checkout".
FOUNDATION_COMMIT = "ea3d50cde48ee7fcf7ed7655a9750083bab0085b"
PG_DUMP = "/usr/lib/postgresql/15/bin/pg_dump"


def schema_dump(url: str) -> str:
    """The schema as pg_dump sees it (no data, no ownership noise)."""
    out = subprocess.run([PG_DUMP, "--schema-only", "--no-owner", "--dbname", url],
                         check=True, capture_output=True, text=True).stdout
    noise = ("-- Dumped", "\\restrict", "\\unrestrict")  # version banners and per-dump random keys
    return "\n".join(line for line in out.splitlines() if not line.startswith(noise))


def row_counts(url: str) -> dict:
    with psycopg.connect(url) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("runhub.deployments", "runhub.plpython_modules", "_yoyo_migration", "_yoyo_log")}


def cron_jobs(cluster, dbname: str) -> dict:
    with psycopg.connect(cluster.url("postgres")) as conn:
        rows = conn.execute("SELECT jobname, jobid, schedule, command, database FROM cron.job WHERE starts_with(jobname, %s)",
                            (f"runhub:{dbname}:",)).fetchall()
    return {r[0]: r[1:] for r in rows}


MIGRATIONS = sorted(p.stem for p in (REPO / "migrations").glob("*.sql"))


def test_deploying_twice_changes_nothing(fresh_db):
    first = deploy(fresh_db)
    assert first.changed and first.applied_migrations == MIGRATIONS
    before_schema, before_rows = schema_dump(fresh_db), row_counts(fresh_db)
    second = deploy(fresh_db)
    assert not second.changed and second.applied_migrations == []
    assert schema_dump(fresh_db) == before_schema
    assert row_counts(fresh_db) == before_rows


def test_upgrade_from_an_older_checkout(fresh_db, cluster, tmp_path):
    old = older_checkout(tmp_path, FOUNDATION_COMMIT, "old")
    assert deploy(fresh_db, old).applied_migrations == ["0001_foundation"]
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        project, owner = new_project(conn)

    upgraded = deploy(fresh_db)
    assert upgraded.applied_migrations == MIGRATIONS[1:]
    with psycopg.connect(fresh_db, autocommit=True) as conn:  # old data survives, new API works on it
        assert conn.execute("SELECT owner_id FROM runhub.projects WHERE id = %s", (project,)).fetchone()[0] == owner
        assert ingest(conn, project, event())["inserted"]

    reference = f"runhub_ref_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{reference}"')
    try:
        deploy(cluster.url(reference), schedule_cron=False)
        assert schema_dump(fresh_db) == schema_dump(cluster.url(reference)), "upgrade must equal a fresh install"
    finally:
        with psycopg.connect(cluster.url("postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{reference}" WITH (FORCE)')


def test_a_failing_deploy_leaves_the_database_as_it_was(fresh_db, tmp_path):
    deploy(fresh_db)
    before_schema, before_rows = schema_dump(fresh_db), row_counts(fresh_db)
    broken = checkout_copy(tmp_path)
    (broken / "migrations" / "0099_new_table.sql").write_text(
        "-- depends: 0002_business_events\nCREATE TABLE runhub.brand_new (id int);\n")
    (broken / "sql" / "50_new_function.sql").write_text(
        "CREATE FUNCTION runhub.brand_new_fn() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;\n")
    (broken / "sql" / "99_broken.sql").write_text("CREATE FUNCTION runhub.oops( RETURNS;\n")
    with pytest.raises(DeployError, match="99_broken.sql"):
        deploy(fresh_db, broken)
    assert schema_dump(fresh_db) == before_schema
    assert row_counts(fresh_db) == before_rows


def test_functions_no_file_defines_any_more_are_dropped(fresh_db, tmp_path):
    """An overload left behind by a signature change, or a function since removed from sql/, is
    dropped by the next deploy (CREATE OR REPLACE alone would keep it), so an upgraded database
    equals a fresh one. One that something still depends on stops the deploy, naming it."""
    deploy(fresh_db, schedule_cron=False)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("CREATE FUNCTION runhub.process_runs(p_max int, p_old text) RETURNS int LANGUAGE sql AS 'SELECT 1'")
        conn.execute("CREATE FUNCTION runhub.retired_helper() RETURNS int LANGUAGE sql AS 'SELECT 2'")
    changed = checkout_copy(tmp_path)
    (changed / "sql" / "50_new_function.sql").write_text(
        "CREATE OR REPLACE FUNCTION runhub.brand_new_fn() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;\n")
    assert deploy(fresh_db, changed, schedule_cron=False).changed
    with psycopg.connect(fresh_db) as conn:
        names = {r[0] for r in conn.execute(
            "SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = 'runhub'::regnamespace")}
    assert "runhub.retired_helper()" not in names
    assert "runhub.process_runs(integer,text)" not in names
    assert {"runhub.process_runs(integer)", "runhub.brand_new_fn()"} <= names

    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("CREATE FUNCTION runhub.still_used() RETURNS int LANGUAGE sql AS 'SELECT 3'")
        conn.execute("CREATE VIEW public.uses_it AS SELECT runhub.still_used() AS n")
    before = schema_dump(fresh_db)
    (changed / "sql" / "50_new_function.sql").write_text(
        "CREATE OR REPLACE FUNCTION runhub.brand_new_fn() RETURNS int LANGUAGE sql AS $$ SELECT 4 $$;\n")
    with pytest.raises(DeployError, match=r"dropping functions no longer defined.*still_used"):
        deploy(fresh_db, changed, schedule_cron=False)
    assert schema_dump(fresh_db) == before


def test_a_failing_first_deploy_creates_no_runhub_schema(fresh_db, tmp_path):
    broken = checkout_copy(tmp_path)
    (broken / "sql" / "99_broken.sql").write_text("SELECT 1/0;\n")
    with pytest.raises(DeployError, match="division by zero"):
        deploy(fresh_db, broken)
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("SELECT to_regnamespace('runhub')").fetchone()[0] is None
        assert conn.execute("SELECT count(*) FROM _yoyo_migration").fetchone()[0] == 0


def test_concurrent_deploys_apply_once(fresh_db):
    results, errors = [], []
    barrier = threading.Barrier(3)

    def run():
        barrier.wait()
        try:
            results.append(deploy(fresh_db, schedule_cron=False))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert sorted(r.changed for r in results) == [False, False, True]
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("SELECT count(*) FROM runhub.deployments").fetchone()[0] == 1


def test_cron_jobs_are_registered_by_name_and_kept_in_step(fresh_db, cluster, tmp_path):
    dbname = psycopg.conninfo.conninfo_to_dict(fresh_db)["dbname"]
    report = deploy(fresh_db).cron
    assert report.available and f"runhub:{dbname}:purge-cron-history" in report.scheduled
    jobs = cron_jobs(cluster, dbname)
    jobid, schedule, command, database = jobs[f"runhub:{dbname}:purge-cron-history"]
    assert database == "postgres" and "job_run_details" in command

    assert deploy(fresh_db).cron.unchanged == report.scheduled
    assert cron_jobs(cluster, dbname)[f"runhub:{dbname}:purge-cron-history"][0] == jobid

    changed = checkout_copy(tmp_path)
    cron_sql = changed / "sql" / "95_cron.sql"
    cron_sql.write_text(cron_sql.read_text().replace("'17 3 * * *'", "'42 4 * * *'"))
    assert deploy(fresh_db, changed).cron.scheduled == [f"runhub:{dbname}:purge-cron-history"]
    assert cron_jobs(cluster, dbname)[f"runhub:{dbname}:purge-cron-history"][1] == "42 4 * * *"


def test_status_reports_version_pending_cron_and_tables(fresh_db):
    runner = CliRunner()
    before = runner.invoke(cli, ["--database-url", fresh_db, "status"])
    assert before.exit_code == 0, before.output
    assert "nothing yet" in before.output and f"{len(MIGRATIONS)} pending" in before.output
    assert runner.invoke(cli, ["--database-url", fresh_db, "deploy"]).exit_code == 0
    after = runner.invoke(cli, ["--database-url", fresh_db, "status"])
    assert after.exit_code == 0, after.output
    assert "matches this checkout" in after.output and "0 pending" in after.output
    assert "purge-cron-history" in after.output and "business_events" in after.output
    assert "Python 3." in after.output


def test_cron_jobs_of_similarly_named_databases_stay_apart(cluster, template_db):
    """'_' is a LIKE wildcard: shop_1's jobs must not be mistaken for shopX1's. (template_db: the
    cluster's runhub roles exist before these deploys, as conftest's fresh_db says.)"""
    from runhub_loader.db.cron import unschedule_cron_jobs

    suffix = uuid.uuid4().hex[:8]
    names = [f"shop_1{suffix}", f"shopX1{suffix}"]
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as admin:
        for name in names:
            admin.execute(f'CREATE DATABASE "{name}"')
    try:
        for name in names:
            deploy(cluster.url(name))
        removed = unschedule_cron_jobs(cluster.url(names[0]))
        assert removed and all(name.startswith(f"runhub:{names[0]}:") for name in removed)
        kept = cron_jobs(cluster, names[1])
        assert len(kept) == len(removed) and all(name.startswith(f"runhub:{names[1]}:") for name in kept)
    finally:
        with psycopg.connect(cluster.url("postgres"), autocommit=True) as admin:
            for name in names:
                unschedule_cron_jobs(cluster.url(name))
                admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_database_url_and_home_are_taken_after_the_command_too(fresh_db, tmp_path):
    runner = CliRunner()
    deployed = runner.invoke(cli, ["deploy", "--no-cron", "--database-url", fresh_db])
    assert deployed.exit_code == 0 and "deployed runhub" in deployed.output, deployed.output
    # After the command it wins over the same option before it (and over $DATABASE_URL).
    status = runner.invoke(cli, ["--database-url", "postgresql://nobody@127.0.0.1:1/none", "status",
                                 "--database-url", fresh_db], env={"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"})
    assert status.exit_code == 0 and "0 pending" in status.output, status.output
    missing = runner.invoke(cli, ["db", "url", "--home", str(tmp_path / "no-cluster")])
    assert missing.exit_code != 0 and str(tmp_path / "no-cluster") in missing.output


@pytest.mark.slow
def test_the_wheel_deploys_from_outside_the_checkout(fresh_db, tmp_path):
    """`pip install` of the built wheel into a fresh virtualenv elsewhere, then `runhub deploy`:
    the migrations, SQL and PL/Python ship inside the wheel, not beside a checkout."""
    import site
    import sys

    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info beside the sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for folder in ("runhub_loader", "migrations", "sql", "plpython", "proxy"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(source)],
                   check=True, cwd=tmp_path, capture_output=True)
    (wheel,) = wheels.glob("runhub-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True)
    # Its dependencies from this virtualenv's site-packages (no network), not runhub itself.
    venv_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                    check=True, capture_output=True, text=True).stdout.strip())
    (venv_site / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(python), "-c", "import runhub_loader, runhub_loader.assets as a, "
                            "runhub_loader.proxy.deploy as p; print(runhub_loader.__file__); print(a.DEFAULT_SOURCE); "
                            "print(*sorted(x.name for x in p.PROXY_FOLDER.glob('*/*.sql')))"],
                           check=True, capture_output=True, text=True, cwd=elsewhere).stdout.split()
    where, shipped = where[:2], where[2:]
    assert all(str(venv) in line and str(REPO) not in line for line in where), where
    assert {"0001_proxy.sql", "10_routing.sql", "90_grants.sql"} <= set(shipped), shipped  # the proxy's too
    result = subprocess.run([str(venv / "bin" / "runhub"), "--log-format", "text", "deploy", "--no-cron",
                             "--database-url", fresh_db], capture_output=True, text=True, cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert f"migrations applied: {', '.join(MIGRATIONS)}" in result.stdout, result.stdout
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("SELECT count(*) FROM runhub.plpython_modules").fetchone()[0] > 0
        assert conn.execute("SELECT to_regprocedure('runhub.ingest_event(uuid, jsonb)') IS NOT NULL").fetchone()[0]
