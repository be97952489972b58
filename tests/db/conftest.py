"""The database room's fixtures: a real PostgreSQL 15 cluster (pg_cron, plpython3u), runhub deployed
once into a template database, and a fresh clone of it for every test that asks for one.

Everything is lazy: importing this file starts nothing. The first test that needs the cluster takes
the one `scripts/test` started (RUNHUB_TEST_HOME), or starts a throwaway one of its own (destroyed
when the session ends); the first test that needs a database deploys runhub into the template.

The fault tests that restart or crash PostgreSQL use `fault_cluster` / `fault_db_url` /
`fault_conn` instead: a cluster of their own, never the shared one.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from helpers.db import reset_clock, set_clock
from runhub_loader.db.deploy import deploy
from runhub_loader.db.embedded import Cluster

# One template per pytest-xdist worker (scripts/test runs two): each deploys and clones its own.
TEMPLATE = "runhub_test_template" + (f"_{os.environ['PYTEST_XDIST_WORKER']}" if "PYTEST_XDIST_WORKER" in os.environ else "")


def _throwaway_cluster(prefix: str, fast: bool):
    """A new cluster in a temporary folder, started; yields it, then destroys it and the folder."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    home.chmod(0o755)  # the server runs as another user (postgres) when the tests run as root
    cluster = Cluster(home)
    try:
        cluster.start(fast=fast)
        yield cluster
    finally:
        cluster.destroy()
        shutil.rmtree(home, ignore_errors=True)


def _admin(cluster: Cluster):
    return psycopg.connect(cluster.url("postgres"), autocommit=True)


def _create_database(cluster: Cluster, name: str, template: str | None = None) -> None:
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with _admin(cluster) as admin:
        admin.execute(statement)


def _drop_database(cluster: Cluster, name: str) -> None:
    with _admin(cluster) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _deploy_template(cluster: Cluster) -> str:
    """runhub deployed (without cron jobs) into the template database, made anew. One deploy at a
    time per cluster: the first deploys of two databases would both create runhub's roles, which
    belong to the cluster (the second fails on them)."""
    with open(cluster.root / "test-deploy.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _drop_database(cluster, TEMPLATE)
        _create_database(cluster, TEMPLATE)
        deploy(cluster.url(TEMPLATE), schedule_cron=False)
    return TEMPLATE


def _clone(cluster: Cluster, template: str):
    """A database of its own for one test, cloned from the template; dropped afterwards."""
    name = f"runhub_test_{uuid.uuid4().hex[:12]}"
    _create_database(cluster, name, template)
    try:
        yield cluster.url(name)
    finally:
        _drop_database(cluster, name)


# -- the shared cluster ----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def cluster():
    """The shared cluster: scripts/test's (RUNHUB_TEST_HOME), or one started now for this session."""
    home = os.environ.get("RUNHUB_TEST_HOME")
    if home:
        yield Cluster(Path(home))
    else:
        yield from _throwaway_cluster("runhub-pytest-", fast=True)


@pytest.fixture(scope="session")
def template_db(cluster) -> str:
    """The name of the template database: runhub deployed once, cloned by every db_url."""
    name = _deploy_template(cluster)
    yield name
    _drop_database(cluster, name)


@pytest.fixture
def db_url(cluster, template_db) -> str:
    """URL of this test's own freshly deployed database."""
    yield from _clone(cluster, template_db)


@pytest.fixture
def conn(db_url):
    """An autocommit connection to this test's database, as the deploying superuser."""
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


@pytest.fixture
def fresh_db(cluster, template_db):
    """An empty database with nothing deployed, dropped afterwards (with its cron jobs). After the
    template's deploy (template_db): runhub's roles, the cluster's, exist before a test deploys here."""
    name = f"runhub_empty_{uuid.uuid4().hex[:10]}"
    _create_database(cluster, name)
    yield cluster.url(name)
    from runhub_loader.db.cron import unschedule_cron_jobs

    unschedule_cron_jobs(cluster.url(name))
    _drop_database(cluster, name)


@pytest.fixture
def open_sessions(db_url):
    """open_sessions(n): n autocommit connections, opened before any race starts; closed afterwards."""
    from helpers.workflows import connect

    opened = []

    def make(n):
        conns = [connect(db_url) for _ in range(n)]
        opened.extend(conns)
        return conns

    yield make
    for c in opened:
        c.close()


@pytest.fixture
def login_as(db_url, conn):
    """login_as('runhub_app') -> the URL of a fresh LOGIN role granted only that runhub role, for
    this test's database: calls then go through the grants a deployment gives that component.
    Roles are cluster-wide, so each is named uniquely and dropped afterwards."""
    made = []

    def make(*granted: str) -> str:
        name = f"login_{'_'.join(g.removeprefix('runhub_') for g in granted)}_{uuid.uuid4().hex[:8]}"
        conn.execute(f'CREATE ROLE "{name}" LOGIN')
        for role in granted:
            conn.execute(f'GRANT "{role}" TO "{name}"')
        made.append(name)
        return make_conninfo(db_url, user=name)

    yield make
    for name in made:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,))
        conn.execute(f'DROP ROLE "{name}"')


