"""Sender benchmark: the daemon's throughput, in one process and in several, to a local SMTP sink
against a plain smtplib loop over one connection and over several.

    .venv/bin/python bench/sender.py --home .runhub-bench-sender    # database runhub_bench_sender (rebuilt)
    .venv/bin/python bench/sender.py --processes 4 --rounds 7 --runs 2 --recipients 1000 --concurrency 8

The sink is `runhub smtp-sink` in its own process on 127.0.0.1 (it stores every mail as an .eml file,
in a temporary folder, and offers PIPELINING as production MTAs do: the daemon uses it, smtplib's
sendmail does not). Each side of a round sends --runs runs of --action (onboard_users: bulk mail, the
same content for every recipient but the name and link; recover_abandoned: personal mail, each its own
cart link and amount) for --recipients customers each, in fresh projects. In the same round:

  daemon x1  `runhub sender` as an operator runs it (its own process, JSON logs to --daemon-log, the
             CLI's defaults but --concurrency and --batch), started first and left idle until it
             listens, as a long-running daemon is: its start-up is not timed. Then its runs are
             created and executed (runhub.process_runs) in one transaction, whose commit puts their
             messages in the outbox at once and wakes it; timed on the database clock from that
             commit until the last message is recorded sent (max(sent_at)): claiming, rendering,
             SMTP and recording. Then SIGTERM (it must exit 0). Never in this process: rendering the
             plain loops' messages here fills the renderer's caches (each recipient's envelope
             address, each run's template) for the very messages it would send, which flattered an
             earlier, in-process version of this bench.
  daemon xP  the same with `--processes P` (--processes, default the machine's cores).
  plain      the same kind of messages, rendered beforehand by runhub_loader.mail.render.render_bytes
             from outbox rows (runhub._messages_json, as claim_messages gives them; runs queued in a
             transaction that is rolled back) with the same From and unsubscribe URL, sent with
             smtplib.sendmail over one reused connection: the issue's "plain smtplib loop".
  plain xC   the same pre-rendered messages over C connections in C threads (C = --concurrency).

The sides' order is reversed every other round. Prints messages/second per round, then the median and
spread (min-max) of each, and the ratios: daemon xP / plain xC (target >= 0.8) and, as item 1 of the
issue asked, daemon x1 / plain (target >= 0.8); exits 1 when one is missed. And where the CPU went:
per message, the sender side (the daemon's processes, or this process for the plain loops), the sink
and the database server (from /proc: each process tree's user and system time, its exited children
included), and what that allows on this machine's cores: the floor a side cannot pass. Wall-clock on
a shared machine: the database, the sink and the senders compete for the same cores, with whatever
else runs there; ratios side by side in one round are what counts.
"""
from __future__ import annotations

import argparse
import os
import queue
import shutil
import signal
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.append(str(Path(__file__).resolve().parent))  # benchlib, also under `python -P`
from benchlib import record  # noqa: E402
from runhub_loader.db.deploy import deploy  # noqa: E402
from runhub_loader.db.embedded import Cluster, free_port  # noqa: E402
from runhub_loader.mail.daemon import SenderConfig  # noqa: E402
from runhub_loader.mail.preview import SAMPLES  # noqa: E402
from runhub_loader.mail.render import render_bytes  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DATABASE = "runhub_bench_sender"
SETTINGS = {"shopUrl": "https://shop.example", "integrations": ["payments", "email"], "holdoutPercent": 0}  # every recipient mailed: like for like
FROM_ADDR = "Run Hub <runhub@localhost>"                        # SenderConfig's defaults
UNSUBSCRIBE_URL = "https://localhost/unsubscribe?token={token}"
TARGET = 0.8         # daemon xP / plain xC
TARGET_ONE = 0.8     # daemon x1 / plain (item 1)
CORES = os.cpu_count() or 1


# -- the sink, in its own process ------------------------------------------------------------------

def start_sink(folder: Path, port: int) -> subprocess.Popen:
    """`runhub smtp-sink` as a child process; returns once it answers SMTP."""
    argv = [sys.executable, "-c", "from runhub_loader.cli import main; main()",
            "smtp-sink", "--port", str(port), "--dir", str(folder)]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while True:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=2) as smtp:
                smtp.noop()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"smtp-sink exited: {proc.stderr.read().decode(errors='replace')}")
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("smtp-sink did not answer within 30 s")
            time.sleep(0.1)


