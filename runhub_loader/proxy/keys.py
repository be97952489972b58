"""The keys every shard of a proxy shares: the unsubscribe keys and the holdout key. A link is signed by the shard that sent the
mail and verified by the shard that owns the project when it is clicked: after a move, another one.
So the shards hold one key set, partition 0's, copied to a shard when it joins and after each
rotation (`runhub proxy rotate-secret`)."""
from __future__ import annotations

import secrets

from ..db.api import Api
from . import queries


class KeyConflict(RuntimeError):
    pass


def keys_of(conn) -> list[tuple]:
    return conn.execute(queries.UNSUBSCRIBE_KEYS).fetchall()


def sync_unsubscribe_keys(reference: list[tuple], conn, label: str) -> bool:
    """Gives the shard behind conn the reference key set. A shard that never sent mail drops its own
    keys first; one that did must hold the same keys already (its links would stop working).
    Returns whether anything changed."""
    own = keys_of(conn)
    if own == reference:
        return False
    mine = {kid: secret for kid, secret, *_ in own}
    theirs = {kid: secret for kid, secret, *_ in reference}
    clash = sorted(kid for kid in mine.keys() & theirs.keys() if bytes(mine[kid]) != bytes(theirs[kid]))
    extra = sorted(mine.keys() - theirs.keys())
    if clash or extra:
        if conn.execute(queries.OUTBOX_EVER_USED).fetchone()[0]:
            raise KeyConflict(f"{label} signed unsubscribe links with keys of its own (ids {clash + extra}): "
                              "the links in mail it sent would stop working on another shard")
        conn.execute(queries.DELETE_UNSUBSCRIBE_KEYS)
    for row in reference:
        conn.execute(queries.UPSERT_UNSUBSCRIBE_KEY, row)
    return True


def sync_holdout_key(reference_conn, conn, label: str) -> bool:
    """Gives the shard behind conn partition 0's holdout key (who a run holds out is a hash keyed by
    it: a run executed again after its shop moved must hold out the same people). A shard that held
    somebody out with a key of its own keeps it, and the join is refused."""
    reference = reference_conn.execute(queries.HOLDOUT_KEY).fetchone()
    own = conn.execute(queries.HOLDOUT_KEY).fetchone()
    if reference is None or (own is not None and bytes(own[0]) == bytes(reference[0])):
        return False
    if own is not None and conn.execute(queries.HOLDOUT_EVER_USED).fetchone()[0]:
        raise KeyConflict(f"{label} held recipients out with a holdout key of its own")
    conn.execute(queries.SET_HOLDOUT_KEY, (reference[0],))
    return True


def new_key(reference: list[tuple]) -> tuple[int, bytes]:
    """The next key id after every one there is, and 32 random bytes (as rotate_unsubscribe_key)."""
    return max((kid for kid, *_ in reference), default=0) + 1, secrets.token_bytes(32)


def rotate_everywhere(proxy_url: str, revoke_previous: bool) -> tuple[int, int]:
    """A new key on partition 0 (runhub.rotate_unsubscribe_key), then partition 0's key set on
    every other shard. Re-running after a stop finishes the copy. Returns (key id, shards)."""
    import psycopg

    from .shards import connect

    with psycopg.connect(proxy_url, autocommit=True) as proxy:
        partitions = proxy.execute(queries.PARTITIONS).fetchall()
    with connect(partitions[0][1], proxy_url, autocommit=True) as first:
        rotation = Api(first).rotate_unsubscribe_key(revoke_previous)
        reference = keys_of(first)
    for partition, connstr in partitions[1:]:
        with connect(connstr, proxy_url, autocommit=True) as conn, conn.transaction():
            sync_unsubscribe_keys(reference, conn, f"partition {partition}")
    return rotation["keyId"], len(partitions)
