"""The database room's fixtures: a real PostgreSQL 15 cluster (pg_cron, plpython3u), runhub deployed
once into a template database, and a fresh clone of it for every test that asks for one.

The template and the clones are pytest-postgresql's: `postgresql_noproc` (no process of its own: it
points at a cluster runhub's embedded `Cluster` runs) makes the template database and fills it with
its `load` step, runhub's deploy; `postgresql` clones it for each test (a connection to the clone,
dropped afterwards); its `DatabaseJanitor` makes and drops the other databases the tests ask for. The
clusters stay runhub's own (see tests/README.md): the server must run as the `postgres` OS user,
and the fault tests restart and crash theirs.

Everything is lazy: importing this file starts nothing. The first test that needs the cluster takes
the one `scripts/test` started (RUNHUB_TEST_HOME), or starts a throwaway one of its own (destroyed
when the session ends); the first test that needs a database deploys runhub into the template.

The fault tests that restart or crash PostgreSQL use `fault_cluster` / `fault_db_url` /
`fault_conn` instead: a cluster of their own, never the shared one.
"""
from __future__ import annotations

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
from pytest_postgresql import factories
from pytest_postgresql.janitor import DatabaseJanitor

from helpers.db import reset_clock, set_clock
from helpers.scratch import fast_cluster_parent
from runhub_loader.db.deploy import deploy
from runhub_loader.db.embedded import SUPERUSER, Cluster

# pytest-postgresql's names: the template is DBNAME_tmpl and each test's clone DBNAME, with the
# pytest-xdist worker's id after DBNAME (runhub_testgw0_tmpl, runhub_testgw0): one of each per worker.
DBNAME = "runhub_test"
# Held (pg_advisory_lock, in the cluster's `postgres` database) by the deploy into a template.
DEPLOY_LOCK = 0x72756E68


def _throwaway_cluster(prefix: str, fast: bool):
    """A new cluster in a temporary folder, started; yields it, then destroys it and the folder. A
    fast one (fsync off) lives on a tmpfs where there is one (helpers/scratch.py: clones cost a
    tenth there); the others on disk."""
    home = Path(tempfile.mkdtemp(prefix=prefix, dir=fast_cluster_parent() if fast else None))
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


@dataclass(frozen=True)
class Server:
    """One of runhub's clusters as pytest-postgresql reads a server: postgresql_noproc(depends_on=...)
    takes these attributes from the fixture it names (the socket folder as host, the port, the
    superuser). template_dbname is None: the template database it makes is a plain CREATE DATABASE."""
    host: str
    port: int
    user: str = SUPERUSER
    password: str | None = None
    options: str = ""
    maintenance_dbname: str = "postgres"
    template_dbname: str | None = None

    @classmethod
    def of(cls, cluster: Cluster) -> "Server":
        return cls(host=str(cluster.socketdir), port=cluster.port)

    def janitor(self, dbname: str, template: str | None = None) -> DatabaseJanitor:
        """pytest-postgresql's janitor of one database: init() creates it (a clone of `template`, if
        given), drop() drops it, closing its connections first."""
        return DatabaseJanitor(user=self.user, host=self.host, port=self.port, dbname=dbname,
                               template_dbname=template, maintenance_dbname=self.maintenance_dbname)


def deploy_template(*, host, port, user, dbname, **_) -> None:
    """postgresql_noproc's load step: runhub deployed (without cron jobs) into the template database.
    One deploy at a time per cluster: the first deploys of two databases (two pytest-xdist workers'
    templates) would both create runhub's roles, which belong to the cluster (the second fails on them)."""
    with psycopg.connect(host=host, port=port, user=user, dbname="postgres", autocommit=True) as lock:
        lock.execute("SELECT pg_advisory_lock(%s)", (DEPLOY_LOCK,))
        deploy(make_conninfo(host=host, port=port, user=user, dbname=dbname), schedule_cron=False)


def _clone_url(cluster: Cluster, connection: psycopg.Connection) -> str:
    return cluster.url(connection.info.dbname)


