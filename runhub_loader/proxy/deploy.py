"""`runhub proxy deploy` and `runhub proxy add-shard`: the proxy database's API, generated from a
shard's catalog, and its partitions.

The proxy's schema runhub holds, for every function a client role may call on a shard, one of the
same name, arguments, result and grants. Each is a PL/pgSQL wrapper around a PL/Proxy function of
schema runhub_remote, which runs the shard's function on the partition that owns the call's
project; the wrapper raises a shard's error again as the shard worded it.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from yoyo import get_backend, read_migrations

from .. import __version__, logs
from ..assets import DEFAULT_SOURCE
from ..db.deploy import yoyo_url
from . import queries
from .keys import KeyConflict, keys_of, sync_holdout_key, sync_unsubscribe_keys
from .shards import connect as connect_partition, give_id_blocks

log = logs.get("proxy")

PROXY_FOLDER = DEFAULT_SOURCE / "proxy"

# How each API function finds its partition. A function with an argument `project` goes to that
# project's partition; these are the others. A function in none of them fails the deploy: the
# proxy must never guess where a call belongs.
PLACED_BY_ID = {"create_project": "id"}  # a new project's partition, recorded in the directory
ROUTED_BY_TOKEN = {"unsubscribe": "token"}  # the project named in an unsubscribe token
ANY_PARTITION = {  # read only what every shard has alike (deployed catalogs, constants, texts)
    "error_catalog", "attribution_reasons", "criteria_text", "exclusion_label", "next_digest_at",
    "local_day_range",
}


class ProxyError(RuntimeError):
    """The proxy command failed; what it says tells what was and was not changed."""


@dataclass
class ApiFunction:
    name: str
    identity_arguments: str
    arguments: str
    result: str
    returns_set: bool
    returns_void: bool
    strict: bool
    argument_count: int
    argument_names: list[str]
    grantees: list[str]

    @property
    def signature(self) -> str:
        return f"runhub.{self.name}({self.identity_arguments})"

    def position(self, argument: str) -> int:
        """$n of the named argument."""
        return self.argument_names.index(argument) + 1

    def route(self) -> str:
        """The RUN ON clause's target."""
        if self.name in PLACED_BY_ID:
            return f"runhub_proxy.place_project(${self.position(PLACED_BY_ID[self.name])})"
        if self.name in ROUTED_BY_TOKEN:
            return f"runhub_proxy.partition_of_token(${self.position(ROUTED_BY_TOKEN[self.name])})"
        if "project" in self.argument_names:
            return f"runhub_proxy.partition_of(${self.position('project')})"
        if self.name in ANY_PARTITION:
            return "ANY"
        raise ProxyError(f"the proxy does not know where runhub.{self.name}({self.identity_arguments}) belongs: "
                         "it has no project argument and is not known to read only what every shard has alike")


def shard_conninfo(url: str) -> str:
    """The partition's connection string for PL/Proxy: the shard's address without user or
    password, so PL/Proxy connects as the calling login (its password from the proxy server's
    ~/.pgpass, or a pooler's auth)."""
    params = {k: v for k, v in conninfo_to_dict(url).items() if k not in ("user", "password", "passfile")}
    if not params.get("dbname"):
        raise ProxyError(f"a shard URL must name its database: {redact(url)}")
    return make_conninfo(**params)


def redact(url: str) -> str:
    params = conninfo_to_dict(url)
    if "password" in params:
        params["password"] = "***"
    return make_conninfo(**params)


def api_functions(shard_url: str) -> list[ApiFunction]:
    with psycopg.connect(shard_url) as conn:
        rows = conn.execute(queries.API_FUNCTIONS).fetchall()
    functions = [ApiFunction(*row) for row in rows]
    if not functions:
        raise ProxyError("the first shard has no runhub API: deploy runhub there first (`runhub deploy`)")
    return functions


def remote_function(fn: ApiFunction) -> str:
    """The PL/Proxy function: the shard's function, run on the call's partition."""
    return (f"CREATE OR REPLACE FUNCTION runhub_remote.{fn.name}({fn.identity_arguments})\n"
            f"RETURNS {fn.result}\nLANGUAGE plproxy{' STRICT' if fn.strict else ''}\nAS $plproxy$\n"
            f"    CLUSTER 'runhub';\n    RUN ON {fn.route()};\n    TARGET runhub.{fn.name};\n$plproxy$")


