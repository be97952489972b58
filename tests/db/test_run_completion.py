"""A run completes when its last message is recorded, however its senders' records interleave:
the last two recording at once still complete it (the second waits for the first's lock on the
run, then sees its message final)."""
from __future__ import annotations

import threading
import uuid

import psycopg

from helpers.workflows import checkout, create_run, preview, process_runs, ready_shop, run_status


def executed_recovery(conn, carts: int):
    project, owner = ready_shop(conn)
    for i in range(carts):
        checkout(conn, project, f"c{i}@shop.example", hours=2, cart=f"cart-{i}")
    preview(conn, project, owner, "recover_abandoned")
    run = create_run(conn, project, owner, "recover_abandoned", uuid.uuid4().hex)["runId"]
    process_runs(conn)
    return run


def claim_one(conn, worker: str) -> int:
    (message,), = conn.execute("SELECT runhub.claim_messages(%s, 1, 120)", (worker,)).fetchall()
    conn.execute("SELECT runhub.start_messages(%s, %s)", (worker, [message["id"]]))
    return message["id"]


def record(conn, worker: str, message: int) -> None:
    conn.execute("SELECT * FROM runhub.record_sent_many(%s, %s, %s)", (worker, [message], ["250 ok"]))


def test_the_last_two_messages_recorded_at_once_complete_the_run(db_url, conn):
    run = executed_recovery(conn, carts=2)
    first, second = (psycopg.connect(db_url) for _ in range(2))
    try:
        a, b = claim_one(first, "w-a"), claim_one(second, "w-b")
        first.commit()
        second.commit()
        record(first, "w-a", a)  # uncommitted: b's message is still out, a's is being recorded
        done = threading.Event()

        def record_b():
            record(second, "w-b", b)  # waits for the first's lock on the run, then sees a's final
            done.set()

        thread = threading.Thread(target=record_b)
        thread.start()
        first.commit()
        thread.join(30)
        assert done.is_set()
        second.commit()
    finally:
        first.close()
        second.close()
    assert run_status(conn, run) == "succeeded"
