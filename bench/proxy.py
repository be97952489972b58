"""Proxy benchmark: runhub's API through a PL/Proxy proxy against the same calls made on the shard.

    .venv/bin/python bench/proxy.py                    # embedded clusters in .runhub-bench and .runhub-bench-b
    .venv/bin/python bench/proxy.py --rounds 7 --calls 400 --clients 8 --seconds 10

Two embedded clusters (A in --home, B in --home-b; fsync off, as throwaway clusters) hold the shard
databases; the proxy database is on A, as the partitions' servers would be reached by a proxy on one
of them. Part 1, single calls, one client, its connection kept: each call made directly on the shard
that owns the project and through the proxy, timed per call, direct and proxied alternating call
by call (which side first alternating between rounds), each operation on shops of two sizes:

  ingest_event   a new checkout_started (a distinct idempotency key each)
  ingest_events  100 of them a call (a webhook receiver that batches)
  preview        recover_abandoned, on a shop of 200 and of 5,000 customers with a checkout
  create_run     recover_abandoned on a fresh shop (one run each: the rate limit is per shop)

The figure is the median of the rounds' median per-call ratio proxy/direct, with the spread
(lowest..highest round); the goal is <= 1.3x. Part 2, the aggregate ingest rate through a proxy,
--clients clients for --seconds each, into 64 shops spread evenly over 2 partitions on ONE cluster (A)
and over 2 partitions on TWO clusters (A and B), alternating: events/s and the ratio. Both clusters
share this machine's cores, so a second cluster cannot add capacity here: it shows what the proxy
costs and that routing spreads the load, not the gain of a second server. Part 3, for the record (no
goal): how long calls for a shop of --move-events events (a fifth as many customers) wait while
`runhub proxy move` moves it to the other cluster and back.
"""
from __future__ import annotations

import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchlib import loadavg, record  # noqa: E402
from runhub_loader.db.deploy import deploy  # noqa: E402
from runhub_loader.db.embedded import Cluster  # noqa: E402
from runhub_loader.proxy.deploy import deploy_proxy  # noqa: E402
from runhub_loader.proxy.move import move_project  # noqa: E402

SETTINGS = {"shopUrl": "https://shop.example", "integrations": ["payments", "email"], "holdoutPercent": 0}  # every recipient mailed: like for like
TARGET = 1.3
INGEST = "SELECT runhub.ingest_event(%s, %s)"
INGEST_MANY = "SELECT runhub.ingest_events(%s, %s)"
PREVIEW = "SELECT runhub.preview(%s, %s, 'recover_abandoned', '{}')"
CREATE_RUN = "SELECT runhub.create_run(%s, %s, 'recover_abandoned', %s, '{}')"


def arguments():
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--home", default=".runhub-bench", help="cluster A's folder [.runhub-bench]")
    p.add_argument("--home-b", default=".runhub-bench-b", help="cluster B's folder [.runhub-bench-b]")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=300, help="ingest calls per round and side (previews: a tenth)")
    p.add_argument("--clients", type=int, default=8, help="clients of the aggregate ingest")
    p.add_argument("--seconds", type=float, default=6.0, help="length of each aggregate ingest round")
    p.add_argument("--move-events", type=int, default=100_000, help="events of the shop moved in part 3")
    return p.parse_args()


def fresh_database(cluster: Cluster, name: str, runhub: bool = True) -> str:
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    if runhub:
        deploy(cluster.url(name), schedule_cron=False)
    return cluster.url(name)


def checkout(conn, project, n: int) -> None:
    conn.execute(INGEST, (project, Jsonb({
        "type": "checkout_started", "occurredAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 7200)),
        "idempotencyKey": uuid.uuid4().hex, "customer": {"email": f"c{n}@example.com"},
        "amountCents": 4200, "currency": "EUR", "payload": {"cartId": f"cart{n}"}, "correlationId": f"cart{n}"})))


def shop(proxy, customers: int = 0, partition: int | None = None, proxy_url: str = "") -> tuple:
    owner = uuid.uuid4()
    project = proxy.execute("SELECT runhub.create_project('Shop', %s, 'UTC', 'EUR', 'en')", (owner,)).fetchone()[0]
    proxy.execute("SELECT runhub.update_project_settings(%s, %s, %s)", (project, owner, Jsonb(SETTINGS)))
    if partition is not None and proxy.execute("SELECT runhub_proxy.partition_of(%s)", (project,)).fetchone()[0] != partition:
        move_project(proxy_url, str(project), partition)
    with proxy.pipeline():
        for n in range(customers):
            checkout(proxy, project, n)
    return project, owner


