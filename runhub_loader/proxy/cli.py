"""`runhub proxy …`: deploy a proxy in front of shard databases, grow it, move shops between them."""
from __future__ import annotations

import json

import click

from .. import logs


def register(main: click.Group, commands_class: type[click.Group], context_class: type) -> None:
    """Adds the `proxy` group to runhub's CLI (its commands take --database-url: the proxy's URL)."""

    @main.group(cls=commands_class)
    def proxy() -> None:
        """Run runhub on several servers: a proxy database with the same API routes each call to the
        shard database that owns its project (PL/Proxy). --database-url names the proxy."""

    @proxy.command("deploy")
    @click.option("--shard", "shards", multiple=True, required=True, metavar="URL",
                  help="A shard database (runhub deployed there), once per partition, partition 0 first.")
    @click.pass_obj
    def deploy(obj, shards: tuple[str, ...]) -> None:
        """Install or update the proxy: the API generated from the first shard's functions, with
        their grants; the partitions; the shards' shared unsubscribe keys and id blocks. Connect
        as a superuser on the proxy and the shards (PL/Proxy is an untrusted language)."""
        from .deploy import ProxyError, deploy_proxy

        try:
            result = deploy_proxy(obj.database_url(), list(shards))
        except ProxyError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"proxy deployed: {result.functions} API functions routed over {len(result.partitions)} partition(s); "
                   f"migrations applied: {', '.join(result.migrations) or 'none'}")
        for number, connstr in enumerate(result.partitions):
            click.echo(f"  partition {number}: {connstr}")

    @proxy.command("add-shard")
    @click.option("--shard", required=True, metavar="URL", help="An empty shard database, runhub deployed there.")
    @click.pass_obj
    def add_shard_command(obj, shard: str) -> None:
        """Add an empty shard as the next partition. New shops are placed on every partition by the
        hash of their id; existing ones stay where they are until moved (`runhub proxy move`)."""
        from .deploy import ProxyError, add_shard

        try:
            partition = add_shard(obj.database_url(), shard)
        except ProxyError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"partition {partition} added; start a sender for it: `runhub sender --database-url <its URL>`")

    @proxy.command("move")
    @click.argument("project", type=click.UUID)
    @click.option("--to", "to_partition", required=True, type=click.IntRange(min=0), metavar="PARTITION")
    @click.option("--lock-timeout", default="30s", show_default=True,
                  help="How long to wait for the shop's calls in flight, and for locks on the shards.")
    @click.option("--drain-seconds", default=150.0, show_default=True, type=click.FloatRange(min=0),
                  help="How long to wait for the shop's messages a sender is sending now.")
    @click.pass_obj
    def move(obj, project, to_partition: int, lock_timeout: str, drain_seconds: float) -> None:
        """Move a shop's rows to another partition while it keeps taking calls: they wait during the
        switch (its pause is printed), none lands on the old shard after it. Needs
        max_prepared_transactions > 0 on both shards."""
        import psycopg

        from .move import MoveError, move_project

        try:
            result = move_project(obj.database_url(), str(project), to_partition, lock_timeout, drain_seconds)
        except (MoveError, psycopg.Error) as exc:
            raise click.ClickException(f"not moved: {str(exc).strip()}") from exc
        if not result.moved:
            click.echo(f"project {project} is on partition {to_partition} already")
            return
        click.echo(f"project {project} moved from partition {result.from_partition} to {result.to_partition}: "
                   f"{sum(result.rows.values())} rows, calls paused {result.paused_ms} ms")
        click.echo("  " + ", ".join(f"{table} {n}" for table, n in result.rows.items() if n))

    @proxy.command("recover")
    @click.pass_obj
    def recover_command(obj) -> None:
        """Finish moves a stopped mover left prepared on the shards, as the directory decided."""
        from .move import recover

        done = recover(obj.database_url())
        click.echo("\n".join(done) if done else "no move left in doubt")

    @proxy.command("rotate-secret")
    @click.option("--revoke-previous", is_flag=True,
                  help="Also revoke every older key (after a leak): the links signed with them STOP WORKING.")
    @click.option("--yes", is_flag=True, help="Do not ask for confirmation before --revoke-previous.")
    @click.pass_obj
    def rotate_secret(obj, revoke_previous: bool, yes: bool) -> None:
        """`runhub rotate-secret` for every shard at once: they share one key set (a shop's links
        must verify on whichever shard it moves to)."""
        import psycopg

        from .keys import rotate_everywhere

        if revoke_previous and not yes:
            click.confirm("Revoke every older key? Unsubscribe links already sent will stop working", abort=True)
        try:
            kid, shards = rotate_everywhere(obj.database_url(), revoke_previous)
        except (RuntimeError, psycopg.Error) as exc:
            raise click.ClickException(f"rotation stopped: {str(exc).strip()}; run it again to finish") from exc
        logs.get("secrets").info("unsubscribe_key_rotated", key_id=kid, shards=shards)
        click.echo(f"unsubscribe key {kid} signs new links on all {shards} shard(s)")

    return proxy


def status_report(proxy_url: str, as_json: bool) -> str:
    from .status import collect, render

    report = collect(proxy_url)
    return json.dumps(report, indent=2, default=str) if as_json else render(report)
