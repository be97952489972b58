"""The test command (scripts/test: pgTAP, then pytest) against a baseline commit's, run alternately.

Checks out the baseline commit in a folder of its own (kept across runs: --baseline-dir), then runs
its scripts/test and this checkout's one after the other, --rounds times, each to the end, and prints
each round's wall-clock seconds, their ratio (this / baseline) and the median and spread. Both set
themselves up first (scripts/setup), outside the timing. A run that fails a test still counts (its
time is what the command took), and is flagged: the baseline's flaky tests are the baseline's.

    .venv/bin/python bench/test_command.py --baseline 3363e8b --rounds 4

Takes two full test runs a round (~7 minutes on 2 cores). Not in bench/run: it times the test
command, not runhub.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def checkout(baseline: str, folder: Path) -> Path:
    """folder holding this repository at `baseline` (cloned on first use, moved to it after)."""
    if not (folder / ".git").exists():
        subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(HERE), str(folder)], check=True)
    subprocess.run(["git", "-C", str(folder), "fetch", "--quiet", "origin"], check=True)  # commits made since
    subprocess.run(["git", "-C", str(folder), "checkout", "--quiet", "--force", baseline], check=True)
    return folder


def set_up(tree: Path) -> None:
    subprocess.run(["scripts/setup"], cwd=tree, check=True, stdout=subprocess.DEVNULL)


def timed_run(tree: Path) -> tuple[float, int, str]:
    """scripts/test in tree: seconds, exit status, and pytest's summary line."""
    started = time.monotonic()
    done = subprocess.run(["scripts/test", "-q"], cwd=tree, capture_output=True, text=True)
    seconds = time.monotonic() - started
    summary = next((line for line in reversed(done.stdout.splitlines()) if " passed" in line or " failed" in line), "")
    return seconds, done.returncode, summary.strip()


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f}, min {min(values):.2f}, max {max(values):.2f}"


def main() -> int:
    doc = __doc__.splitlines()
    p = argparse.ArgumentParser(description=doc[0], epilog="\n".join(doc[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", required=True, help="the commit to compare with (any git revision)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of one baseline run and one run of this checkout [3]")
    p.add_argument("--baseline-dir", type=Path, default=HERE / ".runhub-bench-baseline",
                   help="where the baseline's checkout lives [.runhub-bench-baseline]")
    args = p.parse_args()

    baseline = checkout(args.baseline, args.baseline_dir.resolve())
    for tree in (baseline, HERE):
        set_up(tree)
    head = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"baseline {args.baseline} in {baseline}; this checkout at {head}; {args.rounds} rounds", flush=True)
    ratios, times = [], {"baseline": [], "this": []}
    for round_no in range(1, args.rounds + 1):
        figures = {}
        for name, tree in (("baseline", baseline), ("this", HERE)):
            seconds, status, summary = timed_run(tree)
            figures[name] = seconds
            times[name].append(seconds)
            flag = "" if status == 0 else f"  (exit {status}: a test failed)"
            print(f"round {round_no} {name:8s} {seconds:6.0f} s  {summary}{flag}", flush=True)
        ratios.append(figures["this"] / figures["baseline"])
        print(f"round {round_no} ratio this/baseline {ratios[-1]:.2f}", flush=True)
    print(f"baseline seconds: {spread(times['baseline'])}")
    print(f"this seconds:     {spread(times['this'])}")
    print(f"ratio this/baseline: {spread(ratios)} over {len(ratios)} rounds (below 1: faster)")
    print(f"reproduce: .venv/bin/python bench/test_command.py --baseline {args.baseline} --rounds {args.rounds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
