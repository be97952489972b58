"""`runhub proxy move PROJECT --to PARTITION`: a shop's rows from one shard to another while it
keeps taking calls.

The order of things, and why:
1. On the proxy, take the project's move lock (one move of a shop at a time). Copy the shop's
   events, the bulk of it, into the target's transaction from a snapshot of the source while the
   shop still takes calls: stored events never change (append-only), so the copy stays true.
2. Take the project's call lock exclusively: calls in flight for the project finish first, new
   ones wait (they take the lock shared before they read the directory, so after the move they
   read the new partition). From here the shop's calls wait: the pause.
3. On the source shard, in one transaction, hold the shop still: its runs (execute_run and the
   attribution job wait), its messages not yet in a sender's hands (claim_messages skips them),
   then wait until no message of it is being sent, then its project row (every insert naming it
   waits).
4. Copy the rest — every other table, and the events stored since the snapshot (newer ids, and
   any older id whose transaction was still open then) — checking counts and checksums table by
   table, and PREPARE the target's transaction; delete the rows on the source (its events but
   later: inert without their project row) and PREPARE that one too (two-phase commit: both
   shards need max_prepared_transactions > 0).
5. Switch the directory, in a transaction of its own: the decision, durable. Then COMMIT PREPARED
   on both shards, and only then let the calls go (to the target, whole there). A mover stopped
   after the decision leaves prepared transactions that the next move of the project, or
   `runhub proxy recover`, finishes the way the directory says (until then the shop's calls find
   it missing); stopped before it, they are rolled back: the shop stays where it was.
6. Delete the shop's events on the source, in batches (`clean_sources`).
"""
from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass, field

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from .. import logs
from . import queries
from .shards import MOVED_TABLES, OUTBOX_ROWS, connect

log = logs.get("proxy")

DRAIN_POLL_SECONDS = 0.05


class MoveError(RuntimeError):
    """The move did not happen: the project is where it was, its rows unchanged."""


@dataclass
class MoveResult:
    project: str
    from_partition: int
    to_partition: int
    rows: dict[str, int] = field(default_factory=dict)
    paused_ms: float = 0.0
    moved: bool = True


def _gid(project: str, role: str, partition: int) -> str:
    return f"runhub_move:{project}:{role}:{partition}"


def recover(proxy_url: str, project: str | None = None) -> list[str]:
    """Finishes the prepared transactions stopped moves left, as the directory decided: a copy is
    committed on the partition the directory names and rolled back elsewhere; a delete is
    committed where the directory no longer points. Returns what it did."""
    done = []
    with psycopg.connect(proxy_url, autocommit=True) as proxy:
        partitions = proxy.execute(queries.PARTITIONS).fetchall()
        for partition, connstr in partitions:
            with connect(connstr, proxy_url, autocommit=True) as shard:
                pattern = f"runhub_move:{project}:%" if project else "runhub_move:%"
                for (gid,) in shard.execute(queries.PREPARED_MOVES, (pattern,)).fetchall():
                    _, moved, role, _ = gid.split(":")
                    owner = proxy.execute(queries.PARTITION_OF, (moved,)).fetchone()[0]
                    keep = owner == partition if role == "copy" else owner != partition
                    shard.execute((queries.COMMIT_PREPARED if keep else queries.ROLLBACK_PREPARED).format(sql.Literal(gid)))
                    done.append(f"{'committed' if keep else 'rolled back'} {gid}")
                    log.info("proxy_move_recovered", gid=gid, committed=keep)
    if cleaned := clean_sources(proxy_url, project):
        done.append(f"deleted {cleaned} event(s) moved shops left on their old shards")
    return done


