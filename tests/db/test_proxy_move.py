"""Moving a shop between partitions (`runhub proxy move`): every row goes, nothing is lost or
doubled while the shop keeps ingesting, no call lands on the old shard after the switch, and a
mover stopped half-way leaves the shop whole on one side."""
from __future__ import annotations

import threading

import psycopg
import pytest
from click.testing import CliRunner

from helpers.attribution import outcome, pay, recovery_run
from helpers.db import blocked_by, event, ingest, new_project, wait_until
from helpers.workflows import attempt, connect, ready_shop
from runhub_loader import cli
from runhub_loader.proxy import move as mover
from runhub_loader.proxy.deploy import add_shard, deploy_proxy
from runhub_loader.proxy.move import MoveError, move_project
from runhub_loader.proxy.shards import ID_BLOCK, MOVED_TABLES

pytestmark = pytest.mark.slow


def _rows_of(shard, project) -> dict:
    return {table: shard.execute(f"SELECT count(*) FROM runhub.{table} WHERE {selection}", {"project": project}).fetchone()[0]
            for table, selection in MOVED_TABLES}


def test_every_table_that_holds_a_project_s_rows_is_moved(conn):
    tables = {r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "WHERE c.relnamespace = 'runhub'::regnamespace AND c.relkind = 'r' AND a.attname = 'project_id' AND NOT a.attisdropped")}
    referencing = {r[0] for r in conn.execute(
        "SELECT conrelid::regclass::text FROM pg_constraint WHERE contype = 'f' AND confrelid = 'runhub.projects'::regclass")}
    moved = {table for table, _ in MOVED_TABLES}
    assert tables <= moved and {t.removeprefix("runhub.") for t in referencing} <= moved
    assert "projects" in moved


def test_a_shop_moves_across_clusters_under_continuous_ingest_with_no_event_lost_or_doubled(sharded, proxy_login):
    with connect(proxy_login("app")) as app:
        project, owner = new_project(app)
    start = sharded.partition_of(project)
    acked: list[str] = []
    replayed: list[dict] = []
    failures: list = []
    stop = threading.Event()

    def writer(n):
        with connect(proxy_login("ingest")) as hook:
            i = 0
            while not stop.is_set():
                key = f"w{n}-{i}"
                result = attempt(ingest, hook, project, event(key=key, customer={"email": f"{key}@example.com"}))
                if result[0] != "ok":
                    failures.append(result)
                    return
                acked.append(key)
                if i % 10 == 0:  # a webhook's retry of an event already stored, maybe on the other shard
                    replayed.append(ingest(hook, project, event(key=f"w{n}-0", customer={"email": f"w{n}-0@example.com"})))
                i += 1

    def reader():
        with connect(proxy_login("app")) as reading:
            while not stop.is_set():
                result = attempt(lambda: reading.execute("SELECT runhub.list_events(project => %s, actor => %s)",
                                                         (project, owner)).fetchone())
                if result[0] != "ok":
                    failures.append(result)
                    return

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    path = []
    try:
        for target in ([p for p in (2, 3) if p != start][0] if start < 2 else 0, 1 if start != 1 else 3):
            seen = len(acked)
            wait_until(lambda: len(acked) >= seen + 100 or failures, "events ingested before the move")
            result = move_project(sharded.proxy_url, str(project), target)
            path.append((result.from_partition, result.to_partition, result.paused_ms))
        seen = len(acked)
        wait_until(lambda: len(acked) >= seen + 100 or failures, "events ingested after the last move")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures
    final = sharded.partition_of(project)
    assert final == path[-1][1] and len(path) == 2 and path[0][0] == start
    with sharded.shard(final) as shard:
        keys = [k for (k,) in shard.execute("SELECT idempotency_key FROM runhub.business_events WHERE project_id = %s",
                                            (project,))]
    assert sorted(keys) == sorted(acked)  # every acknowledged event, once
    assert replayed and not any(r["inserted"] for r in replayed)
    for other in set(range(4)) - {final}:
        with sharded.shard(other) as shard:
            assert set(_rows_of(shard, project).values()) == {0}, other