def stop_sink(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def delivered(folder: Path) -> int:
    return sum(1 for _ in folder.glob("*.eml"))


def wait_delivered(folder: Path, expected: int, timeout: float = 10.0) -> int:
    """The sink writes each file before it answers 250, so this is immediate; bounded anyway."""
    deadline = time.monotonic() + timeout
    while (n := delivered(folder)) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return n


# -- the messages ----------------------------------------------------------------------------------

LOCALES = "ARRAY['en','fr','de','es','ar']"


ACTIONS = {  # action -> the events that make each of its recipients (g: 1..recipients)
    "onboard_users": """'user_signed_up', now() - interval '1 hour', 'signup:' || g, NULL, NULL, NULL, '{}'::jsonb""",
    "recover_abandoned": """'checkout_started', now() - interval '1 hour', 'checkout:' || g, 'cart-' || g,
                            1000 + g * 7, 'EUR', jsonb_build_object('cartId', 'cart-' || g)""",
}


def queue_messages(conn, runs: int, recipients: int, tag: str, action: str = "onboard_users") -> list[uuid.UUID]:
    """`runs` runs of `action` for `recipients` customers each (a fresh project each: cooldowns and
    exclusions are per project), executed by process_runs into the outbox. Onboarding is bulk mail
    (the same content for all but the name and unsubscribe link); recovery is personal (each
    message its own cart link and amount)."""
    run_ids = []
    for i in range(runs):
        owner = uuid.uuid4()
        project = conn.execute("SELECT runhub.create_project(%s, %s, 'Europe/Paris', 'EUR')",
                               (f"Bench shop {tag}.{i}", owner)).fetchone()[0]
        conn.execute("SELECT runhub.update_project_settings(%s, %s, %s)", (project, owner, Jsonb(SETTINGS)))
        conn.execute(f"""
            INSERT INTO runhub.business_events (project_id, event_type, occurred_at, idempotency_key,
                                                correlation_id, amount_cents, currency, payload,
                                                customer_email, customer_name, customer_locale)
            SELECT %s, {ACTIONS[action]},
                   'user' || g || '@bench.example', 'User ' || g, ({LOCALES})[1 + g %% 5]
              FROM generate_series(1, %s) g""", (project, recipients))
        conn.execute("SELECT runhub.rebuild_customers(%s)", (project,))  # loaded past ingest
        shown = conn.execute("SELECT runhub.preview(%s, %s, %s, '{}')", (project, owner, action)).fetchone()[0]
        assert shown["count"] == recipients, shown
        run = conn.execute("SELECT runhub.create_run(%s, %s, %s, 'bench', '{}')",
                           (project, owner, action)).fetchone()[0]
        run_ids.append(uuid.UUID(run["runId"]))
    conn.execute("SELECT runhub.process_runs(%s)", (runs,))
    queued = conn.execute("SELECT count(*) FROM runhub.outbox WHERE run_id = ANY (%s) AND status = 'queued'",
                          (run_ids,)).fetchone()[0]
    assert queued == runs * recipients, (queued, runs * recipients)
    conn.execute("ANALYZE runhub.outbox")
    conn.execute("ANALYZE runhub.workflow_run_recipients")
    return run_ids


def prerender(conn, run_ids) -> tuple[list[tuple[str, str, bytes]], float]:
    """(envelope from, recipient, bytes) of each message, rendered as the daemon renders it, and the
    rendering time in seconds (not part of the baseline's time)."""
    rows = conn.execute("""SELECT runhub._messages_json(array_agg(o.id ORDER BY o.id))
                             FROM runhub.outbox o WHERE o.run_id = ANY (%s)""", (run_ids,)).fetchall()
    sender = parseaddr(FROM_ADDR)[1]
    t0 = time.perf_counter()
    out = []
    for (m,) in rows:
        token = m.get("unsubscribeToken")
        mail = render_bytes(m["template"], m["locale"], m["variables"], message_id=m["messageId"],
                              to_email=m["toEmail"], to_name=m.get("toName"), from_addr=FROM_ADDR,
                              unsubscribe_url=UNSUBSCRIBE_URL.format(token=token) if token else None)
        out.append((sender, m["toEmail"], mail))
    return out, time.perf_counter() - t0


# -- where the CPU goes ----------------------------------------------------------------------------

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat's fields after the command name: [0] state, [1] ppid, [11] utime, [12] stime,
    [13] cutime, [14] cstime (its waited-for children's)."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def tree_cpu(root: int | None) -> float | None:
    """CPU seconds (user and system) of a process and its descendants, the exited ones included (a
    parent's cutime and cstime hold its waited-for children's); None if it cannot be seen here."""
    if root is None or not Path(f"/proc/{root}").exists():
        return None
    children = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children[int(_stat(int(entry.name))[1])].append(int(entry.name))
            except (OSError, IndexError):  # gone meanwhile
                pass
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            fields = _stat(pid)
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])
        todo += children[pid]
    return total / TICKS