def interleaved(sides: list, statement: str, params: dict) -> dict[str, float]:
    """{side: median seconds per call}: the calls made alternately on each side (call i on one,
    then call i on the other), so that a drift of the machine meets both alike."""
    times = {side: [] for side, _ in sides}
    for i in range(len(params[sides[0][0]])):
        for side, conn in sides:
            started = time.perf_counter()
            conn.execute(statement, params[side][i]).fetchone()
            times[side].append(time.perf_counter() - started)
    return {side: statistics.median(t) for side, t in times.items()}


absolute: dict[str, list[tuple[float, float]]] = {}  # operation: per round (direct, proxy) median seconds


def sides(shard, proxy, round_number: int) -> list:
    """Which side goes first alternates between rounds."""
    pair = [("direct", shard), ("proxy", proxy)]
    return pair if round_number % 2 == 0 else pair[::-1]


def _record(name: str, medians: dict, ratios: dict) -> None:
    ratios.setdefault(name, []).append(medians["proxy"] / medians["direct"])
    absolute.setdefault(name, []).append((medians["direct"], medians["proxy"]))


def single_calls(args, proxy_url: str, shard_url: str) -> dict:
    """{operation: [per-round ratio of medians]}: the same calls direct and through the proxy."""
    ratios: dict[str, list[float]] = {}
    absolute.clear()
    with psycopg.connect(proxy_url, autocommit=True) as proxy, psycopg.connect(shard_url, autocommit=True) as shard:
        small, big = shop(proxy, 200, 0, proxy_url), shop(proxy, 5000, 0, proxy_url)
        ingest_shop = shop(proxy, 0, 0, proxy_url)
        for r in range(args.rounds):
            previews = max(args.calls // 10, 10)
            fresh = [shop(proxy, 3, 0, proxy_url) for _ in range(2 * previews)]
            for p, o in fresh:
                proxy.execute(PREVIEW, (p, o))
            work = {
                "ingest_event": lambda: (INGEST, [(ingest_shop[0], Jsonb({
                    "type": "checkout_started", "occurredAt": "2026-12-01T10:00:00Z", "idempotencyKey": uuid.uuid4().hex,
                    "customer": {"email": f"x{i % 500}@example.com"}, "payload": {"cartId": f"k{i}"}}))
                    for i in range(args.calls)]),
                "ingest_events (100 a call)": lambda: (INGEST_MANY, [(ingest_shop[0], Jsonb([{
                    "type": "checkout_started", "occurredAt": "2026-12-01T10:00:00Z", "idempotencyKey": uuid.uuid4().hex,
                    "customer": {"email": f"y{j % 500}@example.com"}, "payload": {"cartId": f"b{j}"}} for j in range(100)]))
                    for _ in range(max(args.calls // 20, 5))]),
                "preview (200 customers)": lambda: (PREVIEW, [small] * previews),
                "preview (5,000 customers)": lambda: (PREVIEW, [big] * (previews // 2)),
            }
            for name, make in work.items():
                statement, direct = make()
                statement, proxied = make()
                _record(name, interleaved(sides(shard, proxy, r), statement, {"direct": direct, "proxy": proxied}), ratios)
            runs = {"direct": [(p, o, uuid.uuid4().hex) for p, o in fresh[:previews]],
                    "proxy": [(p, o, uuid.uuid4().hex) for p, o in fresh[previews:]]}
            _record("create_run", interleaved(sides(shard, proxy, r), CREATE_RUN, runs), ratios)
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}x" for k, v in ratios.items()), flush=True)
    return ratios


def aggregate_ingest(proxy_url: str, projects: list, clients: int, seconds: float) -> float:
    counts = [0] * clients
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client(i):
        with psycopg.connect(proxy_url, autocommit=True) as conn:
            start.wait()
            n = 0
            while time.perf_counter() < deadline[0]:
                project = projects[(i + n * clients) % len(projects)]
                conn.execute(INGEST, (project, Jsonb({"type": "checkout_started", "occurredAt": "2026-12-01T10:00:00Z",
                                                      "idempotencyKey": uuid.uuid4().hex,
                                                      "customer": {"email": f"a{n % 1000}@example.com"}})))
                n += 1
            counts[i] = n

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    deadline[0] = time.perf_counter() + seconds
    start.wait()
    for t in threads:
        t.join()
    return sum(counts) / seconds


def spread(proxy_url: str, n: int = 64) -> list:
    """n shops, half on partition 0 and half on partition 1."""
    with psycopg.connect(proxy_url, autocommit=True) as proxy:
        return [shop(proxy, 0, i % 2, proxy_url)[0] for i in range(n)]


def main() -> int:
    args = arguments()
    a, b = Cluster(Path(args.home).resolve()), Cluster(Path(args.home_b).resolve())
    for cluster in (a, b):
        cluster.start(fast=True)
    print(f"setting up 2 clusters, 6 shard databases, 2 proxies (load average {loadavg()})", flush=True)
    one = [fresh_database(a, "runhub_bench_px_a0"), fresh_database(a, "runhub_bench_px_a1")]
    two = [fresh_database(a, "runhub_bench_px_b0"), fresh_database(b, "runhub_bench_px_b1")]
    proxy_one, proxy_two = fresh_database(a, "runhub_bench_px_one", False), fresh_database(a, "runhub_bench_px_two", False)
    deploy_proxy(proxy_one, one)
    deploy_proxy(proxy_two, two)

    print("\n-- single calls: proxy / direct, per call (median of each round's median) --", flush=True)
    ratios = single_calls(args, proxy_one, one[0])
    worst = 0.0
    for name, values in ratios.items():
        median = statistics.median(values)
        worst = max(worst, median)
        direct = statistics.median(d for d, _ in absolute[name]) * 1000
        proxied = statistics.median(p for _, p in absolute[name]) * 1000
        print(f"{name:28} {median:.2f}x  (spread {min(values):.2f}..{max(values):.2f}, {len(values)} rounds; "
              f"{direct:.3f} ms direct, {proxied:.3f} ms through the proxy)")
        record("proxy", f"{name} through the proxy", "direct to the shard", values, f"<= {TARGET}", median <= TARGET)
    print(f"worst operation: {worst:.2f}x (goal <= {TARGET}x): {'met' if worst <= TARGET else 'NOT met'}")

    print(f"\n-- aggregate ingest through the proxy, {args.clients} clients, 64 shops on 2 partitions --", flush=True)
    shops = {"one cluster": spread(proxy_one), "two clusters": spread(proxy_two)}
    rates = {"one cluster": [], "two clusters": []}
    for r in range(args.rounds):
        order = list(rates) if r % 2 == 0 else list(rates)[::-1]
        for name in order:
            url = proxy_one if name == "one cluster" else proxy_two
            rates[name].append(aggregate_ingest(url, shops[name], args.clients, args.seconds))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f} events/s" for k, v in rates.items()), flush=True)
    ratio = [t / o for t, o in zip(rates["two clusters"], rates["one cluster"])]
    record("proxy", f"aggregate ingest, {args.clients} clients, 2 partitions on two clusters", "on one cluster", ratio,
           "(reported)", True, "both clusters share this machine's cores")
    for name, values in rates.items():
        print(f"{name:14} {statistics.median(values):7.0f} events/s (spread {min(values):.0f}..{max(values):.0f})")
    print(f"two / one: {statistics.median(ratio):.2f}x (spread {min(ratio):.2f}..{max(ratio):.2f}); "
          f"{os.cpu_count()} cores shared by both clusters, the proxy and the clients (load average {loadavg()})")
    print(f"\n-- moving a shop of {args.move_events:,} events between the clusters --", flush=True)
    with psycopg.connect(proxy_two, autocommit=True) as proxy:
        project, _ = shop(proxy, 0, 0, proxy_two)
    with psycopg.connect(two[0], autocommit=True) as shard:
        for start in range(0, args.move_events, 1000):
            batch = [{"type": "checkout_started", "occurredAt": "2026-12-01T10:00:00Z", "idempotencyKey": f"m{i}",
                      "customer": {"email": f"m{i % max(args.move_events // 5, 1)}@example.com"},
                      "payload": {"cartId": f"m{i}"}} for i in range(start, min(start + 1000, args.move_events))]
            shard.execute("SELECT runhub.ingest_events(%s, %s)", (project, Jsonb(batch)))
    for target in (1, 0):
        result = move_project(proxy_two, str(project), target)
        print(f"to partition {target}: {sum(result.rows.values()):,} rows, calls paused {result.paused_ms:,.0f} ms", flush=True)
    return 0 if worst <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