def test_a_shop_with_its_history_moves_whole_and_answers_the_same(sharded, proxy_login):
    with connect(proxy_login("app")) as app, connect(proxy_login("ingest")) as hook:
        project, owner = ready_shop(app)
        source = sharded.partition_of(project)
        with sharded.shard(source) as shard:
            _, _, run = recovery_run(shard, {"ann@example.com": ("cart-1", 2500), "bob@example.com": ("cart-2", 900)},
                                     project=project, owner=owner)
        pay(hook, project, email="ann@example.com", amount=2500, cart="cart-1")
        app.execute("SELECT runhub.suppress(%s, %s, 'bob@example.com', 'manual')", (project, owner))
        before = (outcome(app, project, owner, run),
                  app.execute("SELECT runhub.list_events(project => %s, actor => %s, page_size => 100)",
                              (project, owner)).fetchone()[0],
                  app.execute("SELECT runhub.get_run(%s, %s, %s)", (project, owner, run)).fetchone()[0])
        with sharded.shard(source) as shard:
            rows = _rows_of(shard, project)
        target = (source + 2) % 4  # the other cluster
        result = move_project(sharded.proxy_url, str(project), target)
        assert result.rows == rows and rows["workflow_attributions"] == 1 and rows["outbox"] == 2
        after = (outcome(app, project, owner, run),
                 app.execute("SELECT runhub.list_events(project => %s, actor => %s, page_size => 100)",
                             (project, owner)).fetchone()[0],
                 app.execute("SELECT runhub.get_run(%s, %s, %s)", (project, owner, run)).fetchone()[0])
    assert after == before
    with sharded.shard(target) as shard:
        assert _rows_of(shard, project) == rows
        # the payment was credited once, on the source: the copy fired no trigger
        assert shard.execute("SELECT count(*) FROM runhub.workflow_attributions WHERE project_id = %s",
                             (project,)).fetchone()[0] == 1
    with sharded.shard(source) as shard:
        assert set(_rows_of(shard, project).values()) == {0}


def test_a_message_being_sent_holds_the_move_until_it_is_recorded(sharded, proxy_login):
    with connect(proxy_login("app")) as app, connect(proxy_login("ingest")) as hook:
        project, owner = ready_shop(app)
        for email in ("a@example.com", "b@example.com"):
            ingest(hook, project, event(kind="lead_created", at=_hours_ago(3), customer={"email": email}))
        app.execute("SELECT runhub.preview(%s, %s, 'send_promo', %s)",
                    (project, owner, psycopg.types.json.Jsonb({"subject": "Sale", "content": "-20%"})))
        app.execute("SELECT runhub.create_run(%s, %s, 'send_promo', 'k', %s)",
                    (project, owner, psycopg.types.json.Jsonb({"subject": "Sale", "content": "-20%"})))
    source = sharded.partition_of(project)
    target = (source + 1) % 4
    with sharded.shard(source) as shard:
        shard.execute("SELECT runhub.process_runs(10)")
        # One of the shop's two messages in a sender's hands, the other queued (the shard is shared:
        # what else it claims goes back)
        claimed = [m for (m,) in shard.execute("SELECT runhub.claim_messages('w-src', 1000, 120)")]
        mine = [m for m in claimed if m["projectId"] == str(project)]
        assert len(mine) == 2
        back = [m["id"] for m in claimed if m["id"] != mine[0]["id"]]
        shard.execute("SELECT runhub.release_messages('w-src', %s)", (back,))
        claimed = mine[:1]
        with pytest.raises(MoveError, match="still being sent"):
            move_project(sharded.proxy_url, str(project), target, drain_seconds=0)
        assert sharded.partition_of(project) == source
        assert _rows_of(shard, project)["outbox"] == 2
        assert not shard.execute("SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()").fetchone()[0]
        ids = [claimed[0]["id"]]
        shard.execute("SELECT runhub.start_messages('w-src', %s)", (ids,))
        shard.execute("SELECT * FROM runhub.record_sent_many('w-src', %s, %s)", (ids, ["250 ok"]))
    move_project(sharded.proxy_url, str(project), target)
    with sharded.shard(source) as shard:  # the source's sender finds nothing of the shop's
        assert shard.execute("SELECT count(*) FROM runhub.outbox WHERE project_id = %s", (project,)).fetchone()[0] == 0
    with sharded.shard(target) as shard:
        states = dict(shard.execute("SELECT id, status FROM runhub.outbox WHERE project_id = %s", (project,)).fetchall())
        assert sorted(states.values()) == ["queued", "sent"] and states[ids[0]] == "sent"
        claimed_here = [m["id"] for (m,) in shard.execute("SELECT runhub.claim_messages('w-dst', 1000, 120)")]
        assert [i for i in claimed_here if i in states] == [i for i, s in states.items() if s == "queued"]


def _hours_ago(hours):
    from helpers.workflows import ago

    return ago(hours)


