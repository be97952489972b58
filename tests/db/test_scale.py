"""A million shops per node: nothing per project in the catalog. Creating projects adds no relation;
an upgrade from a checkout that counted create_run calls in a sequence per project moves them onto
rows in batches (never a lock per project in one transaction), keeping the current minute's counts,
after which pg_dump works on a lock table it overflowed before; `runhub status` reads due digests
through an index, not a scan of every project. (bench/scale.py measures it at a million.)"""
from __future__ import annotations

import subprocess

import psycopg
import pytest
from psycopg import sql

from helpers.db import set_clock
from helpers.files import older_checkout
from runhub_loader.db import queries
from runhub_loader.db.deploy import RETIRE_BATCH, DeployIncomplete, deploy
from runhub_loader.db.status import collect

# The last commit whose create_project made a sequence per project (migrations 0001-0017).
SEQUENCE_PER_PROJECT_COMMIT = "c7e3187"
PG_DUMP = "/usr/lib/postgresql/15/bin/pg_dump"
PG_RESTORE = "/usr/lib/postgresql/15/bin/pg_restore"


def _relations(conn) -> int:
    return conn.execute("SELECT count(*) FROM pg_class").fetchone()[0]


def _create_projects(conn, n: int, batch: int = 200) -> list:
    """n projects through runhub.create_project, `batch` a transaction."""
    ids = []
    for start in range(0, n, batch):
        with conn.transaction():
            ids += [r[0] for r in conn.execute(
                "SELECT runhub.create_project('Shop ' || i, gen_random_uuid(), 'UTC', 'EUR')"
                " FROM generate_series(%s::int, %s::int) i", (start, min(start + batch, n) - 1))]
    return ids


def test_creating_1000_projects_adds_no_relation(conn):
    before = _relations(conn)
    with conn.transaction():  # in one transaction too: nothing to lock per project
        projects = _create_projects(conn, 1000, batch=1000)
    assert len(set(projects)) == 1000
    assert _relations(conn) == before


def _set_counter(conn, project, minute: int, calls: int) -> None:
    """What `calls` create_run calls in `minute` left in a pre-0018 project's sequence."""
    conn.execute("SELECT setval(create_run_counter, (%s::bigint << 20) + %s) FROM runhub.projects WHERE id = %s",
                 (minute, calls, project))


def _dump(url: str, path) -> subprocess.CompletedProcess:
    return subprocess.run([PG_DUMP, "-Fc", "-f", str(path), "--dbname", url], capture_output=True, text=True)


@pytest.mark.slow  # ~10 s: a cluster of its own, 3,000 projects made the old way, a dump and a restore
def test_upgrade_moves_a_sequence_per_project_onto_rows_in_batches(small_lock_cluster, tmp_path):
    cluster = small_lock_cluster
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as admin:
        admin.execute("CREATE DATABASE runhub_upgrade")
    url = cluster.url("runhub_upgrade")
    assert deploy(url, older_checkout(tmp_path, SEQUENCE_PER_PROJECT_COMMIT, "sequence-per-project"), schedule_cron=False).applied_migrations[-1] == "0017_create_run_counter"

    with psycopg.connect(url, autocommit=True) as conn:
        locks = conn.execute("SELECT current_setting('max_locks_per_transaction')::int"
                             " * current_setting('max_connections')::int").fetchone()[0]
        n = 3000  # several times what this cluster's lock table holds
        assert n > 4 * locks
        projects = _create_projects(conn, n)
        assert conn.execute("SELECT count(*) FROM runhub.projects WHERE create_run_counter IS NOT NULL").fetchone()[0] == n
        minute = set_clock(conn, 0)
        _set_counter(conn, projects[0], minute, 9)
        _set_counter(conn, projects[1], minute, 3)
        _set_counter(conn, projects[2], minute - 1, 7)  # an earlier minute: nothing to keep
        with pytest.raises(psycopg.errors.OutOfMemory, match="max_locks_per_transaction"):
            with conn.transaction():  # one lock per project in one transaction does not fit here
                conn.execute("SELECT pg_sequence_last_value(create_run_counter) FROM runhub.projects").fetchall()
    before = _dump(url, tmp_path / "before.dump")
    assert before.returncode != 0 and "max_locks_per_transaction" in before.stderr, "pg_dump failed before"

    upgraded = deploy(url, schedule_cron=False)
    assert upgraded.applied_migrations[0] == "0018_create_run_counts"
    assert upgraded.counters_retired == n

    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute(queries.CREATE_RUN_COUNTERS_LEFT).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM pg_class WHERE relkind = 'S'"
                            " AND relnamespace = 'runhub'::regnamespace AND relname LIKE 'create_run_counter%'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM runhub.projects WHERE create_run_counter IS NOT NULL").fetchone()[0] == 0
        counts = dict(((p, (m, c)) for p, m, c in conn.execute("SELECT project_id, minute, calls FROM runhub.create_run_counts")))
        assert counts == {projects[0]: (minute, 9), projects[1]: (minute, 3)}, "the current minute's counts are kept"
        assert conn.execute("SELECT runhub._now() < to_timestamp((%s + 1) * 60)", (minute,)).fetchone()[0], \
            "the upgrade ran within the minute whose counts it kept"
    after = _dump(url, tmp_path / "after.dump")
    assert after.returncode == 0, f"pg_dump works on the same lock table after: {after.stderr}"
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as admin:
        admin.execute("CREATE DATABASE runhub_restored")
    restore = subprocess.run([PG_RESTORE, "--single-transaction", "--exit-on-error", "--dbname",
                              cluster.url("runhub_restored"), str(tmp_path / "after.dump")], capture_output=True, text=True)
    assert restore.returncode == 0, restore.stderr
    with psycopg.connect(cluster.url("runhub_restored")) as restored:
        assert restored.execute("SELECT count(*) FROM runhub.projects").fetchone()[0] == n
    again = deploy(url, schedule_cron=False)
    assert not again.changed and again.counters_retired == 0


