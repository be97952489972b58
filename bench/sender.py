"""Sender benchmark: the daemon's throughput to a local SMTP sink against a plain smtplib loop.

    .venv/bin/python bench/sender.py              # embedded cluster in .runhub-bench, database runhub_bench_sender
    .venv/bin/python bench/sender.py --rounds 5 --runs 2 --recipients 1000 --concurrency 4 --batch 50

The sink is `runhub smtp-sink` in its own process on 127.0.0.1 (it stores every mail as an .eml file,
in a temporary folder, and offers PIPELINING as production MTAs do: the daemon uses it, smtplib's
sendmail does not). Each round makes --runs runs of --action (onboard_users: bulk mail, the same
content for every recipient but the name and link; recover_abandoned: personal mail, each its own cart
link and amount) for --recipients customers each, in fresh projects, and has runhub.process_runs
queue their messages in the outbox. Then, in the same round:

  daemon  runhub_loader.mail.daemon.Sender, in this process, with the daemon's defaults (and --concurrency,
          --batch), JSON logs as `runhub sender` writes them (to --daemon-log), exit_when_idle: timed
          from start until the last message is recorded sent (max(sent_at), on the database clock),
          so it includes claiming, rendering, SMTP and recording; the time until run() returns
          (idle detection and shutdown) is printed too.
  plain   the same messages, rendered beforehand by runhub_loader.mail.render.render_bytes from the
          same outbox rows (runhub._messages_json, as claim_messages gives them) with the same From and unsubscribe URL, sent with
          smtplib.sendmail over one reused connection: the issue's "plain smtplib loop".
  plain x C  the same pre-rendered messages over C connections in C threads (C = --concurrency, as
          the daemon), for reference.

The order of daemon and baselines alternates between rounds. Prints messages/second per round and the
median ratio daemon/plain (target >= 0.8); exits 1 when it is missed. Wall-clock on a shared machine:
the database, the sink and this process compete for the same cores.
"""
from __future__ import annotations

import argparse
import logging
import os
import queue
import shutil
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from email.utils import parseaddr
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from runhub_loader import logs  # noqa: E402
from runhub_loader.db.deploy import deploy  # noqa: E402
from runhub_loader.db.embedded import Cluster, free_port  # noqa: E402
from runhub_loader.mail.preview import SAMPLES  # noqa: E402
from runhub_loader.mail.render import render_bytes  # noqa: E402
from runhub_loader.mail.daemon import Sender, SenderConfig  # noqa: E402
from runhub_loader.mail.smtp import SmtpConfig  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DATABASE = "runhub_bench_sender"
SETTINGS = {"shopUrl": "https://shop.example", "integrations": ["payments", "email"], "holdoutPercent": 0}  # every recipient mailed: like for like
FROM_ADDR = "Run Hub <runhub@localhost>"                        # SenderConfig's defaults
UNSUBSCRIBE_URL = "https://localhost/unsubscribe?token={token}"
TARGET = 0.8


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


# -- the two sides ---------------------------------------------------------------------------------