def clean_sources(proxy_url: str, project: str | None = None) -> int:
    """Deletes, in batches, the events moved shops left on their old shards (the move deletes the
    rest before its switch); returns how many. Never while the shop is on that shard."""
    deleted = 0
    with psycopg.connect(proxy_url, autocommit=True) as proxy:
        partitions = dict(proxy.execute(queries.PARTITIONS).fetchall())
        for move_id, moved, source in proxy.execute(queries.MOVES_TO_CLEAN, (project, project)).fetchall():
            if proxy.execute(queries.PARTITION_OF, (moved,)).fetchone()[0] == source:
                proxy.execute(queries.MARK_CLEANED, (move_id,))  # moved back since: its events are its own again
                continue
            with connect(partitions[source], proxy_url, autocommit=True) as shard:
                shard.execute(queries.SET_REPLICA)
                while batch := shard.execute(queries.DELETE_LEFT_EVENTS, {"project": moved}).rowcount:
                    deleted += batch
            proxy.execute(queries.MARK_CLEANED, (move_id,))
    return deleted


def move_project(proxy_url: str, project: str, to_partition: int, lock_timeout: str = "30s",
                 drain_seconds: float = 150.0) -> MoveResult:
    project = str(uuid.UUID(project))
    with logs.bound(move_id=str(uuid.uuid4()), project=project):
        recover(proxy_url, project)
        # Two sessions on the proxy: `hold`'s transaction holds the locks (the project's moves,
        # then its calls) until the shards have committed; `decide` records the move and, once
        # both shards have prepared, the switch: the decision, durable before either commits.
        with psycopg.connect(proxy_url) as hold, psycopg.connect(proxy_url, autocommit=True) as decide:
            partitions = dict(hold.execute(queries.PARTITIONS).fetchall())
            if to_partition not in partitions:
                raise MoveError(f"no partition {to_partition}: the partitions are 0 to {len(partitions) - 1}")
            hold.execute(queries.SET_LOCAL_LOCK_TIMEOUT, (lock_timeout,))
            hold.execute(queries.LOCK_PROJECT_MOVES, (project,))
            source = _partition_in_directory(decide, project)
            if source == to_partition:
                return MoveResult(project, source, to_partition, moved=False)
            log.info("proxy_move_started", source=source, target=to_partition)
            move_id = decide.execute(queries.START_MOVE, (project, source, to_partition)).fetchone()[0]
            options = queries.MOVE_SESSION_OPTIONS
            with connect(partitions[source], proxy_url, options=options) as src, \
                    connect(partitions[to_partition], proxy_url, options=options) as dst:
                plan = MovePlan(project, source, to_partition, move_id, lock_timeout, drain_seconds)
                rows, paused_ms = _move_rows(hold, decide, src, dst, partitions[source], proxy_url, plan)
        clean_sources(proxy_url, project)
        log.info("proxy_move_finished", source=source, target=to_partition, rows=rows, paused_ms=paused_ms)
        return MoveResult(project, source, to_partition, rows, paused_ms)


@dataclass
class MovePlan:
    """What one move does: the shop, from where to where, its record, and how long it may wait."""
    project: str
    source: int
    target: int
    move_id: int
    lock_timeout: str
    drain_seconds: float


def _move_rows(hold, decide, src, dst, source_connstr: str, proxy_url: str, plan: MovePlan) -> tuple[dict, float]:
    """Steps 1 to 5 of the module's docstring, in the shards' two-phase transactions; returns the
    rows moved and how long the shop's calls waited (ms)."""
    _check_two_phase(src, dst)
    dst.tpc_begin(_gid(plan.project, "copy", plan.target))
    src.tpc_begin(_gid(plan.project, "delete", plan.source))
    try:
        early = _copy_events_early(source_connstr, proxy_url, dst, plan.project)
        paused = time.monotonic()  # from here the shop's calls wait
        _lock_calls(hold, plan.project, plan.lock_timeout)
        _hold_still(src, plan.project, plan.lock_timeout, plan.drain_seconds)
        rows = _copy(src, dst, plan.project, early)
        dst.tpc_prepare()
        _delete(src, plan.project)
        src.tpc_prepare()
        _decide(decide, plan, rows)
    except BaseException:
        for conn in (dst, src):
            with contextlib.suppress(psycopg.Error):  # else `recover` rolls it back
                conn.tpc_rollback()  # prepared or not
        raise
    dst.tpc_commit()  # before the calls go on: they find the shop whole on the target
    src.tpc_commit()
    hold.commit()  # the calls go on, to the target
    paused_ms = round((time.monotonic() - paused) * 1000, 1)
    decide.execute(queries.RECORD_PAUSE, (paused_ms, plan.move_id))
    return rows, paused_ms


