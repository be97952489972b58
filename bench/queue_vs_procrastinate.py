"""The queue against what a user would pick instead: runhub's outbox against Procrastinate.

    .venv/bin/pip install -e '.[bench]'             # Procrastinate (PyPI), once
    .venv/bin/python bench/queue_vs_procrastinate.py                 # embedded cluster in .runhub-bench-queue, database runhub_bench_queue (rebuilt)
    .venv/bin/python bench/queue_vs_procrastinate.py --rounds 7 --messages 10000 --workers 1,8

One database, deployed fresh each invocation, with runhub and Procrastinate's schema (in schema
`procrastinate`, through the search_path its docs prescribe for another schema than public). Per
round, for each worker count W (--workers), both sides queue --messages untimed, then run in turn,
the order alternating between rounds:

  runhub         the messages are queued as bench/sender.py queues them (runs of 1,000 onboarding
                 recipients, executed by runhub.process_runs into the outbox). W threads, each a
                 sender of its own (its worker id, its connection, as the daemon connects), claim
                 with runhub.claim_messages as the daemon's main loop does (the daemon's batch, 32,
                 topped up when half empty; its lease, 120 s; heartbeat_messages every lease/3) and
                 record each message as the daemon's recorder records a delivered one: a 250 reply
                 through runhub.record_sent_many, in the statement that starts the next message
                 (runhub.start_messages; queries.record_sent_and_start). No SMTP: the reply is
                 recorded at once. Timed from the first claim until the last message is recorded
                 (runs completed too); the sent rows and succeeded runs are checked afterwards.
  procrastinate  as many jobs of an async no-op task, deferred in one batch_defer, run by its own
                 worker as an application runs it: app.run_worker_async(concurrency=W, wait=False)
                 in the opened app, its connection pool W + 2 (its listener, its fetch loop and one
                 per job finishing: it never waits for a connection). Timed from the worker's start
                 until it returns, every job finished (checked: succeeded).

Both run on the same server, with its durability (printed: the embedded cluster has fsync and
synchronous_commit off, as throwaway test clusters do), every statement of either side its own
transaction: each pays the server's commit alike. Both keep their finished rows, as each does by
default; both sides' tables are VACUUMed (ANALYZE) before each timed part. Prints messages (jobs)
per second per round, the ratio runhub/procrastinate, and per W the median and spread (min-max) of
each; exits 1 when a median ratio misses the goal (>= 5). Wall-clock on a shared machine: this
process and the server share the cores; the ratios side by side are what counts.

With --profile, or when the goal is missed, where the time goes: runhub's side once more per W
(--profile-messages) with track_functions = all, each function's time per message summed over the
workers' sessions (waits for locks included); and floors on one connection, a commit per message:
Procrastinate's own statements without its worker (fetch_job, finish_job), the writes runhub's
recording makes as one plain prepared statement (PLAIN_WRITES), and a bare one-row UPDATE.
"""
from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

import asyncio  # noqa: E402
import collections  # noqa: E402
import functools  # noqa: E402
import importlib.metadata  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

import psycopg  # noqa: E402

from runhub_loader.db import queries  # noqa: E402
from runhub_loader.db.deploy import deploy  # noqa: E402
from runhub_loader.db.session import connect  # noqa: E402
from runhub_loader.mail.daemon import SenderConfig  # noqa: E402
from benchlib import database_url, durability, loadavg, parser as bench_parser, record, vacuum_analyze  # noqa: E402
from sender import queue_messages  # noqa: E402

try:
    import procrastinate  # noqa: E402
except ImportError:
    procrastinate = None