def _leave_counters_unretired(conn, projects) -> None:
    """The state a deploy stopped after its commit leaves: migrated, these projects still counting
    in sequences of their own (as the old create_project made them: owned by runhub_owner)."""
    for project in projects:
        name = sql.Identifier("runhub", "create_run_counter_" + project.hex)
        conn.execute(sql.SQL("CREATE SEQUENCE {}").format(name))
        conn.execute(sql.SQL("ALTER SEQUENCE {} OWNER TO runhub_owner").format(name))
        conn.execute("UPDATE runhub.projects SET create_run_counter = %s::regclass WHERE id = %s",
                     (f"runhub.create_run_counter_{project.hex}", project))


def test_a_stopped_retirement_is_finished_by_the_next_deploy(fresh_db):
    """The deploy commits before it retires counters: projects a stopped one left behind are
    reported by `runhub status` and retired by the next deploy, a no-op otherwise."""
    deploy(fresh_db, schedule_cron=False)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        projects = _create_projects(conn, 600)
        _leave_counters_unretired(conn, projects[100:])
    assert collect(fresh_db)["create_run_counters_left"] == 500
    finished = deploy(fresh_db, schedule_cron=False)
    assert not finished.changed and finished.counters_retired == 500
    assert collect(fresh_db)["create_run_counters_left"] == 0
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("SELECT count(*) FROM runhub.projects WHERE create_run_counter IS NOT NULL").fetchone()[0] == 0


def test_a_retirement_stopped_by_a_held_project_is_reported_and_finished_later(fresh_db, monkeypatch):
    """A project row held past the step's lock timeout stops the retirement: the deploy (committed)
    says so and how to finish, the batches before it stay done, and the next deploy finishes."""
    deploy(fresh_db, schedule_cron=False)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        projects = sorted(_create_projects(conn, 1200))
        _leave_counters_unretired(conn, projects)
    monkeypatch.setenv("PGOPTIONS", "-c lock_timeout=300ms")  # the deploying login's own limit wins
    with psycopg.connect(fresh_db) as holder:  # holds the last project's row, as a stuck client would
        holder.execute("SELECT 1 FROM runhub.projects WHERE id = %s FOR UPDATE", (projects[-1],))
        with pytest.raises(DeployIncomplete, match="run `runhub deploy` again"):
            deploy(fresh_db, schedule_cron=False)
        holder.rollback()
    left = collect(fresh_db)["create_run_counters_left"]
    assert 0 < left <= len(projects) - 2 * RETIRE_BATCH, "the batches committed before it stay done"
    assert deploy(fresh_db, schedule_cron=False).counters_retired == left
    assert collect(fresh_db)["create_run_counters_left"] == 0


def test_status_counts_due_digests_through_the_index(conn):
    """runhub status reads the digests due, and how many projects have them on, without reading
    every project: with sequential scans off, its query's plan has none on runhub.projects."""
    _create_projects(conn, 300)
    conn.execute("UPDATE runhub.projects SET digest_enabled = true, digest_recipient = 'o@example.com',"
                 " digest_next_at = now() - interval '2 hours' WHERE name LIKE 'Shop 1%'")
    conn.execute("ANALYZE runhub.projects")
    with conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + queries.DIGEST_PROJECTS))
    assert "projects_digest_due" in plan and "Seq Scan on projects" not in plan, plan
    row = conn.execute(queries.DIGEST_PROJECTS).fetchone()
    enabled = conn.execute("SELECT count(*) FROM runhub.projects WHERE name LIKE 'Shop 1%'").fetchone()[0]
    assert row == (enabled, False, enabled, enabled)