def _decide(decide, plan: MovePlan, rows: dict) -> None:
    """The directory names the target from now on (the calls still wait: `hold`'s lock)."""
    with decide.transaction():
        decide.execute(queries.SWITCH_PARTITION, (plan.target, plan.project))
        decide.execute(queries.FINISH_MOVE, (Jsonb(rows), plan.move_id))


def _lock_calls(proxy, project: str, lock_timeout: str) -> None:
    """Waits for the project's calls in flight; holds new ones until the proxy's transaction ends."""
    try:
        proxy.execute(queries.LOCK_PROJECT_CALLS, (project,))
    except psycopg.errors.LockNotAvailable as exc:
        raise MoveError(f"calls for the project did not finish within {lock_timeout}: not moved") from exc


def _partition_in_directory(decide, project: str) -> int:
    """The project's partition (its directory row made first if it had none)."""
    row = decide.execute(queries.DIRECTORY_ROW, (project,)).fetchone()
    if row is None:
        decide.execute(queries.ADD_DIRECTORY_ROW, (project, decide.execute(queries.PARTITION_OF, (project,)).fetchone()[0]))
        row = decide.execute(queries.DIRECTORY_ROW, (project,)).fetchone()
    return row[0]


def _check_two_phase(*shards) -> None:
    for shard in shards:
        allowed = shard.execute(queries.MAX_PREPARED_TRANSACTIONS).fetchone()[0]
        shard.rollback()  # two-phase transactions begin on an idle connection
        if allowed < 1:
            raise MoveError(f"{shard.info.dbname} on {shard.info.host}:{shard.info.port} has "
                            "max_prepared_transactions = 0: a move commits on two shards at once "
                            "(set it to a few, e.g. 10, and restart that server)")


def _hold_still(src, project: str, lock_timeout: str, drain_seconds: float) -> None:
    """Stops all work on the project on the source shard (see the module's docstring), in src's
    transaction: nothing of it is left in a sender's hands when this returns."""
    src.execute(queries.SET_LOCAL_LOCK_TIMEOUT, (lock_timeout,))
    if not src.execute(queries.PROJECT_EXISTS, (project,)).fetchone()[0]:
        raise MoveError(f"project {project} is not on its partition's shard: nothing to move")
    if src.execute(queries.PROJECT_HAS_OWN_COUNTER, (project,)).fetchone()[0]:
        raise MoveError("the project still counts its create_run calls in a sequence of its own: "
                        "`runhub deploy` its shard first (the deploy moves those counters onto rows)")
    src.execute(queries.LOCK_SOURCE_RUNS, (project,))
    _drain(src, project, drain_seconds)
    src.execute(queries.LOCK_SOURCE_PROJECT, (project,))
    _drain(src, project, drain_seconds)  # a digest queued meanwhile, and claimed


def _drain(src, project: str, drain_seconds: float) -> None:
    deadline = time.monotonic() + drain_seconds
    outbox = {"selection": sql.SQL(OUTBOX_ROWS)}
    while True:
        src.execute(queries.LOCK_SOURCE_WAITING_MESSAGES.format(**outbox), {"project": project})
        in_flight = src.execute(queries.SOURCE_MESSAGES_IN_FLIGHT.format(**outbox), {"project": project}).fetchone()[0]
        if not in_flight:
            return
        if time.monotonic() > deadline:
            raise MoveError(f"{in_flight} message(s) of the project were still being sent after "
                            f"{drain_seconds:.0f}s: not moved (try again)")
        time.sleep(DRAIN_POLL_SECONDS)


def _columns(conn, table: str) -> sql.Composable:
    names = conn.execute(queries.TABLE_COLUMNS, (f"runhub.{table}",)).fetchone()[0]
    return sql.SQL(", ").join(map(sql.Identifier, names))


@dataclass
class EarlyEvents:
    """The events copied before the calls waited: those of one snapshot, ids up to upto."""
    upto: int
    count: int


