"""Load: 16 clients for 60 s against 50 projects, with the real sender and sink, and the invariants after.

    .venv/bin/python bench/load.py                  # embedded cluster in .runhub-bench, database runhub_bench_load (rebuilt)
    .venv/bin/python bench/load.py --seconds 30 --backlog 2000

Bounded and loopback only: it stops by itself. Each run rebuilds its database (deploy, 50 projects
with the settings every action needs and 200 customers each), then:

1. Idle delivery: a backlog of --backlog onboarding mails (runs in 4 projects of their own) is
   delivered by `runhub sender` (a subprocess, --concurrency 8) to `runhub smtp-sink` (another
   subprocess) with nothing else going on: mails per second from the first claim to the last send.
2. Under load: the same backlog again, then for --seconds: 12 ingest clients (as runhub_ingest,
   one event per transaction, 10 % of them replays of an event another client just sent: concurrent
   duplicates), 3 workflow clients (as runhub_app: preview, then create_run on a random project and
   action), 1 client calling runhub.process_runs(10) as the minute sweep would, and the sender
   delivering the backlog and every run's mail. Mails per second of the backlog under load against
   idle is printed as a ratio. A sampler reads pg_stat_activity every 50 ms: where the sender's
   sessions wait (wait_event_type:wait_event, or CPU when they do not).
3. After: every run final (the sender drains what the load made), then the invariants:
   - no SQLSTATE but the documented refusals (PT4xx of the workflow calls; none for ingest);
   - every replay of an event got the first one's id;
   - rate limits exact: per project and minute, no more than 10 create_run calls returned, and
     where one was refused for the rate (PT429) exactly 10 did (a call refused for another reason
     rolls back with its count; calls that straddle a minute are left out);
   - every run final, every Message-ID delivered once (the sink's files), as many *_email_sent
     events as sent messages.
Prints throughput and p50/p95/p99 per call, the SQLSTATE table, the sender's waits and the
invariants; exits 1 when one fails.
"""
from __future__ import annotations

import collections
import email.parser
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from runhub_loader.db.deploy import deploy  # noqa: E402
from runhub_loader.db.embedded import free_port  # noqa: E402
from benchlib import database_url, loadavg, parser as bench_parser, record  # noqa: E402

DATABASE = "runhub_bench_load"
RUNHUB = Path(sys.executable).parent / "runhub"
PROJECTS, CUSTOMERS = 50, 200
SETTINGS = {"shopUrl": "https://shop.example", "integrations": ["payments", "email"], "holdoutPercent": 0}  # every recipient mailed: like for like
ACTIONS = {"recover_abandoned": {}, "onboard_users": {}, "send_promo": {"subject": "Sale", "content": "-20 % this week"}}
INGEST_ROLE, APP_ROLE = "runhub_bench_ingest", "runhub_bench_app"
FINAL = ("succeeded", "failed", "cancelled")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] if ordered else float("nan")


# -- set-up ------------------------------------------------------------------------------------------

def fresh_database(args) -> str:
    args.rebuild = True  # a load run starts from nothing
    url = database_url(args, DATABASE)
    deploy(url, schedule_cron=False)
    return url


def roles(admin) -> None:
    admin.execute(f"""DO $$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{INGEST_ROLE}') THEN CREATE ROLE {INGEST_ROLE} NOLOGIN IN ROLE runhub_ingest; END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN CREATE ROLE {APP_ROLE} NOLOGIN IN ROLE runhub_app; END IF;
    END $$""")


def project(admin, name: str, signups: int, checkouts: int) -> tuple[str, str]:
    owner = str(uuid.uuid4())
    pid = admin.execute("SELECT runhub.create_project(%s, %s, 'UTC', 'EUR', 'en')", (name, owner)).fetchone()[0]
    admin.execute("SELECT runhub.update_project_settings(%s, %s, %s)", (pid, owner, Jsonb(SETTINGS)))
    admin.execute("""SELECT runhub.ingest_event(%(p)s, jsonb_build_object(
                         'type', CASE WHEN g <= %(s)s THEN 'user_signed_up' ELSE 'checkout_started' END,
                         'occurredAt', to_char(now() - interval '2 hours', 'YYYY-MM-DD"T"HH24:MI:SSOF'),
                         'idempotencyKey', 'seed-' || g, 'correlationId', 'cart-' || g,
                         'amountCents', 1000 + g, 'currency', 'EUR',
                         'customer', jsonb_build_object('email', 'c' || g || '@' || %(d)s)))
                       FROM generate_series(1, %(n)s) g""",
                  {"p": pid, "s": signups, "n": signups + checkouts, "d": f"{name}.example"})
    return str(pid), owner