def wrapper_function(fn: ApiFunction) -> str:
    """The API function: calls the PL/Proxy one and raises a shard's error as the shard raised it.
    Security invoker: PL/Proxy connects to the shard as the calling login, which the shard checks."""
    args = [f"${i}" for i in range(1, fn.argument_count + 1)]
    if fn.name in PLACED_BY_ID:  # the proxy names a new project, so the directory can record it
        i = fn.position(PLACED_BY_ID[fn.name]) - 1
        args[i] = f"coalesce({args[i]}, gen_random_uuid())"
    call = f"runhub_remote.{fn.name}({', '.join(args)})"
    if fn.returns_set:
        body = f"RETURN QUERY SELECT * FROM {call};"
    elif fn.returns_void:
        body = f"PERFORM {call};"
    else:
        body = f"RETURN {call};"
    return (f"CREATE OR REPLACE FUNCTION runhub.{fn.name}({fn.arguments})\n"
            f"RETURNS {fn.result}\nLANGUAGE plpgsql VOLATILE{' STRICT' if fn.strict else ''}\nAS $wrapper$\n"
            "DECLARE\n    v_state text; v_message text; v_detail text; v_hint text;\nBEGIN\n"
            f"    {body}\n"
            "EXCEPTION WHEN OTHERS THEN\n"
            "    GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,\n"
            "                            v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;\n"
            "    PERFORM runhub_proxy.reraise(v_state, v_message, nullif(v_detail, ''), nullif(v_hint, ''));\n"
            "END\n$wrapper$")


def _install_api(conn, functions: list[ApiFunction]) -> None:
    """Every API function, anew: stale ones (and ones whose result changed) dropped first."""
    wanted = {"runhub": {}, "runhub_remote": {}}
    for fn in functions:
        wanted["runhub"][fn.signature] = fn.result
        wanted["runhub_remote"][f"runhub_remote.{fn.name}({fn.identity_arguments})"] = fn.result
    for schema, signatures in wanted.items():
        for named, signature, result in conn.execute(queries.SCHEMA_FUNCTIONS, (schema,)).fetchall():
            if signatures.get(named) != result:
                conn.execute(queries.DROP_FUNCTION.format(sql.SQL(signature)))
    for fn in functions:
        conn.execute(remote_function(fn))
        conn.execute(wrapper_function(fn))
    for schema in ("runhub", "runhub_remote"):
        conn.execute(queries.REVOKE_FUNCTIONS_FROM_PUBLIC.format(sql.Identifier(schema)))
    for fn in functions:
        remote = f"runhub_remote.{fn.name}({fn.identity_arguments})"
        for signature in (fn.signature, remote):
            conn.execute(queries.ALTER_FUNCTION_OWNER.format(sql.SQL(signature)))
            for role in fn.grantees:
                conn.execute(queries.GRANT_FUNCTION.format(sql.SQL(signature), sql.Identifier(role)))


@dataclass
class ProxyDeployResult:
    partitions: list[str]
    functions: int
    migrations: list[str]
    keys_copied: list[int]
    id_blocks_set: list[int]


def _check_shard(conn, label: str) -> str:
    """The shard's deployed code checksum; refuses a database that is not a runhub shard."""
    if not conn.execute(queries.IS_RUNHUB_DATABASE).fetchone()[0]:
        raise ProxyError(f"{label} is not a runhub database: deploy runhub there first (`runhub deploy`)")
    return conn.execute(queries.SHARD_CHECKSUM).fetchone()[0]


def _prepare_shard(conn, partition: int, first, label: str) -> tuple[bool, bool]:
    """A shard made ready for its partition: partition 0's unsubscribe and holdout keys (first is
    a connection to partition 0), and its block of ids."""
    try:
        with conn.transaction():
            copied = False
            if partition:
                copied = sync_unsubscribe_keys(keys_of(first), conn, label)
                copied = sync_holdout_key(first, conn, label) or copied
            blocked = bool(give_id_blocks(conn, partition))
    except (KeyConflict, ValueError) as exc:
        raise ProxyError(f"{label} cannot be partition {partition}: {exc}") from exc
    return copied, blocked


def _record_projects(proxy, shard, partition: int) -> int:
    """Directory rows for the shard's projects that have none (those it had before it joined)."""
    ids = shard.execute(queries.SHARD_PROJECT_IDS).fetchone()[0]
    for start in range(0, len(ids), 50_000):
        proxy.execute(queries.ADD_DIRECTORY_ROWS, (ids[start:start + 50_000], partition))
    return len(ids)


def _apply_migrations(proxy_url: str) -> list[str]:
    backend = get_backend(yoyo_url(proxy_url))
    try:
        migrations = read_migrations(str(PROXY_FOLDER / "migrations"))
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
        return [m.id for m in pending]
    finally:
        backend.connection.close()