def _copy_events_early(source: str, proxy_url: str, dst, project: str) -> EarlyEvents:
    """The bulk of a shop, its events, copied into dst's transaction while the shop still takes
    calls: they never change once stored (append-only), so what a snapshot shows stays true. From
    a snapshot of their own; checked as the rest is."""
    if dst.execute(queries.PROJECT_EXISTS, (project,)).fetchone()[0]:
        raise MoveError(f"project {project} is on the target shard already: resolve by hand")
    # As a replica applies rows: no trigger fires (the rows are the source's, their effects
    # included: a payment's trigger would credit it again), no foreign key is checked row by row.
    dst.execute(queries.AS_REPLICA)
    with connect(source, proxy_url, options=queries.MOVE_SESSION_OPTIONS) as snapshot:
        snapshot.isolation_level, snapshot.read_only = psycopg.IsolationLevel.REPEATABLE_READ, True  # one snapshot
        upto = snapshot.execute(queries.EVENTS_NEWEST_ID, {"project": project}).fetchone()[0]
        params = {"project": project, "upto": upto}
        count = _copy_rows(snapshot, dst, "business_events", queries.EVENTS_UPTO, params)
    return EarlyEvents(upto, count)


def _copy_rows(src, dst, table: str, selection, params: dict) -> int:
    """The rows of table that selection picks, from src into dst; their count once both sides'
    checksums agree (else MoveError)."""
    parts = {"table": sql.Identifier(table), "columns": _columns(src, table),
             "selection": selection if isinstance(selection, sql.Composable) else sql.SQL(selection)}
    with src.cursor().copy(queries.COPY_OUT.format(**parts), params) as out, \
            dst.cursor().copy(queries.COPY_IN.format(**parts)) as into:
        for chunk in out:
            into.write(chunk)
    ours = src.execute(queries.TABLE_CHECKSUM.format(**parts), params).fetchone()
    theirs = dst.execute(queries.TABLE_CHECKSUM.format(**parts), params).fetchone()
    if ours != theirs:
        raise MoveError(f"runhub.{table}: {ours[0]} rows on the source, {theirs[0]} copied, checksums "
                        f"{ours[1]} and {theirs[1]}: not moved")
    return ours[0]


def _copy(src, dst, project: str, early: EarlyEvents) -> dict[str, int]:
    """Every row of the project not copied early into dst's transaction, each table checked."""
    rows = {}
    for table, selection in MOVED_TABLES:
        if table == "business_events":
            rows[table] = early.count + _copy_late_events(src, dst, project, early)
        else:
            rows[table] = _copy_rows(src, dst, table, selection, {"project": project})
    return rows


def _copy_late_events(src, dst, project: str, early: EarlyEvents) -> int:
    """Events stored since the early copy's snapshot: newer ids, and any older id whose
    transaction was still open then (found by comparing counts: rare, and only those are fetched)."""
    params = {"project": project, "upto": early.upto}
    late = _copy_rows(src, dst, "business_events", queries.EVENTS_AFTER, params)
    if src.execute(queries.EVENT_COUNT_UPTO, params).fetchone()[0] != early.count:
        copied = {i for (i,) in dst.execute(queries.EVENT_IDS_UPTO, params).fetchall()}
        missing = [i for (i,) in src.execute(queries.EVENT_IDS_UPTO, params).fetchall() if i not in copied]
        late += _copy_rows(src, dst, "business_events", queries.EVENTS_WITH_IDS, {"ids": missing})
    return late


def _delete(src, project: str) -> None:
    """The shop's rows on the source, but its events: inert without their project row (no job,
    trigger or call reads them), they go after the switch (clean_sources) so the calls need not
    wait for their deletion, the longest part of a big shop's."""
    src.execute(queries.AS_REPLICA)  # the rows live on elsewhere: no trigger (append-only's refusal, a cascade) fires
    for table, selection in reversed(MOVED_TABLES):
        if table == "business_events":
            continue
        src.execute(queries.DELETE_PROJECT_ROWS.format(table=sql.Identifier(table), selection=sql.SQL(selection)),
                    {"project": project})