def run_daemon(url: str, port: int, run_ids, expected: int, args) -> dict:
    config = SenderConfig(database_url=url, smtp=SmtpConfig("127.0.0.1", port), from_addr=FROM_ADDR,
                          unsubscribe_url=UNSUBSCRIBE_URL, concurrency=args.concurrency, batch=args.batch,
                          exit_when_idle=True)
    with psycopg.connect(url, autocommit=True) as conn:
        db_t0 = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        t0 = time.perf_counter()
        Sender(config).run()
        wall = time.perf_counter() - t0
        sent, last, runs_done = conn.execute(
            """SELECT count(*) FILTER (WHERE o.status = 'sent'), max(o.sent_at),
                      (SELECT count(*) FROM runhub.workflow_runs r WHERE r.id = ANY (%(r)s) AND r.status = 'succeeded')
                 FROM runhub.outbox o WHERE o.run_id = ANY (%(r)s)""", {"r": list(run_ids)}).fetchone()
    if sent != expected or runs_done != len(run_ids):
        raise SystemExit(f"the daemon sent {sent} of {expected} messages, {runs_done} of {len(run_ids)} runs succeeded")
    return {"seconds": (last - db_t0).total_seconds(), "wall": wall}


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="a scratch runhub database to use instead of the embedded one "
                                               "(nothing else may be sending from it)")
    parser.add_argument("--home", default=".runhub-bench", help="embedded cluster folder [.runhub-bench]")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=2, help="runs per round [2]")
    parser.add_argument("--recipients", type=int, default=1000, help="recipients per run, at most 1000 [1000]")
    parser.add_argument("--concurrency", type=int, default=SenderConfig.concurrency,
                        help=f"the daemon's workers, and the concurrent baseline's [{SenderConfig.concurrency}]")
    parser.add_argument("--batch", type=int, default=SenderConfig.batch,
                        help=f"the daemon's claim batch [{SenderConfig.batch}]")
    parser.add_argument("--action", choices=sorted(ACTIONS), default="onboard_users",
                        help="onboarding mail (onboard_users) or personal mail, a cart link and amount each (recover_abandoned) [onboard_users]")
    parser.add_argument("--daemon-log", default=os.devnull, help="where the daemon's JSON log lines go [/dev/null]")
    args = parser.parse_args()
    if not 1 <= args.recipients <= 1000:
        parser.error("--recipients: 1 to 1000 (the actions' maxRecipients)")

    url = database_url(args)
    deploy(url, schedule_cron=False)  # no minute sweep racing the daemon
    with psycopg.connect(url, autocommit=True) as conn:
        busy = conn.execute("SELECT count(*) FROM runhub.outbox WHERE status IN ('queued', 'sending')").fetchone()[0]
        if busy:
            raise SystemExit(f"{busy} message(s) already queued or sending in this database: use a scratch one")

    # The daemon logs as `runhub sender` does (a JSON line per message), into --daemon-log.
    log_file = open(args.daemon_log, "w", encoding="utf-8")  # noqa: SIM115 (closed at exit)
    logs.setup("json")
    logging.getLogger("runhub").handlers[0].setStream(log_file)
    # Warm the renderer (templates, catalogs, Babel data) as a long-running daemon would be.
    render_bytes("onboarding", "fr", SAMPLES["onboarding"], message_id="<warm@bench>", to_email="a@b.example",
                   to_name=None, from_addr=FROM_ADDR, unsubscribe_url="https://localhost/u")

    n = args.runs * args.recipients
    folder = Path(tempfile.mkdtemp(prefix="runhub-bench-sink-"))
    port = free_port()
    sink = start_sink(folder, port)
    print(f"{args.rounds} rounds of {args.runs} x {args.recipients} {args.action} messages to runhub smtp-sink "
          f"(own process, 127.0.0.1:{port}); daemon concurrency {args.concurrency}, batch {args.batch}")
    print(f"{'round':>5} {'daemon msg/s':>13} {'(to exit)':>10} {'plain msg/s':>12} "
          f"{'plain x' + str(args.concurrency) + ' msg/s':>15} {'ratio':>6} {'vs x' + str(args.concurrency):>6}"
          f" {'render ms/msg':>14}")
    daemon_rates, plain_rates, conc_rates, ratios, ratios_conc = [], [], [], [], []
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for rnd in range(args.rounds):
                run_ids = queue_messages(conn, args.runs, args.recipients, f"{os.getpid()}.{rnd}", args.action)
                messages, render_s = prerender(conn, run_ids)
                assert len(messages) == n
                before = delivered(folder)
                if rnd % 2 == 0:
                    daemon = run_daemon(url, port, run_ids, n, args)
                    plain_s = plain_loop(port, messages)
                    conc_s = plain_concurrent(port, messages, args.concurrency)
                else:
                    plain_s = plain_loop(port, messages)
                    conc_s = plain_concurrent(port, messages, args.concurrency)
                    daemon = run_daemon(url, port, run_ids, n, args)
                got = wait_delivered(folder, before + 3 * n) - before
                if got != 3 * n:
                    raise SystemExit(f"the sink stored {got} mails, expected {3 * n}")
                d_rate, p_rate, c_rate = n / daemon["seconds"], n / plain_s, n / conc_s
                daemon_rates.append(d_rate)
                plain_rates.append(p_rate)
                conc_rates.append(c_rate)
                ratios.append(d_rate / p_rate)
                ratios_conc.append(d_rate / c_rate)
                print(f"{rnd + 1:>5} {d_rate:>13.0f} {n / daemon['wall']:>10.0f} {p_rate:>12.0f} {c_rate:>15.0f} "
                      f"{d_rate / p_rate:>6.2f} {d_rate / c_rate:>6.2f} {render_s * 1000 / n:>14.2f}", flush=True)
    finally:
        stop_sink(sink)
        shutil.rmtree(folder, ignore_errors=True)
        log_file.close()

    ratio = statistics.median(ratios)
    print(f"\nmedian over {args.rounds} rounds of {n} messages: daemon {statistics.median(daemon_rates):.0f} msg/s "
          f"(start to last recorded send: claim, render, SMTP, record_sent), plain smtplib loop "
          f"{statistics.median(plain_rates):.0f} msg/s, plain over {args.concurrency} connections "
          f"{statistics.median(conc_rates):.0f} msg/s")
    print(f"  ratio daemon/plain loop {ratio:.2f} (target >= {TARGET}): {'ok' if ratio >= TARGET else 'UNDER'}")
    print(f"  for reference, daemon/plain over {args.concurrency} connections: {statistics.median(ratios_conc):.2f}")
    print(f"reproduce: .venv/bin/python bench/sender.py --rounds {args.rounds} --runs {args.runs} "
          f"--recipients {args.recipients} --action {args.action} --concurrency {args.concurrency} --batch {args.batch}")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