@dataclass
class Cpu:
    """CPU seconds of the three parties, read at one moment."""
    sender: float | None
    sink: float | None
    database: float | None

    def per_message(self, before: "Cpu", n: int) -> dict[str, float | None]:
        return {k: None if getattr(self, k) is None or getattr(before, k) is None
                else (getattr(self, k) - getattr(before, k)) * 1000 / n for k in ("sender", "sink", "database")}


# What a daemon's database session runs, told by its last statement.
SESSION_ROLES = (("heartbeat", "heartbeat_messages"), ("recorder", "record_sent"), ("recorder", "start_messages"),
                 ("recorder", "record_failure"), ("main loop", "claim_messages"), ("main loop", "process_runs"),
                 ("main loop", "LISTEN"))


def session_cpu(conn, app: str) -> dict[int, tuple[str, float]]:
    """Each of the daemon's database sessions (its backends): (what it runs, CPU seconds so far)."""
    out = {}
    for pid, query in conn.execute("SELECT pid, query FROM pg_stat_activity WHERE application_name = %s", (app,)):
        cpu = tree_cpu(pid)
        if cpu is not None:
            out[pid] = (next((role for role, mark in SESSION_ROLES if mark in query), "other"), cpu)
    return out


def session_cpu_per_message(before: dict, after: dict, n: int) -> dict[str, float]:
    """ms of CPU a message in the daemon's own sessions, by what they run (a session opened meanwhile from 0)."""
    spent: dict[str, float] = defaultdict(float)
    for pid, (role, cpu) in after.items():
        spent[role] += (cpu - before.get(pid, (role, 0.0))[1]) * 1000 / n
    return dict(spent)


def server_pid(conn) -> int | None:
    """The postmaster's pid, if the server runs on this machine (a backend's parent)."""
    backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    try:
        return int(_stat(backend)[1])
    except OSError:
        return None


# -- the daemon, as `runhub sender` runs -----------------------------------------------------------

def start_daemon(url: str, app: str, port: int, processes: int, args, log_file) -> subprocess.Popen:
    argv = [sys.executable, "-P", "-c", "from runhub_loader.cli import main; main()", "--log-format", "json",
            "sender", "--smtp-url", f"smtp://127.0.0.1:{port}", "--from", FROM_ADDR, "--unsubscribe-url", UNSUBSCRIBE_URL,
            "--concurrency", str(args.concurrency), "--batch", str(args.batch), "--processes", str(processes)]
    sep = "&" if "?" in url else "?"
    env = dict(os.environ, DATABASE_URL=f"{url}{sep}application_name={app}", PYTHONPATH=str(REPO))
    return subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=log_file)


def wait_listening(conn, app: str, processes: int, proc: subprocess.Popen) -> None:
    """Until each of its processes waits for work: its main session idle after its first claim."""
    deadline = time.monotonic() + 60
    while conn.execute("""SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND state = 'idle'
                            AND query LIKE '%%claim_messages%%'""", (app,)).fetchone()[0] < processes:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"runhub sender --processes {processes} did not start (exit {proc.poll()}): see --daemon-log")
        time.sleep(0.05)


def stop_daemon(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=300)
    if code != 0:
        raise SystemExit(f"runhub sender exited {code} on SIGTERM: see --daemon-log")