DATABASE = "runhub_bench_queue"
SCHEMA = "procrastinate"
GOAL = 5.0
REPLY = "2.0.0 Ok: queued"  # what smtplib hands the daemon after a 250 to DATA
RUNHUB_TABLES = ["runhub.outbox", "runhub.workflow_run_recipients", "runhub.workflow_runs", "runhub.business_events"]
PROCRASTINATE_TABLES = [f"{SCHEMA}.procrastinate_jobs", f"{SCHEMA}.procrastinate_events"]
# A sender's session is a warm one: PL/Python loaded (the claim signs each message's unsubscribe
# link). Each worker's session calls this before the clock starts; the profile leaves it out.
WARM_UP = "SELECT runhub.unsubscribe_token(gen_random_uuid(), 'warm@bench.example')"
WARM_UP_FUNCTIONS = {"unsubscribe_token", "_sign_unsubscribe"}
INSTALL_HINT = ("bench/queue_vs_procrastinate.py compares with Procrastinate, which is not installed: "
                ".venv/bin/pip install -e '.[bench]' (or .venv/bin/pip install procrastinate)")


# -- runhub: W senders of one worker each, through runhub's own functions --------------------------

class OutboxWorker:
    """One worker with its own connection: claims as the daemon's main loop does and records each
    message as its recorder does, the next message's start in the statement of the last outcome."""

    def __init__(self, url: str, batch: int, lease_seconds: int):
        self.url, self.batch, self.lease_seconds = url, batch, lease_seconds
        self.worker_id = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self.local: collections.deque = collections.deque()
        self.more_due = True
        self.error: BaseException | None = None

    def run(self, start: threading.Barrier) -> None:
        try:
            with connect(self.url) as conn:
                conn.execute(WARM_UP)
                start.wait()
                self._deliver_all(conn)
        except BaseException as exc:  # noqa: BLE001 (reported by the caller)
            self.error = exc
            start.abort()

    def _deliver_all(self, conn) -> None:
        current = None
        heartbeat_at = time.monotonic() + self.lease_seconds / 3
        while True:
            if self.more_due and len(self.local) <= self.batch // 2:
                self._claim(conn)
            following = self.local.popleft() if self.local else None
            if current is None and following is None:
                return
            current = self._record(conn, current, following)
            if time.monotonic() >= heartbeat_at:
                self._heartbeat(conn, current)
                heartbeat_at = time.monotonic() + self.lease_seconds / 3

    def _claim(self, conn) -> None:
        """Top the local queue up to a batch (Sender._claim)."""
        room = self.batch - len(self.local)
        rows = conn.execute("SELECT runhub.claim_messages(%s, %s, %s)",
                            (self.worker_id, room, self.lease_seconds)).fetchall()
        self.more_due = len(rows) == room
        self.local.extend(message["id"] for (message,) in rows)

    def _record(self, conn, done: int | None, following: int | None) -> int | None:
        """The recorder's statement: `done` sent (a 250) and `following` started; returns
        `following` if its lease still holds (the message to send next)."""
        params = (([self.worker_id, [done], [REPLY]] if done is not None else [])
                  + ([self.worker_id, [following]] if following is not None else []))
        rows = conn.execute(queries.record_sent_and_start(done is not None, following is not None), params).fetchall()
        if done is not None:
            if [status for call, _, status in rows if call == "sent"] != ["sent"]:
                raise RuntimeError(f"message {done} was not recorded sent: {rows}")
        return following if any(call == "start" for call, _, _ in rows) else None

    def _heartbeat(self, conn, current: int | None) -> None:
        held = list(self.local) + ([current] if current else [])
        if held:
            conn.execute("SELECT runhub.heartbeat_messages(%s, %s, %s)", (self.worker_id, held, self.lease_seconds))


def run_runhub(url: str, workers: int, args) -> float:
    """Seconds from the first claim until every queued message is recorded sent."""
    senders = [OutboxWorker(url, args.batch, args.lease_seconds) for _ in range(workers)]
    start = threading.Barrier(workers + 1)
    threads = [threading.Thread(target=s.run, args=(start,)) for s in senders]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    failed = [s.error for s in senders if s.error is not None]
    if failed:
        raise SystemExit(f"a runhub worker failed: {failed[0]!r}")
    return seconds