@pytest.fixture
def db_clock(conn):
    """db_clock(second=0) -> minute: set_clock on this test's database; the clock is put back
    to the real time when the test ends."""
    yield lambda second=0.0: set_clock(conn, second)
    reset_clock(conn)


# -- a cluster the fault tests may restart or crash ------------------------------------------------

@pytest.fixture(scope="session")
def fault_cluster():
    """A cluster of the fault tests' own, in a temporary folder, destroyed at the end of the session:
    they restart it (`pg_ctl restart`, or `-m immediate`: a crash), which the shared one never is.
    Not a fast cluster: fsync and synchronous_commit on, as in production."""
    yield from _throwaway_cluster("runhub-pytest-faults-", fast=False)


@pytest.fixture(scope="session")
def fault_template_db(fault_cluster) -> str:
    yield _deploy_template(fault_cluster)  # the cluster and its databases go with fault_cluster


@pytest.fixture
def fault_db_url(fault_cluster, fault_template_db) -> str:
    """URL of this test's own freshly deployed database on fault_cluster."""
    yield from _clone(fault_cluster, fault_template_db)


@pytest.fixture
def fault_conn(fault_db_url):
    """An autocommit connection to this test's database on fault_cluster."""
    with psycopg.connect(fault_db_url, autocommit=True) as c:
        yield c


# -- a cluster with a small lock table --------------------------------------------------------------

@pytest.fixture
def small_lock_cluster():
    """A cluster of its own whose shared lock table holds a few hundred locks (PostgreSQL's stock one
    holds ~12,000): what would take one lock per project in one transaction fails on it with a few
    thousand projects instead of tens of thousands. Destroyed afterwards."""
    for cluster in _throwaway_cluster("runhub-pytest-locks-", fast=True):
        with _admin(cluster) as admin:
            admin.execute("ALTER SYSTEM SET max_locks_per_transaction = 10")
            admin.execute("ALTER SYSTEM SET max_connections = 20")
        cluster.restart()
        yield cluster


# -- a proxy over four partitions on two clusters --------------------------------------------------

@dataclass
class Sharded:
    """A proxy database (on the shared cluster) and its shards: partitions 0 and 1 on the shared
    cluster, 2 and 3 on shard_cluster. cluster_of[p] is the Cluster partition p lives on."""
    proxy_url: str
    shard_urls: list[str]
    clusters: list

    def shard(self, partition: int, **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.shard_urls[partition], autocommit=True, **kwargs)

    def partition_of(self, project) -> int:
        with psycopg.connect(self.proxy_url, autocommit=True) as proxy:
            return proxy.execute("SELECT runhub_proxy.partition_of(%s)", (project,)).fetchone()[0]


def _rollback_prepared(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for (gid,) in conn.execute("SELECT gid FROM pg_prepared_xacts WHERE database = current_database()").fetchall():
            conn.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)))


def new_database(cluster: Cluster, template: str | None, dropped: list) -> str:
    name = f"runhub_shard_{uuid.uuid4().hex[:10]}"
    _create_database(cluster, name, template)
    dropped.append((cluster, name))
    return cluster.url(name)


def drop_databases(dropped: list) -> None:
    for cluster, name in reversed(dropped):
        _rollback_prepared(cluster.url(name))  # a database with a prepared transaction cannot be dropped
        _drop_database(cluster, name)


@pytest.fixture(scope="session")
def shard_cluster():
    """The second cluster of the sharded tests (two of the four partitions live there)."""
    yield from _throwaway_cluster("runhub-pytest-shards-", fast=True)


@pytest.fixture(scope="session")
def shard_template_db(shard_cluster) -> str:
    yield _deploy_template(shard_cluster)


@pytest.fixture(scope="session")
def sharded(cluster, template_db, shard_cluster, shard_template_db):
    """The session's proxy over 4 partitions on two clusters, deployed by `runhub proxy deploy`'s
    code. Tests make projects of their own on it (the directory spreads them by id)."""
    from runhub_loader.proxy.deploy import deploy_proxy

    dropped: list = []
    clusters = [cluster, cluster, shard_cluster, shard_cluster]
    templates = {id(cluster): template_db, id(shard_cluster): shard_template_db}
    try:
        shards = [new_database(c, templates[id(c)], dropped) for c in clusters]
        proxy = new_database(cluster, None, dropped)
        deploy_proxy(proxy, shards)
        yield Sharded(proxy, shards, clusters)
    finally:
        drop_databases(dropped)


@pytest.fixture(scope="session")
def proxy_login(sharded, cluster, shard_cluster):
    """proxy_login('app') -> the URL of a login made by `runhub login-role NAME --component app` on
    the proxy (and so on every shard), connecting to the proxy. Dropped at the session's end."""
    from click.testing import CliRunner

    from runhub_loader import cli

    made: dict[str, str] = {}

    def make(component: str) -> str:
        if component not in made:
            name = f"proxy_{component}_{uuid.uuid4().hex[:8]}"
            result = CliRunner().invoke(cli.main, ["login-role", name, "--component", component,
                                                   "--database-url", sharded.proxy_url])
            assert result.exit_code == 0, result.output
            made[component] = name
        return make_conninfo(sharded.proxy_url, user=made[component])

    yield make
    for c in (cluster, shard_cluster):
        with _admin(c) as admin:
            for name in made.values():
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,))
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