def run_daemon(conn, url: str, port: int, processes: int, tag: str, args, log_file, pids) -> dict:
    """One side: the daemon idle, then a round's messages at once; its rate and CPU per message."""
    n = args.runs * args.recipients
    app = f"bench-sender-{tag}-x{processes}"
    proc = start_daemon(url, app, port, processes, args, log_file)
    try:
        wait_listening(conn, app, processes, proc)
        sender, sink = tree_cpu(proc.pid), tree_cpu(pids["sink"])  # idle until the commit
        with conn.transaction():  # its messages appear at the commit, all at once
            run_ids = queue_messages(conn, args.runs, args.recipients, tag, args.action)
        started = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        before = Cpu(sender, sink, tree_cpu(pids["database"]))  # the server's after making the runs
        sessions = session_cpu(conn, app)
        last = wait_sent(conn, run_ids, n)
        after = Cpu(tree_cpu(proc.pid), tree_cpu(pids["sink"]), tree_cpu(pids["database"]))
        sessions = session_cpu_per_message(sessions, session_cpu(conn, app), n)
    finally:
        stop_daemon(proc)
    return {"rate": n / (last - started).total_seconds(), "cpu": after.per_message(before, n), "sessions": sessions}


def wait_sent(conn, run_ids, n: int):
    """max(sent_at) once all n are recorded sent (polled every 0.1 s: the poll's own cost stays small)."""
    deadline = time.monotonic() + 600
    while True:
        sent, last = conn.execute("""SELECT count(*) FILTER (WHERE status = 'sent'), max(sent_at)
                                       FROM runhub.outbox WHERE run_id = ANY (%s)""", (run_ids,)).fetchone()
        if sent == n:
            return last
        if time.monotonic() > deadline:
            raise SystemExit(f"the daemon sent {sent} of {n} messages in 600 s")
        time.sleep(0.1)


# -- the plain loops ---------------------------------------------------------------------------------

def run_plain(send, n: int, pids) -> dict:
    """One plain side: send() sends the n messages and returns its seconds; this process is its sender side."""
    before = Cpu(time.process_time(), tree_cpu(pids["sink"]), tree_cpu(pids["database"]))
    seconds = send()
    after = Cpu(time.process_time(), tree_cpu(pids["sink"]), tree_cpu(pids["database"]))
    return {"rate": n / seconds, "cpu": after.per_message(before, n)}


def plain_loop(port: int, messages) -> float:
    t0 = time.perf_counter()
    smtp = smtplib.SMTP("127.0.0.1", port)
    for sender, rcpt, data in messages:
        smtp.sendmail(sender, [rcpt], data)
    smtp.quit()
    return time.perf_counter() - t0


def plain_concurrent(port: int, messages, concurrency: int) -> float:
    work: queue.SimpleQueue = queue.SimpleQueue()
    for m in messages:
        work.put(m)
    errors = []

    def worker():
        try:
            smtp = smtplib.SMTP("127.0.0.1", port)
            while True:
                try:
                    sender, rcpt, data = work.get_nowait()
                except queue.Empty:
                    break
                smtp.sendmail(sender, [rcpt], data)
            smtp.quit()
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"plain concurrent send failed: {errors[0]!r}")
    return time.perf_counter() - t0



# -- main ------------------------------------------------------------------------------------------

def database_url(args) -> str:
    if args.database_url:
        return args.database_url
    cluster = Cluster(Path(args.home).resolve())
    cluster.start(fast=True)
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as admin:
        # Fresh each time: an outbox of earlier rounds' sent rows (and their dead tuples) would
        # drift the figures from one invocation to the next.
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DATABASE}")
    return cluster.url(DATABASE)


def side_labels(args) -> dict[str, str]:
    return {"d1": "daemon x1", "dp": f"daemon x{args.processes}", "p1": "plain", "pc": f"plain x{args.concurrency}"}


def one_round(conn, url: str, port: int, rnd: int, args, log_file, pids) -> dict:
    """Every side once, in this round's order; each side's rate and CPU per message."""
    n = args.runs * args.recipients
    tag = f"{os.getpid()}.{rnd}"
    with conn.transaction(force_rollback=True):  # the plain loops' messages, from runs never committed
        messages, render_s = prerender(conn, queue_messages(conn, args.runs, args.recipients, f"{tag}.plain", args.action))
    assert len(messages) == n
    sides = {
        "d1": lambda: run_daemon(conn, url, port, 1, f"{tag}.d1", args, log_file, pids),
        "dp": lambda: run_daemon(conn, url, port, args.processes, f"{tag}.dp", args, log_file, pids),
        "p1": lambda: run_plain(lambda: plain_loop(port, messages), n, pids),
        "pc": lambda: run_plain(lambda: plain_concurrent(port, messages, args.concurrency), n, pids),
    }
    order = list(sides) if rnd % 2 == 0 else list(reversed(sides))
    results = {side: sides[side]() for side in order}
    results["render_ms"] = render_s * 1000 / n
    return results