def queue_runhub(conn, n: int, tag: str) -> list:
    runs = max(1, -(-n // 1000))
    return queue_messages(conn, runs, n // runs, tag)


def check_runhub(conn, run_ids, n: int) -> None:
    sent, succeeded = conn.execute(
        """SELECT (SELECT count(*) FROM runhub.outbox WHERE run_id = ANY (%(r)s) AND status = 'sent'),
                  (SELECT count(*) FROM runhub.workflow_runs WHERE id = ANY (%(r)s) AND status = 'succeeded')""",
        {"r": run_ids}).fetchone()
    if sent != n or succeeded != len(run_ids):
        raise SystemExit(f"runhub: {sent} of {n} messages sent, {succeeded} of {len(run_ids)} runs succeeded")


# -- Procrastinate: its own worker, concurrency W ----------------------------------------------------

def procrastinate_app(url: str, workers: int):
    """An app on the same database, in schema `procrastinate` (its documented search_path), with a
    pool large enough that no job waits for a connection, and one async no-op task."""
    connector = procrastinate.PsycopgConnector(conninfo=url, kwargs={"options": f"-c search_path={SCHEMA}"},
                                               min_size=workers + 2, max_size=workers + 2)
    logging.getLogger("procrastinate.blueprints").setLevel(logging.ERROR)  # "instantiated in the main module": its worker runs here
    app = procrastinate.App(connector=connector)

    @app.task(name="noop")
    async def noop() -> None:
        return None

    return app


async def install_procrastinate(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{SCHEMA}.procrastinate_jobs",)).fetchone()[0]:
            return
    app = procrastinate_app(url, 1)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


async def defer_and_work(url: str, workers: int, n: int, vacuum) -> tuple[float, list[int]]:
    """Defer n no-op jobs (untimed), VACUUM, then run the worker: its seconds, and the job ids."""
    app = procrastinate_app(url, workers)
    async with app.open_async():
        job_ids = await app.tasks["noop"].batch_defer_async(*({} for _ in range(n)))
        vacuum()
        t0 = time.perf_counter()
        await app.run_worker_async(concurrency=workers, wait=False, install_signal_handlers=False)
        return time.perf_counter() - t0, job_ids


def check_procrastinate(conn, job_ids, n: int) -> None:
    done = conn.execute(f"SELECT count(*) FROM {SCHEMA}.procrastinate_jobs WHERE id = ANY (%s) AND status = 'succeeded'",
                        (job_ids,)).fetchone()[0]
    if done != n or len(job_ids) != n:
        raise SystemExit(f"procrastinate: {done} of {n} jobs succeeded")


# -- where the time goes ---------------------------------------------------------------------------------

FUNCTION_STATS = """SELECT funcname, calls, total_time, self_time FROM pg_stat_user_functions WHERE schemaname = 'runhub'"""


def function_times(conn, before: dict, calls_at_least: int, timeout: float = 10.0) -> dict:
    """Per function (calls, total ms, self ms) since `before`, once the workers' sessions have
    reported (a session reports its counts when it ends)."""
    deadline = time.monotonic() + timeout
    while True:
        now = {name: tuple(v) for name, *v in conn.execute(FUNCTION_STATS).fetchall()}
        diff = {name: tuple(a - b for a, b in zip(v, before.get(name, (0, 0.0, 0.0)))) for name, v in now.items()}
        if diff.get("record_sent_many", (0,))[0] >= calls_at_least or time.monotonic() > deadline:
            return {name: v for name, v in diff.items() if v[0] > 0 and name not in WARM_UP_FUNCTIONS}
        time.sleep(0.2)


def profile_runhub(conn, url: str, workers: int, n: int, args) -> tuple[float, dict]:
    """runhub's side once more, its sessions with track_functions = all: its seconds, and each
    function's (calls, total ms, self ms) summed over the workers (waits for locks included)."""
    run_ids = queue_runhub(conn, n, f"{os.getpid()}.profile.{workers}")
    vacuum_analyze(conn, RUNHUB_TABLES)
    database = conn.execute("SELECT current_database()").fetchone()[0]
    conn.execute(f'ALTER DATABASE "{database}" SET track_functions = \'all\'')  # the workers' new sessions
    try:
        before = {name: tuple(v) for name, *v in conn.execute(FUNCTION_STATS).fetchall()}
        seconds = run_runhub(url, workers, args)
        check_runhub(conn, run_ids, n)
        return seconds, function_times(conn, before, n)
    finally:
        conn.execute(f'ALTER DATABASE "{database}" RESET track_functions')


def procrastinate_sql_alone(url: str, n: int) -> float:
    """Seconds for Procrastinate's own statements per job without its worker: fetch_job then
    finish_job, a commit each, from one connection (as run_worker sends them, from its queries)."""
    from procrastinate.sql import queries as statements
    asyncio.run(defer_only(url, n))
    with psycopg.connect(url, autocommit=True, options=f"-c search_path={SCHEMA}") as conn:
        vacuum_analyze(conn, PROCRASTINATE_TABLES)
        worker_id = conn.execute(statements["register_worker"]).fetchone()[0]
        t0 = time.perf_counter()
        for _ in range(n):
            job = conn.execute(statements["fetch_job"], {"queues": None, "worker_id": worker_id}).fetchone()
            conn.execute(statements["finish_job"], {"job_id": job[0], "status": "succeeded", "delete_job": False})
        seconds = time.perf_counter() - t0
        conn.execute(statements["unregister_worker"], {"worker_id": worker_id})
    return seconds


async def defer_only(url: str, n: int) -> None:
    app = procrastinate_app(url, 1)
    async with app.open_async():
        await app.tasks["noop"].batch_defer_async(*({} for _ in range(n)))


# The writes runhub's recording makes for a message, as one plain statement: the outbox row sent,
# its recipient sent, its *_email_sent event, the next message started (record_sent_many and
# start_messages without their checks, the run's lock and completion check, or their log line).
PLAIN_WRITES = """
    WITH sent AS (
        UPDATE runhub.outbox SET status = 'sent', sent_at = now(), smtp_code = 250, smtp_reply = %(reply)s,
                                 lease_owner = NULL, lease_expires_at = NULL
         WHERE id = %(done)s RETURNING recipient_id, message_id
    ), recipient AS (
        UPDATE runhub.workflow_run_recipients rc SET status = 'sent', updated_at = now()
          FROM sent WHERE rc.id = sent.recipient_id RETURNING rc.*, sent.message_id
    ), event AS (
        INSERT INTO runhub.business_events (project_id, event_type, occurred_at, idempotency_key, correlation_id,
                                            customer_email, customer_name, amount_cents, currency, payload)
        SELECT rc.project_id, a.sent_event_type, now(), 'mail:' || rc.message_id, rc.cart_id, rc.email, rc.name,
               rc.amount_cents, rc.currency,
               jsonb_strip_nulls(jsonb_build_object('workflowRunId', rc.run_id, 'recipientEmail', rc.email,
                   'cartId', rc.cart_id, 'abandonedAmountCents', rc.amount_cents, 'currency', rc.currency,
                   'recoveryLink', rc.link, 'messageId', rc.message_id))
          FROM recipient rc JOIN runhub.workflow_runs r ON r.id = rc.run_id JOIN runhub.actions a ON a.id = r.action_id
        ON CONFLICT (project_id, idempotency_key) DO NOTHING
    )
    UPDATE runhub.outbox SET started_at = clock_timestamp(), attempts = attempts + 1 WHERE id = %(next)s"""


def runhub_floors(conn, url: str, n: int) -> tuple[float, float]:
    """Seconds per message, one connection, a commit each, on n claimed messages (claims untimed):
    PLAIN_WRITES (prepared, as the functions' plans are cached), then a bare UPDATE of one outbox
    row by id (the floor of any queue committing once per message here)."""
    queue_runhub(conn, n, f"{os.getpid()}.floor")
    vacuum_analyze(conn, RUNHUB_TABLES)
    with psycopg.connect(url, autocommit=True, prepare_threshold=0) as session:
        ids = []
        while rows := session.execute("SELECT runhub.claim_messages('bench-floor', 100, 3600)").fetchall():
            ids += [message["id"] for (message,) in rows]
        t0 = time.perf_counter()
        for done, following in zip(ids, ids[1:] + [None]):
            session.execute(PLAIN_WRITES, {"reply": REPLY, "done": done, "next": following})
        t1 = time.perf_counter()
        for i in ids:
            session.execute("UPDATE runhub.outbox SET smtp_reply = %s WHERE id = %s", (REPLY, i))
        return (t1 - t0) / len(ids), (time.perf_counter() - t1) / len(ids)


def where_the_time_goes(conn, url: str, worker_counts: list[int], rates: dict, args) -> None:
    n = args.profile_messages
    print(f"\nwhere the time goes ({n} messages/jobs a pass; us per message; 'as timed': the rounds' medians):")
    for w in worker_counts:
        seconds, functions = profile_runhub(conn, url, w, n, args)
        procrastinate_us = 1e6 / statistics.median(r["procrastinate"] for r in rates[w])
        print(f"  W={w}: runhub as timed {1e6 / statistics.median(r['runhub'] for r in rates[w]):.0f} "
              f"(this pass {seconds * 1e6 / n:.0f}); {GOAL:g}x procrastinate's worker ({procrastinate_us:.0f}) "
              f"leaves it {procrastinate_us / GOAL:.0f}. runhub's functions in the server, summed over the "
              f"{w} session(s), waits for locks included:")
        print_functions(functions, n)
    plain, bare = runhub_floors(conn, url, n)
    print(f"  floors, one connection, a commit per message: procrastinate's own statements without its worker "
          f"(fetch_job + finish_job) {procrastinate_sql_alone(url, n) * 1e6 / n:.0f}; runhub's writes for a "
          f"message as one plain prepared statement (outbox sent, recipient sent, its event, the next started; "
          f"claims untimed) {plain * 1e6:.0f}; a bare UPDATE of one outbox row by id {bare * 1e6:.0f}")


def print_functions(functions: dict, n: int, top: int = 8) -> None:
    print(f"    {'function':32} {'calls/msg':>9} {'total us':>9} {'self us':>8}")
    for name, (calls, total, self_) in sorted(functions.items(), key=lambda f: -f[1][2])[:top]:
        print(f"    {name:32} {calls / n:>9.2f} {total * 1000 / n:>9.0f} {self_ * 1000 / n:>8.0f}")


# -- rounds ---------------------------------------------------------------------------------------------

def one_round(conn, url: str, workers: int, rnd: int, args) -> dict:
    """Both sides once at W workers, in this round's order: their rates per second."""
    n = args.messages
    run_ids = queue_runhub(conn, n, f"{os.getpid()}.{rnd}.{workers}")
    vacuum = functools.partial(vacuum_analyze, conn, RUNHUB_TABLES + PROCRASTINATE_TABLES)
    seconds = {}
    for side in (("runhub", "procrastinate") if rnd % 2 == 0 else ("procrastinate", "runhub")):
        if side == "runhub":
            vacuum()
            seconds[side] = run_runhub(url, workers, args)
            check_runhub(conn, run_ids, n)
        else:
            seconds[side], job_ids = asyncio.run(defer_and_work(url, workers, n, vacuum))
            check_procrastinate(conn, job_ids, n)
    return {side: n / s for side, s in seconds.items()}


def summary(workers: int, rates: list[dict], n: int) -> bool:
    """Median and spread per W (printed, and a row of bench/run's table); whether the median ratio
    meets the goal."""
    def spread(values, fmt):
        return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"
    ratios = [r["runhub"] / r["procrastinate"] for r in rates]
    ok = statistics.median(ratios) >= GOAL
    record("queue", f"runhub's outbox, {n:,} messages claimed and recorded sent, {workers} worker(s)",
           f"Procrastinate's worker, concurrency {workers}", ratios, f">= {GOAL:g}", ok)
    print(f"W={workers}: runhub {spread([r['runhub'] for r in rates], '.0f')} msg/s, procrastinate "
          f"{spread([r['procrastinate'] for r in rates], '.0f')} jobs/s, ratio {spread(ratios, '.2f')} "
          f"over {len(rates)} rounds (goal >= {GOAL:g}): {'ok' if ok else 'UNDER'}")
    return ok


def main() -> int:
    parser = bench_parser(__doc__, "superuser; runhub deployed and Procrastinate's schema applied into it",
                          rebuild=False, home=".runhub-bench-queue")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each W and side once per round [5]")
    parser.add_argument("--messages", type=int, default=10_000,
                        help="messages (jobs) each side per W per round: up to 1,000 or a multiple of 1,000 [10000]")
    parser.add_argument("--workers", default="1,8", help="the worker counts W, comma-separated [1,8]")
    parser.add_argument("--batch", type=int, default=SenderConfig.batch, help=f"runhub's claim batch [{SenderConfig.batch}]")
    parser.add_argument("--lease-seconds", type=int, default=SenderConfig.lease_seconds,
                        help=f"runhub's lease [{SenderConfig.lease_seconds}]")
    parser.add_argument("--profile", action="store_true", help="also print where the time goes (always when the goal is missed)")
    parser.add_argument("--profile-messages", type=int, default=2000, help="messages (jobs) of each profiling pass [2000]")
    args = parser.parse_args()
    worker_counts = [int(w) for w in args.workers.split(",")]
    queueable = [n >= 1 and (n <= 1000 or n % 1000 == 0) for n in (args.messages, args.profile_messages)]  # runs of <= 1,000
    if args.rounds < 1 or not all(queueable) or min(worker_counts) < 1:
        parser.error("--rounds >= 1, --messages and --profile-messages up to 1,000 or a multiple of 1,000, --workers >= 1 each")
    if procrastinate is None:
        raise SystemExit(INSTALL_HINT)

    print(f"load average at start: {loadavg()} ({os.cpu_count()} cores)", flush=True)
    args.rebuild = True
    url = database_url(args, DATABASE)
    deploy(url, schedule_cron=False)  # no minute sweep racing the workers
    asyncio.run(install_procrastinate(url))
    rates: dict[int, list[dict]] = {w: [] for w in worker_counts}
    with psycopg.connect(url, autocommit=True) as conn:
        print(f"server: {durability(conn)}; procrastinate {importlib.metadata.version('procrastinate')}; "
              f"{args.messages} messages/jobs each side, runhub batch {args.batch}", flush=True)
        print(f"{'round':>5} {'W':>3} {'runhub msg/s':>13} {'procr. jobs/s':>14} {'ratio':>6}")
        for rnd in range(args.rounds):
            for w in worker_counts:
                r = one_round(conn, url, w, rnd, args)
                rates[w].append(r)
                print(f"{rnd + 1:>5} {w:>3} {r['runhub']:>13.0f} {r['procrastinate']:>14.0f} "
                      f"{r['runhub'] / r['procrastinate']:>6.2f}", flush=True)
        print()
        ok = all([summary(w, rates[w], args.messages) for w in worker_counts])
        if args.profile or not ok:
            where_the_time_goes(conn, url, worker_counts, rates, args)
    print(f"load average at end: {loadavg()}")
    print("reproduce: .venv/bin/python bench/queue_vs_procrastinate.py " + " ".join(sys.argv[1:]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