def test_an_unsubscribe_link_mailed_before_a_move_works_after_it(sharded, proxy_login):
    with connect(proxy_login("app")) as app:
        project, _ = new_project(app)
    source = sharded.partition_of(project)
    target = (source + 2) % 4  # another cluster, another template: the keys came from partition 0
    with sharded.shard(source) as shard:
        token = shard.execute("SELECT runhub.unsubscribe_token(%s, 'Reader@Example.com')", (project,)).fetchone()[0]
    move_project(sharded.proxy_url, str(project), target)
    with connect(proxy_login("app")) as app:
        app.execute("SELECT runhub.unsubscribe(token => %s)", (token,))
        forged = attempt(lambda: app.execute("SELECT runhub.unsubscribe(token => %s)", (token[:-2] + "AA",)).fetchone())
    assert forged[0] == "err" and forged[2] == "mail.invalidUnsubscribeToken"
    with sharded.shard(target) as shard:
        assert shard.execute("SELECT reason FROM runhub.suppressions WHERE project_id = %s", (project,)).fetchall() == \
            [("unsubscribed",)]


def test_a_mover_stopped_after_its_decision_is_finished_by_recover(sharded, proxy_login, monkeypatch):
    with connect(proxy_login("app")) as app, connect(proxy_login("ingest")) as hook:
        project, owner = new_project(app)
        ingest(hook, project, event())
    source = sharded.partition_of(project)
    target = (source + 1) % 4

    def crash(self):
        raise KeyboardInterrupt("the mover is stopped between its decision and its commits")

    monkeypatch.setattr(psycopg.Connection, "tpc_commit", crash)
    with pytest.raises(KeyboardInterrupt):
        move_project(sharded.proxy_url, str(project), target)
    monkeypatch.undo()
    assert sharded.partition_of(project) == target  # decided
    for partition in (source, target):
        with sharded.shard(partition) as shard:
            assert shard.execute("SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE %s AND database = current_database()",
                                 (f"runhub_move:{project}:%",)).fetchone()[0] == 1
    status = CliRunner().invoke(cli.main, ["status", "--proxy", sharded.proxy_url])
    assert f"IN-DOUBT MOVE runhub_move:{project}" in status.output
    done = CliRunner().invoke(cli.main, ["proxy", "recover", "--database-url", sharded.proxy_url])
    lines = [line for line in done.output.splitlines() if line.startswith("committed runhub_move:")]
    assert done.exit_code == 0 and len(lines) == 2, done.output
    with sharded.shard(target) as shard:
        assert _rows_of(shard, project)["business_events"] == 1
    with sharded.shard(source) as shard:
        assert set(_rows_of(shard, project).values()) == {0}
    with connect(proxy_login("app")) as app:
        assert app.execute("SELECT runhub.list_events(project => %s, actor => %s)", (project, owner)).fetchone()[0]["events"]


def test_a_mover_stopped_before_its_decision_leaves_the_shop_where_it_was(sharded, proxy_login, monkeypatch):
    with connect(proxy_login("app")) as app, connect(proxy_login("ingest")) as hook:
        project, _ = new_project(app)
        ingest(hook, project, event())
    source = sharded.partition_of(project)
    with sharded.shard(source) as shard:
        rows = _rows_of(shard, project)
    real_delete = mover._delete

    def delete_then_fail(src, moved):
        real_delete(src, moved)
        raise psycopg.OperationalError("the source shard went away")

    monkeypatch.setattr(mover, "_delete", delete_then_fail)
    with pytest.raises(psycopg.OperationalError):
        move_project(sharded.proxy_url, str(project), (source + 3) % 4)
    assert sharded.partition_of(project) == source
    for partition in range(4):
        with sharded.shard(partition) as shard:
            assert _rows_of(shard, project) == (rows if partition == source else dict.fromkeys(rows, 0))
            assert not shard.execute("SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()").fetchone()[0]


def test_a_move_to_a_partition_that_does_not_exist_is_refused(sharded, proxy_login):
    with connect(proxy_login("app")) as app:
        project, _ = new_project(app)
    result = CliRunner().invoke(cli.main, ["proxy", "move", str(project), "--to", "9", "--database-url", sharded.proxy_url])
    assert result.exit_code != 0 and "no partition 9: the partitions are 0 to 3" in result.output


