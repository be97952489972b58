"""A workflow message is keyed by its recipient (migration 0026): its outbox id is its recipient's
id, so the outbox needs no index of its own on recipient_id. Upgraded from a checkout before it,
the outbox's rows are renumbered, and the attributions and digests that named them follow."""
from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg.types.json import Jsonb

from helpers.attribution import credit, deliver, pay
from helpers.files import older_checkout
from helpers.workflows import checkout, create_run, preview, process_runs, ready_shop
from runhub_loader.db.deploy import DeployError, deploy

# The last commit before migration 0026: the outbox had ids of its own.
BEFORE_0026 = "6777321"


def recovery(conn, carts: int):
    """A recovery run to `carts` customers, executed (its messages queued); returns (project, owner, run)."""
    project, owner = ready_shop(conn)
    for i in range(carts):
        checkout(conn, project, f"c{i}@shop.example", hours=2, cart=f"cart-{i}", amount=1000 + i)
    preview(conn, project, owner, "recover_abandoned")
    run = create_run(conn, project, owner, "recover_abandoned", uuid.uuid4().hex)["runId"]
    process_runs(conn)
    return project, owner, run


def queue_digest(conn, project) -> int:
    """A digest's mail as the digest job queues it (an outbox row of no run, named by its digest)."""
    message = conn.execute("""INSERT INTO runhub.outbox (project_id, template, locale, to_email, variables, message_id)
                              VALUES (%s, 'digest', 'en', 'owner@shop.example', %s, %s) RETURNING id""",
                           (project, Jsonb({"day": "2026-12-06"}), f"<digest.{uuid.uuid4().hex}@runhub>")).fetchone()[0]
    conn.execute("INSERT INTO runhub.digests (project_id, day, status, message_id) VALUES (%s, '2026-12-06', 'queued', %s)",
                 (project, message))
    return message


def by_message_id(conn) -> dict:
    """Each outbox row by its Message-ID (which no renumbering changes): (id, recipient_id, status)."""
    return {m: (i, r, s) for m, i, r, s in conn.execute(
        "SELECT message_id, id, recipient_id, status FROM runhub.outbox").fetchall()}


def test_an_upgraded_outbox_is_keyed_by_recipient_and_its_references_follow(fresh_db, tmp_path):
    deploy(fresh_db, older_checkout(tmp_path, BEFORE_0026, "before-0026"), schedule_cron=False)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        project, owner, sent_run = recovery(conn, carts=3)
        delivered = deliver(conn, sent_run)
        payment = pay(conn, project, "c1@shop.example", cart="cart-1", amount=1001, hours_ago=0)
        digest_project, _ = ready_shop(conn)
        digest = queue_digest(conn, digest_project)  # the outbox's own ids now run ahead of the recipients'
        _, _, queued_run = recovery(conn, carts=4)  # its messages stay queued
        before = by_message_id(conn)
        credited = credit(conn, payment)
        credited_message = next(m for m, (i, _, _) in before.items() if i == credited["message_id"])
        digest_message = next(m for m, (i, _, _) in before.items() if i == digest)
        assert any(i != r for i, r, _ in before.values() if r is not None), "before 0026 ids differ from recipients'"
        assert len(delivered) == 3

    deploy(fresh_db, schedule_cron=False)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        after = by_message_id(conn)
        assert after.keys() == before.keys()
        assert all(i == r for i, r, _ in after.values() if r is not None), "a workflow message's id is its recipient's"
        assert {m: s for m, (_, _, s) in after.items()} == {m: s for m, (_, _, s) in before.items()}
        ids = [i for i, _, _ in after.values()]
        assert len(set(ids)) == len(ids)
        assert credit(conn, payment)["message_id"] == after[credited_message][0], "the credit names the same mail"
        assert conn.execute("SELECT message_id FROM runhub.digests WHERE project_id = %s", (digest_project,)).fetchone()[0] \
            == after[digest_message][0], "the digest names the same mail"
        recipients = conn.execute("SELECT id FROM runhub.workflow_run_recipients WHERE run_id = %s", (queued_run,)).fetchall()
        # the queued messages go out as before, each recorded against its recipient
        assert sorted(deliver(conn, queued_run)) == sorted(r for (r,) in recipients)
        assert conn.execute("SELECT count(*) FROM runhub.workflow_run_recipients WHERE run_id = %s AND status = 'sent'",
                            (queued_run,)).fetchone()[0] == 4
        # new mail of either kind never takes an id already held
        _, _, new_run = recovery(conn, carts=2)
        new_ids = [r for (r,) in conn.execute("SELECT id FROM runhub.outbox WHERE run_id = %s", (new_run,)).fetchall()]
        assert new_ids == [r for (r,) in conn.execute(
            "SELECT id FROM runhub.workflow_run_recipients WHERE run_id = %s ORDER BY id", (new_run,)).fetchall()]
        another_digest = queue_digest(conn, project)
        assert another_digest not in set(ids) | set(new_ids)
        assert not conn.execute("SELECT EXISTS (SELECT 1 FROM runhub.workflow_run_recipients WHERE id = %s)",
                                (another_digest,)).fetchone()[0]


def test_the_upgrade_waits_for_every_sender_to_stop(fresh_db, tmp_path):
    """A message being sent under its old id could not be recorded (and would go out twice): the
    upgrade refuses, saying what to do, and changes nothing; once the sender let go, it goes through."""
    deploy(fresh_db, older_checkout(tmp_path, BEFORE_0026, "before-0026"), schedule_cron=False)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        recovery(conn, carts=2)
        claimed = [m["id"] for (m,) in conn.execute("SELECT runhub.claim_messages('w-old', 10, 120)").fetchall()]
        assert len(claimed) == 2
    with pytest.raises(DeployError, match="stop every runhub sender"):
        deploy(fresh_db, schedule_cron=False)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        assert not conn.execute("SELECT EXISTS (SELECT 1 FROM _yoyo_migration WHERE migration_id LIKE '0026%%')").fetchone()[0]
        conn.execute("SELECT runhub.release_messages('w-old', %s)", (claimed,))
    deploy(fresh_db, schedule_cron=False)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        assert conn.execute("SELECT bool_and(id = recipient_id) FROM runhub.outbox").fetchone()[0]