def deploy_proxy(proxy_url: str, shard_urls: list[str]) -> ProxyDeployResult:
    """Installs or updates the proxy: its tables, the API generated from the first shard's catalog,
    and the partitions, in the order given (partition 0 first). A proxy deployed before must be
    given the same shards (new ones come with add-shard)."""
    if not shard_urls:
        raise ProxyError("name the shards: --shard URL, once per partition, partition 0 first")
    connstrs = [shard_conninfo(url) for url in shard_urls]
    if len(set(connstrs)) != len(connstrs):
        raise ProxyError("a shard is named twice: each partition is a database of its own")
    with logs.bound(deploy_id=str(uuid.uuid4())):
        with psycopg.connect(proxy_url, autocommit=True) as proxy:
            if proxy.execute(queries.IS_RUNHUB_DATABASE).fetchone()[0]:
                raise ProxyError("the proxy URL names a runhub shard database: the proxy is a database of its own")
            registered = _registered(proxy)
        if registered and registered != connstrs:
            raise ProxyError("this proxy already routes to other shards ("
                             + ", ".join(registered) + "): deploy it with those, and add new ones with `runhub proxy add-shard`")
        shards = [psycopg.connect(url, autocommit=True) for url in shard_urls]
        try:
            checksums = [_check_shard(conn, f"shard {p} ({connstrs[p]})") for p, conn in enumerate(shards)]
            if len(set(checksums)) != 1:
                raise ProxyError("the shards run different runhub code: `runhub deploy` each of them with the same checkout")
            if not registered:
                for p, conn in enumerate(shards[1:], start=1):
                    if conn.execute(queries.PROJECT_COUNT).fetchone()[0]:
                        raise ProxyError(f"shard {p} ({connstrs[p]}) has projects: only partition 0 may join with "
                                         "shops of its own (move shops with `runhub proxy move`)")
            keys_copied, blocks = [], []
            for p, conn in enumerate(shards):
                copied, blocked = _prepare_shard(conn, p, shards[0], f"shard {p} ({connstrs[p]})")
                keys_copied += [p] if copied else []
                blocks += [p] if blocked else []
            functions = api_functions(shard_urls[0])
            migrations = _apply_migrations(proxy_url)
            with psycopg.connect(proxy_url) as proxy:  # one transaction: the API changes at once
                proxy.execute(queries.LOCK_PARTITIONS)
                if not _registered(proxy):
                    for p, connstr in enumerate(connstrs):
                        proxy.execute(queries.ADD_PARTITION, (p, connstr))
                    _create_cluster(proxy, connstrs)
                for path in sorted((PROXY_FOLDER / "sql").glob("*.sql")):
                    proxy.execute(path.read_text())
                _install_api(proxy, functions)
                for p, conn in enumerate(shards):
                    _record_projects(proxy, conn, p)
                proxy.execute(queries.RECORD_PROXY_DEPLOYMENT, (__version__, checksums[0], len(functions)))
        except psycopg.Error as exc:
            raise ProxyError(f"proxy deploy failed: {str(exc).strip()}") from exc
        finally:
            for conn in shards:
                conn.close()
        log.info("proxy_deployed", partitions=len(connstrs), functions=len(functions), migrations=migrations)
        return ProxyDeployResult(connstrs, len(functions), migrations, keys_copied, blocks)


def _create_cluster(proxy, connstrs: list[str]) -> None:
    options = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(f"p{p}"), sql.Literal(connstr))
                                 for p, connstr in enumerate(connstrs))
    if not proxy.execute(queries.SERVER_EXISTS).fetchone()[0]:
        proxy.execute(queries.CREATE_SERVER.format(options))
    proxy.execute(queries.CREATE_USER_MAPPING)
    proxy.execute(queries.GRANT_SERVER)


def _add_partition(proxy, partition: int, connstr: str) -> None:
    """The directory's partition and PL/Proxy's (an option of SERVER runhub), in one transaction."""
    proxy.execute(queries.ADD_PARTITION, (partition, connstr))
    proxy.execute(queries.ADD_SERVER_PARTITION.format(sql.Identifier(f"p{partition}"), sql.Literal(connstr)))


def _registered(proxy) -> list[str]:
    if not proxy.execute(queries.IS_PROXY_DATABASE).fetchone()[0]:
        return []
    return [connstr for _, connstr in proxy.execute(queries.PARTITIONS).fetchall()]


def add_shard(proxy_url: str, shard_url: str) -> int:
    """Adds an empty shard as the next partition; returns its number. New projects are placed on
    every partition by their id's hash from now on; existing shops stay until moved."""
    connstr = shard_conninfo(shard_url)
    with psycopg.connect(proxy_url, autocommit=True) as proxy:
        registered = _registered(proxy)
    if not registered:
        raise ProxyError("no proxy there: `runhub proxy deploy` first")
    if connstr in registered:
        raise ProxyError(f"{connstr} is partition {registered.index(connstr)} already")
    partition = len(registered)
    label = f"shard {partition} ({connstr})"
    try:
        with psycopg.connect(shard_url, autocommit=True) as shard, \
                connect_partition(registered[0], proxy_url, autocommit=True) as first:
            if _check_shard(shard, label) != _check_shard(first, "partition 0"):
                raise ProxyError(f"{label} runs other runhub code than partition 0: deploy the same checkout there")
            if shard.execute(queries.PROJECT_COUNT).fetchone()[0]:
                raise ProxyError(f"{label} has projects: a new partition starts empty")
            _prepare_shard(shard, partition, first, label)
        with psycopg.connect(proxy_url) as proxy:
            proxy.execute(queries.LOCK_PARTITIONS)
            if _registered(proxy) != registered:
                raise ProxyError("the partitions changed while adding this one: run add-shard again")
            _add_partition(proxy, partition, connstr)
    except psycopg.Error as exc:
        raise ProxyError(f"add-shard failed, the proxy is unchanged: {str(exc).strip()}") from exc
    log.info("proxy_shard_added", partition=partition, connstr=connstr)
    return partition