def test_one_database_grows_into_two_partitions_and_its_shops_keep_working(cluster, template_db, shard_cluster,
                                                                           shard_template_db, scratch_database):
    first = scratch_database(cluster, template_db)
    with psycopg.connect(first, autocommit=True) as direct:  # a shop made before there was a proxy
        old, owner = new_project(direct)
        ingest(direct, old, event(key="before"))
    proxy_url = scratch_database(cluster)
    deploy_proxy(proxy_url, [first])
    second = scratch_database(shard_cluster, shard_template_db)
    assert add_shard(proxy_url, second) == 1
    with psycopg.connect(proxy_url, autocommit=True) as proxy:
        news = [new_project(proxy)[0] for _ in range(12)]
        placed = [proxy.execute("SELECT runhub_proxy.partition_of(%s)", (p,)).fetchone()[0] for p in news]
        assert set(placed) == {0, 1} and proxy.execute("SELECT runhub_proxy.partition_of(%s)", (old,)).fetchone()[0] == 0
        assert ingest(proxy, old, event(key="before"))["inserted"] is False
        move_project(proxy_url, str(old), 1)
        stored = ingest(proxy, old, event(key="after"))
        assert stored["inserted"] and stored["eventId"] > ID_BLOCK  # partition 1's ids
        events = proxy.execute("SELECT runhub.list_events(project => %s, actor => %s)", (old, owner)).fetchone()[0]
        assert [e["idempotencyKey"] for e in events["events"]] == ["after", "before"]


def test_a_shard_with_shops_of_its_own_cannot_join_as_another_partition(cluster, template_db, scratch_database):
    from runhub_loader.proxy.deploy import ProxyError

    first, busy = scratch_database(cluster, template_db), scratch_database(cluster, template_db)
    with psycopg.connect(busy, autocommit=True) as direct:
        new_project(direct)
    proxy_url = scratch_database(cluster)
    with pytest.raises(ProxyError, match="has projects"):
        deploy_proxy(proxy_url, [first, busy])
    deploy_proxy(proxy_url, [first])
    with pytest.raises(ProxyError, match="a new partition starts empty"):
        add_shard(proxy_url, busy)


def test_an_event_whose_transaction_was_open_when_the_events_were_copied_still_moves(sharded, proxy_login):
    """The early copy takes a snapshot's events up to its newest id; an older id committed after it
    (its transaction was open) is found when the calls wait, and moved too."""
    with connect(proxy_login("app")) as app, connect(proxy_login("ingest")) as hook:
        project, _ = new_project(app)
        source = sharded.partition_of(project)
        slow = psycopg.connect(sharded.shard_urls[source])  # a transaction of its own, left open
        ingest(slow, project, event(key="older"))  # takes its id first ...
        ingest(hook, project, event(key="newer"))  # ... this one, a later id, commits first
    outcome_of_move: list = []
    mover_thread = threading.Thread(target=lambda: outcome_of_move.append(
        attempt(move_project, sharded.proxy_url, str(project), (source + 2) % 4)))
    with sharded.shard(source) as monitor:
        pid = slow.info.backend_pid
        mover_thread.start()
        wait_until(lambda: blocked_by(monitor, pid), "the mover waiting for the open transaction")
        slow.commit()
        slow.close()
        mover_thread.join()
    assert outcome_of_move[0][0] == "ok", outcome_of_move
    assert outcome_of_move[0][1].rows["business_events"] == 2
    with sharded.shard((source + 2) % 4) as shard:
        keys = sorted(k for (k,) in shard.execute(
            "SELECT idempotency_key FROM runhub.business_events WHERE project_id = %s", (project,)))
    assert keys == ["newer", "older"]


def test_events_a_stopped_mover_left_on_the_old_shard_are_deleted_by_recover(sharded, proxy_login, monkeypatch):
    with connect(proxy_login("app")) as app, connect(proxy_login("ingest")) as hook:
        project, owner = new_project(app)
        for n in range(3):
            ingest(hook, project, event(key=f"e{n}"))
    source = sharded.partition_of(project)

    calls = []

    def stopped(*args, **kwargs):  # the move cleans before it starts (nothing to do), then after its commits
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt("stopped after the commits, before the old shard's events were deleted")
        return 0

    monkeypatch.setattr(mover, "clean_sources", stopped)
    with pytest.raises(KeyboardInterrupt):
        move_project(sharded.proxy_url, str(project), (source + 1) % 4)
    monkeypatch.undo()
    with sharded.shard(source) as shard:  # inert: no project row there, so no call, job or trigger sees them
        assert _rows_of(shard, project)["business_events"] == 3 and _rows_of(shard, project)["projects"] == 0
    status = CliRunner().invoke(cli.main, ["status", "--proxy", sharded.proxy_url])
    assert "its events still on the old shard" in status.output
    done = CliRunner().invoke(cli.main, ["proxy", "recover", "--database-url", sharded.proxy_url])
    assert "deleted 3 event(s)" in done.output, done.output
    with sharded.shard(source) as shard:
        assert set(_rows_of(shard, project).values()) == {0}
    with connect(proxy_login("app")) as app:
        events = app.execute("SELECT runhub.list_events(project => %s, actor => %s)", (project, owner)).fetchone()[0]
    assert sorted(e["idempotencyKey"] for e in events["events"]) == ["e0", "e1", "e2"]
