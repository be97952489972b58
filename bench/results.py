"""bench/run's table: the rows the benchmarks recorded (benchlib.record, JSON lines) as markdown,
with the machine and the commit they were measured on.

    .venv/bin/python bench/results.py --rows A.rows B.rows ... --exits A.exit B.exit ... > bench/RESULTS.md
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "?")
    memory = next((int(line.split()[1]) // 2**20 for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), 0)
    server = subprocess.run(["bash", "-c", "ls /usr/lib/postgresql | sort -n | tail -1"], capture_output=True, text=True).stdout.strip()
    return (f"{os.cpu_count()} cores ({cpu}), {memory} GiB, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, PostgreSQL {server}")


def commit() -> str:
    head = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h %s"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "--", ".",
                            ":!bench/RESULTS.md"], capture_output=True, text=True).stdout.strip()
    return head[:100] + (" (with uncommitted changes)" if dirty else "")


def ratio(row: dict) -> str:
    if row["rounds"] == 1:
        return f"{row['median']:.2f}"
    return f"{row['median']:.2f} ({row['min']:.2f}–{row['max']:.2f}, {row['rounds']} rounds)"


def table(rows: list[dict]) -> str:
    lines = ["| bench | figure | baseline | ratio: median (spread) | target | met | measured at | note |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        met = "yes" if row["met"] else "**no**"
        cells = [row["bench"], row["figure"], row["baseline"], ratio(row), row["target"], met,
                 row.get("commit", "?"), row.get("note", "")]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=Path, nargs="*", default=[], help="files of JSON lines (benchlib.record)")
    p.add_argument("--exits", type=Path, nargs="*", default=[],
                   help="files of `bench exit-status seconds command` lines from bench/run")
    args = p.parse_args()
    rows = [json.loads(line) for path in args.rows for line in path.read_text().splitlines() if line.strip()]
    print("# Benchmark results\n")
    print(f"Written by `bench/run` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC.  ")
    print(f"Machine: {machine()}.  ")
    print(f"Commit: {commit()} (each row says the commit it was measured at: bench/run keeps the rows of the "
          "benches it did not re-run).\n")
    print("Every ratio is measured side by side against its baseline in the same script (the median of the rounds "
          "and the spread), so it travels between machines where absolute times do not; a figure marked "
          "`(absolute, ms)` is wall-clock on this machine. Reproduce one bench with the command in its log "
          "(`.runhub-bench-logs/<bench>.log`), all of them with `bench/run`.\n")
    print(table(rows))
    if args.exits:
        print("\n| bench | exit | seconds | command |\n|---|---|---|---|")
        for line in (line for path in args.exits for line in path.read_text().splitlines() if line.strip()):
            name, status, seconds, command = line.split(" ", 3)
            print(f"| {name} | {status} | {seconds} | `{command}` |")
    return 0 if all(r["met"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