def print_round(rnd: int, r: dict) -> None:
    print(f"{rnd + 1:>5} {r['d1']['rate']:>10.0f} {r['dp']['rate']:>10.0f} {r['p1']['rate']:>8.0f} {r['pc']['rate']:>9.0f}"
          f" {r['dp']['rate'] / r['pc']['rate']:>7.2f} {r['d1']['rate'] / r['p1']['rate']:>9.2f} {r['render_ms']:>9.2f}",
          flush=True)


def spread(values: list[float], fmt: str = ".0f") -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def print_cpu(rounds: list[dict], args) -> None:
    """CPU per message of each side, and the most the machine allows at that cost: its cores, the
    sink's one process, the sender's processes (one each)."""
    print("\nCPU per message, ms (median over rounds), and the most that cost allows here (msg/s):")
    print(f"  {'side':<12} {'sender':>7} {'sink':>6} {'database':>9} {'all':>6}   {'{} cores'.format(CORES):>8} "
          f"{'sink (1 core)':>13} {'sender':>7}  {'measured':>8}")
    senders = {"d1": 1, "dp": args.processes, "p1": 1, "pc": 1}  # cores a side's sender can use (the loops: one process)
    for side, label in side_labels(args).items():
        cpu = {k: statistics.median(r[side]["cpu"][k] for r in rounds) if rounds[0][side]["cpu"][k] is not None else None
               for k in ("sender", "sink", "database")}
        total = sum(v for v in cpu.values() if v)
        cores = CORES * 1000 / total
        sink = 1000 / cpu["sink"] if cpu["sink"] else float("inf")
        sender = min(senders[side], CORES) * 1000 / cpu["sender"]
        shown = {k: f"{v:.3f}" if v is not None else "n/a" for k, v in cpu.items()}
        print(f"  {label:<12} {shown['sender']:>7} {shown['sink']:>6} {shown['database']:>9} {total:>6.3f}   "
              f"{cores:>8.0f} {sink:>13.0f} {sender:>7.0f}  {statistics.median(r[side]['rate'] for r in rounds):>8.0f}")
    print("  the database's part, in the daemons' own sessions (the rest: WAL writer, autovacuum, this bench's polls):")
    for side in ("d1", "dp"):
        roles = sorted({role for r in rounds for role in r[side]["sessions"]})
        print(f"    {side_labels(args)[side]:<12} " + ", ".join(
            f"{role} {statistics.median(r[side]['sessions'].get(role, 0.0) for r in rounds):.3f}" for role in roles))