def _autocommit(connection: psycopg.Connection) -> psycopg.Connection:
    connection.autocommit = True
    return connection


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
def cluster_server(cluster) -> Server:
    """The shared cluster, as pytest-postgresql's fixtures reach it."""
    return Server.of(cluster)


# The template (runhub deployed once per worker) and each test's clone of it, as a connection.
postgresql_noproc = factories.postgresql_noproc(dbname=DBNAME, load=[deploy_template], depends_on="cluster_server")
postgresql = factories.postgresql("postgresql_noproc")


@pytest.fixture(scope="session")
def template_db(postgresql_noproc) -> str:
    """The name of the template database: runhub deployed once, cloned by every db_url."""
    return postgresql_noproc.template_dbname


@pytest.fixture
def db_url(cluster, postgresql) -> str:
    """URL of this test's own freshly deployed database."""
    return _clone_url(cluster, postgresql)


@pytest.fixture
def conn(postgresql):
    """An autocommit connection to this test's database, as the deploying superuser."""
    return _autocommit(postgresql)


@pytest.fixture
def fresh_db(cluster, cluster_server, template_db):
    """An empty database with nothing deployed, dropped afterwards (with its cron jobs). After the
    template's deploy (template_db): runhub's roles, the cluster's, exist before a test deploys here."""
    from runhub_loader.db.cron import unschedule_cron_jobs

    with cluster_server.janitor(f"runhub_empty_{uuid.uuid4().hex[:10]}") as janitor:
        yield cluster.url(janitor.dbname)
        unschedule_cron_jobs(cluster.url(janitor.dbname))


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
def fault_cluster_server(fault_cluster) -> Server:
    return Server.of(fault_cluster)


fault_postgresql_noproc = factories.postgresql_noproc(dbname=DBNAME, load=[deploy_template], depends_on="fault_cluster_server")
fault_postgresql = factories.postgresql("fault_postgresql_noproc")


@pytest.fixture
def fault_db_url(fault_cluster, fault_postgresql) -> str:
    """URL of this test's own freshly deployed database on fault_cluster."""
    return _clone_url(fault_cluster, fault_postgresql)


@pytest.fixture
def fault_conn(fault_postgresql):
    """An autocommit connection to this test's database on fault_cluster."""
    return _autocommit(fault_postgresql)


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
    """A new database on `cluster` (a clone of `template`, if given), noted in `dropped`."""
    janitor = Server.of(cluster).janitor(f"runhub_shard_{uuid.uuid4().hex[:10]}", template)
    janitor.init()
    dropped.append((cluster, janitor))
    return cluster.url(janitor.dbname)


def drop_databases(dropped: list) -> None:
    for cluster, janitor in reversed(dropped):
        _rollback_prepared(cluster.url(janitor.dbname))  # a database with a prepared transaction cannot be dropped
        janitor.drop()


@pytest.fixture
def scratch_database():
    """scratch_database(cluster, template=None) -> the URL of a new database on cluster (a clone of
    template, if given), dropped when the test ends."""
    dropped: list = []
    yield lambda cluster, template=None: new_database(cluster, template, dropped)
    drop_databases(dropped)


@pytest.fixture(scope="session")
def shard_cluster():
    """The second cluster of the sharded tests (two of the four partitions live there)."""
    yield from _throwaway_cluster("runhub-pytest-shards-", fast=True)


@pytest.fixture(scope="session")
def shard_cluster_server(shard_cluster) -> Server:
    return Server.of(shard_cluster)


shard_postgresql_noproc = factories.postgresql_noproc(dbname=DBNAME, load=[deploy_template], depends_on="shard_cluster_server")


@pytest.fixture(scope="session")
def shard_template_db(shard_postgresql_noproc) -> str:
    return shard_postgresql_noproc.template_dbname


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


# -- an SMTP sink for the sender's process and fault tests -----------------------------------------

@pytest.fixture
def sink():
    """A real SMTP sink on loopback (helpers/fault_sink.py) that keeps what it accepts."""
    from helpers.fault_sink import running_sink

    with running_sink() as handler:
        yield handler