def backlog_runs(admin, tag: str, mails: int) -> list[str]:
    """Onboarding runs in 4 projects of their own, executed: `mails` queued messages in all."""
    runs = []
    for i in range(4):
        pid, owner = project(admin, f"{tag}{i}", mails // 4, 0)
        admin.execute("SELECT runhub.preview(%s, %s, 'onboard_users', '{}')", (pid, owner))
        runs.append(admin.execute("SELECT runhub.create_run(%s, %s, 'onboard_users', %s, '{}', NULL, NULL)",
                                  (pid, owner, tag)).fetchone()[0]["runId"])
    while admin.execute("SELECT runhub.process_runs(10)").fetchone()[0]:
        pass
    return runs


def sent_count(admin, runs: list[str]) -> int:
    return admin.execute("SELECT count(*) FROM runhub.outbox WHERE run_id = ANY (%s::uuid[]) AND status = 'sent'",
                         (runs,)).fetchone()[0]


def drain_rate(admin, runs: list[str], mails: int, deadline_s: float) -> float:
    """Mails per second from the first send to the last (of these runs)."""
    stop = time.monotonic() + deadline_s
    while sent_count(admin, runs) < mails:
        if time.monotonic() > stop:
            raise SystemExit(f"the backlog was not delivered within {deadline_s:.0f} s")
        time.sleep(0.1)
    first, last = admin.execute("SELECT min(sent_at), max(sent_at) FROM runhub.outbox WHERE run_id = ANY (%s::uuid[])",
                                (runs,)).fetchone()
    return mails / max((last - first).total_seconds(), 1e-3)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the clients ---------------------------------------------------------------------------------------

class Results:
    def __init__(self):
        self.lock = threading.Lock()
        self.latency = collections.defaultdict(list)   # call -> seconds
        self.states = collections.Counter()             # (call, SQLSTATE or 'ok')
        self.event_ids = collections.defaultdict(set)   # (project, key) -> ids answered
        self.limited = []                               # (project, first minute, last minute, SQLSTATE or 'ok')
        self.recent: collections.deque = collections.deque(maxlen=200)

    def record(self, call: str, seconds: float, state: str) -> None:
        with self.lock:
            self.latency[call].append(seconds)
            self.states[(call, state)] += 1


def timed(results: Results, call: str, conn, sql: str, params) -> tuple[object, str]:
    t0 = time.perf_counter()
    try:
        row = conn.execute(sql, params).fetchone()
        state = "ok"
    except psycopg.Error as exc:
        row, state = None, exc.sqlstate or type(exc).__name__
    results.record(call, time.perf_counter() - t0, state)
    return row, state


def ingest_client(url, projects, results: Results, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"SET ROLE {INGEST_ROLE}")
        while not stop.is_set():
            with results.lock:
                replay = results.recent[rng.randrange(len(results.recent))] if results.recent and rng.random() < 0.1 else None
            if replay is None:
                pid = rng.choice(projects)[0]
                kind = rng.choice(["checkout_started", "payment_succeeded", "lead_created", "user_signed_up"])
                n = rng.randrange(CUSTOMERS)
                body = {"type": kind, "occurredAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "idempotencyKey": uuid.uuid4().hex, "customer": {"email": f"c{n}@load.example"}}
                if kind in ("checkout_started", "payment_succeeded"):
                    body |= {"amountCents": 1000 + n, "currency": "EUR", "correlationId": f"cart-{n}"}
                with results.lock:
                    results.recent.append((pid, body))  # before sending: another client may replay it at once
            else:
                pid, body = replay
            row, state = timed(results, "ingest_event", conn, "SELECT runhub.ingest_event(%s, %s)", (pid, Jsonb(body)))
            if row is not None:
                with results.lock:
                    results.event_ids[(pid, body["idempotencyKey"])].add(row[0]["eventId"])


def workflow_client(url, projects, results: Results, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"SET ROLE {APP_ROLE}")
        while not stop.is_set():
            pid, owner = rng.choice(projects)
            action = rng.choice(list(ACTIONS))
            params = Jsonb(ACTIONS[action])
            timed(results, "preview", conn, "SELECT runhub.preview(%s, %s, %s, %s)", (pid, owner, action, params))
            started = time.time()
            _, state = timed(results, "create_run", conn,
                             "SELECT runhub.create_run(%s, %s, %s, %s, %s, NULL, NULL)",
                             (pid, owner, action, uuid.uuid4().hex, params))
            with results.lock:
                results.limited.append((pid, int(started // 60), int(time.time() // 60), state))


def sweep_client(url, results: Results, stop: threading.Event) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.wait(0.2):
            timed(results, "process_runs", conn, "SELECT runhub.process_runs(10)", ())


def sampler(url, app_name: str, waits: collections.Counter, stop: threading.Event) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.wait(0.05):
            for wtype, wevent, state in conn.execute(
                    "SELECT wait_event_type, wait_event, state FROM pg_stat_activity WHERE application_name = %s",
                    (app_name,)).fetchall():
                if state == "active":
                    waits[f"{wtype}:{wevent}" if wtype else "CPU (no wait)"] += 1
                elif state == "idle":
                    waits["idle (waiting for the client)"] += 1


# -- main --------------------------------------------------------------------------------------------

def main() -> int:
    parser = bench_parser(__doc__, "superuser; it is emptied", rebuild=False)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the load runs [60]")
    parser.add_argument("--backlog", type=int, default=3000, help="mails queued for each delivery measurement [3000]")
    parser.add_argument("--seed", type=int, default=1, help="the clients' random seed [1]")
    args = parser.parse_args()
    if not 5 <= args.seconds <= 600 or not 100 <= args.backlog <= 20000:
        parser.error("--seconds 5 to 600, --backlog 100 to 20000")
    print(f"load average at start: {loadavg()} ({os.cpu_count()} cores)", flush=True)
    url = fresh_database(args)
    mail_dir = Path(tempfile.mkdtemp(prefix="runhub-load-mail-"))
    sink_port = free_port()
    app_name = f"load-sender-{uuid.uuid4().hex[:6]}"
    sink = subprocess.Popen([str(RUNHUB), "smtp-sink", "--port", str(sink_port), "--dir", str(mail_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sep = "&" if "?" in url else "?"
    sender = subprocess.Popen([str(RUNHUB), "--database-url", f"{url}{sep}application_name={app_name}", "--log-format", "json",
                               "sender", "--smtp-url", f"smtp://127.0.0.1:{sink_port}", "--concurrency", "8",
                               "--poll-seconds", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with psycopg.connect(url, autocommit=True) as admin:
            roles(admin)
            projects = [project(admin, f"shop{i}", CUSTOMERS // 2, CUSTOMERS // 2) for i in range(PROJECTS)]
            print(f"{PROJECTS} projects with {CUSTOMERS} customers each; backlog of {args.backlog} mails per measurement",
                  flush=True)

            idle_runs = backlog_runs(admin, "idle", args.backlog)
            idle = drain_rate(admin, idle_runs, args.backlog, 600)
            print(f"1. idle delivery: {idle:.0f} mails/s", flush=True)

            results, waits, stop = Results(), collections.Counter(), threading.Event()
            threads = ([threading.Thread(target=ingest_client, args=(url, projects, results, stop, args.seed * 100 + i))
                        for i in range(12)]
                       + [threading.Thread(target=workflow_client, args=(url, projects, results, stop, args.seed * 200 + i))
                          for i in range(3)]
                       + [threading.Thread(target=sweep_client, args=(url, results, stop)),
                          threading.Thread(target=sampler, args=(url, app_name, waits, stop))])
            t0 = time.monotonic()
            for t in threads:
                t.start()
            stop.wait(2)  # the load under way, the backlog comes (its runs executed here or by the sender)
            cpu0, wall0 = cpu_seconds(sender.pid), time.monotonic()
            load_runs = backlog_runs(admin, "load", args.backlog)
            under_load = drain_rate(admin, load_runs, args.backlog, 600)  # the load goes on meanwhile
            sender_cpu = (cpu_seconds(sender.pid) - cpu0) / (time.monotonic() - wall0)
            stop.wait(max(0.0, args.seconds - (time.monotonic() - t0)))
            stop.set()
            for t in threads:
                t.join(timeout=60)
            elapsed = time.monotonic() - t0

            print(f"2. {elapsed:.0f} s of load (12 ingest, 3 workflow, 1 sweep client, the sender): calls")
            print(f"   {'call':14} {'calls':>7} {'per s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
            for call, values in sorted(results.latency.items()):
                ms = [v * 1000 for v in values]
                print(f"   {call:14} {len(ms):>7} {len(ms) / elapsed:>7.0f} {percentile(ms, 50):>8.2f} "
                      f"{percentile(ms, 95):>8.2f} {percentile(ms, 99):>8.2f}")
            print("   SQLSTATEs: " + ", ".join(f"{c} {s} x{n}" for (c, s), n in sorted(results.states.items())))
            ratio = under_load / idle
            print(f"   delivery of the backlog under load: {under_load:.0f} mails/s, idle {idle:.0f}: ratio {ratio:.2f}")
            print(f"   the sender process had {100 * sender_cpu:.0f} % of a core while it delivered the backlog under load "
                  f"(load average {loadavg()} on {os.cpu_count()} cores)")
            total = sum(waits.values()) or 1
            print("   the sender's sessions, sampled every 50 ms: " + ", ".join(
                f"{k} {100 * n / total:.0f} %" for k, n in waits.most_common(8)))

            # 3. drain, then the invariants
            deadline = time.monotonic() + 300
            while admin.execute("SELECT count(*) FROM runhub.workflow_runs WHERE status NOT IN ('succeeded', 'failed', 'cancelled')"
                                ).fetchone()[0]:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            problems = invariants(admin, results, mail_dir)
            record("load", f"delivery under {elapsed:.0f} s of 16 clients' load", "delivery idle", ratio, "(reported)", True)
            record("load", "invariants after the load (no mail twice, rate limits exact, runs final)", "-", float(len(problems)),
                   "0 broken", not problems, "; ".join(problems))
    finally:
        sender.terminate()
        sink.terminate()
        sender.wait(timeout=60)
        sink.wait(timeout=30)
    print("3. invariants: " + ("all hold" if not problems else "BROKEN"))
    for p in problems:
        print("   - " + p)
    shutil.rmtree(mail_dir, ignore_errors=True)
    print(f"load average at end: {loadavg()}")
    print("reproduce: .venv/bin/python bench/load.py " + " ".join(sys.argv[1:]))
    return 1 if problems else 0


def invariants(admin, results: Results, mail_dir: Path) -> list[str]:
    problems = []
    unexpected = {k: n for k, n in results.states.items()
                  if k[1] != "ok" and not (k[0] in ("preview", "create_run") and k[1].startswith("PT4"))}
    if unexpected:
        problems.append(f"unexpected SQLSTATEs: {unexpected}")
    split = {k: ids for k, ids in results.event_ids.items() if len(ids) > 1}
    if split:
        problems.append(f"{len(split)} replayed event(s) answered with different ids")
    # The limiter counts by the server's clock at the call; a call that straddles a minute (by the
    # client's clock) could belong to either: those minutes are checked for "at most 10" only.
    # A call counts when it returns (a call refused for another reason rolls back with its count:
    # docs/sql-contract.md, create_run): at most 10 returned a minute, and 10 exactly where one was
    # refused for the rate.
    buckets = collections.defaultdict(lambda: [0, 0, False])  # (project, minute) -> [returned, rate-refused, uncertain]
    for pid, first, last, state in results.limited:
        if first != last:
            buckets[(pid, first)][2] = buckets[(pid, last)][2] = True
            continue
        if state in ("ok", "PT429"):
            buckets[(pid, first)][0 if state == "ok" else 1] += 1
    over = [k for k, (through, refused, uncertain) in buckets.items()
            if through > 10 or (refused and through != 10 and not uncertain)]
    if over:
        problems.append(f"rate limit not exact in {len(over)} project-minute(s), e.g. {over[:3]}")
    open_runs = admin.execute("SELECT count(*) FROM runhub.workflow_runs WHERE status NOT IN ('succeeded', 'failed', 'cancelled')"
                              ).fetchone()[0]
    if open_runs:
        problems.append(f"{open_runs} run(s) not final")
    ids = collections.Counter()
    parser = email.parser.BytesHeaderParser()
    for path in mail_dir.rglob("*.eml"):
        with open(path, "rb") as f:
            ids[str(parser.parse(f)["Message-ID"]).strip()] += 1
    twice = [m for m, n in ids.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} Message-ID(s) delivered more than once")
    sent = admin.execute("SELECT count(*) FROM runhub.outbox WHERE status = 'sent'").fetchone()[0]
    if sent != len(ids):
        problems.append(f"{sent} messages recorded sent, {len(ids)} delivered to the sink")
    events = admin.execute("SELECT count(*) FROM runhub.business_events WHERE event_type LIKE '%\\_email\\_sent'").fetchone()[0]
    sent_workflow = admin.execute("SELECT count(*) FROM runhub.outbox WHERE status = 'sent' AND run_id IS NOT NULL").fetchone()[0]
    if events != sent_workflow:
        problems.append(f"{events} *_email_sent events for {sent_workflow} sent workflow messages")
    print(f"   checked: {len(results.event_ids)} distinct events ({sum(len(v) for v in results.latency.values())} calls), "
          f"{len(buckets)} project-minutes of create_run, {len(ids)} mails at the sink, {sent} sent, {events} sent events")
    return problems


if __name__ == "__main__":
    sys.exit(main())