def summary(rounds: list[dict], args) -> int:
    labels, n = side_labels(args), args.runs * args.recipients
    print(f"\nmedian (min-max) over {len(rounds)} rounds of {n} messages, msg/s:")
    for side, label in labels.items():
        print(f"  {label:<12} {spread([r[side]['rate'] for r in rounds])}")
    ratio = [r["dp"]["rate"] / r["pc"]["rate"] for r in rounds]
    ratio_one = [r["d1"]["rate"] / r["p1"]["rate"] for r in rounds]
    ok, ok_one = statistics.median(ratio) >= TARGET, statistics.median(ratio_one) >= TARGET_ONE
    print(f"  ratio {labels['dp']} / {labels['pc']}: {spread(ratio, '.2f')} (target >= {TARGET}): {'ok' if ok else 'UNDER'}")
    print(f"  ratio {labels['d1']} / {labels['p1']}: {spread(ratio_one, '.2f')} (item 1's target >= {TARGET_ONE}): "
          f"{'ok' if ok_one else 'UNDER'}")
    record("sender", f"runhub sender --processes {args.processes}", f"plain smtplib loop, {args.concurrency} connections",
           ratio, f">= {TARGET}", ok,
           f"floor: the CPU a message costs senders, sink and database together on {CORES} cores (its CPU table)")
    record("sender", "runhub sender", "plain smtplib loop, 1 connection", ratio_one, f">= {TARGET_ONE}", ok_one)
    print_cpu(rounds, args)
    print(f"reproduce: .venv/bin/python bench/sender.py --home {args.home} --rounds {args.rounds} --runs {args.runs} "
          f"--recipients {args.recipients} --action {args.action} --processes {args.processes} "
          f"--concurrency {args.concurrency} --batch {args.batch}")
    return 0 if ok and ok_one else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="a scratch runhub database to use instead of the embedded one "
                                               "(nothing else may be sending from it)")
    parser.add_argument("--home", default=".runhub-bench", help="embedded cluster folder [.runhub-bench]")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the verdict is their median [5]")
    parser.add_argument("--runs", type=int, default=2, help="runs per side and round [2]")
    parser.add_argument("--recipients", type=int, default=1000, help="recipients per run, at most 1000 [1000]")
    parser.add_argument("--processes", type=int, default=CORES,
                        help=f"the second daemon's --processes [this machine's cores, {CORES}]")
    parser.add_argument("--concurrency", type=int, default=SenderConfig.concurrency,
                        help=f"the daemons' --concurrency (per process), and the concurrent loop's connections "
                             f"[{SenderConfig.concurrency}]")
    parser.add_argument("--batch", type=int, default=SenderConfig.batch,
                        help=f"the daemons' claim batch [{SenderConfig.batch}]")
    parser.add_argument("--action", choices=sorted(ACTIONS), default="onboard_users",
                        help="onboarding mail (onboard_users) or personal mail, a cart link and amount each (recover_abandoned) [onboard_users]")
    parser.add_argument("--daemon-log", default=os.devnull, help="where the daemons' JSON log lines go [/dev/null]")
    args = parser.parse_args()
    if not 1 <= args.recipients <= 1000:
        parser.error("--recipients: 1 to 1000 (the actions' maxRecipients)")
    if args.processes < 2:
        parser.error("--processes: at least 2 (1 is the first daemon)")

    url = database_url(args)
    deploy(url, schedule_cron=False)  # no minute sweep racing the daemon
    with psycopg.connect(url, autocommit=True) as conn:
        busy = conn.execute("SELECT count(*) FROM runhub.outbox WHERE status IN ('queued', 'sending')").fetchone()[0]
        if busy:
            raise SystemExit(f"{busy} message(s) already queued or sending in this database: use a scratch one")
    # Warm this process's renderer (templates, catalogs, Babel data): the render time printed is a warm one's.
    render_bytes("onboarding", "fr", SAMPLES["onboarding"], message_id="<warm@bench>", to_email="a@b.example",
                 to_name=None, from_addr=FROM_ADDR, unsubscribe_url="https://localhost/u")

    n = args.runs * args.recipients
    folder = Path(tempfile.mkdtemp(prefix="runhub-bench-sink-"))
    port = free_port()
    sink = start_sink(folder, port)
    log_file = open(args.daemon_log, "w", encoding="utf-8")  # noqa: SIM115 (closed at exit)
    labels = side_labels(args)
    print(f"{args.rounds} rounds of {args.runs} x {args.recipients} {args.action} messages a side to runhub smtp-sink "
          f"(own process, 127.0.0.1:{port}); daemon concurrency {args.concurrency} a process, batch {args.batch}; "
          f"{CORES} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'round':>5} {labels['d1']:>10} {labels['dp']:>10} {labels['p1']:>8} {labels['pc']:>9} "
          f"{'xP/xC':>7} {'x1/plain':>9} {'render ms':>9}   (msg/s)")
    rounds = []
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            pids = {"sink": sink.pid, "database": server_pid(conn)}
            for rnd in range(args.rounds):
                before = delivered(folder)
                rounds.append(one_round(conn, url, port, rnd, args, log_file, pids))
                got = wait_delivered(folder, before + 4 * n) - before
                if got != 4 * n:
                    raise SystemExit(f"the sink stored {got} mails, expected {4 * n}")
                print_round(rnd, rounds[-1])
    finally:
        stop_sink(sink)
        shutil.rmtree(folder, ignore_errors=True)
        log_file.close()
    return summary(rounds, args)


if __name__ == "__main__":
    sys.exit(main())
