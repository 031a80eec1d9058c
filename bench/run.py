"""`make bench`: start the embedded infrastructure once, run each benchmark (a warm-up
run, then several measured runs, medians reported beside the limit measured in the same
run), print the figures and write them to docs/benchmarks.md."""

from __future__ import annotations

import argparse
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench import fanout, inbox, ingest, lanes, push, realtime
from bench.common import Figure, machine
from notify_common.testing import infra

ROOT = Path(__file__).resolve().parents[1]
BENCHES = {
    "fanout": fanout.run,
    "inbox": inbox.run,
    "ingest": ingest.run,
    "lanes": lanes.run,
    "push": push.run,
    "realtime": realtime.run,
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="make bench")
    parser.add_argument("--only", choices=sorted(BENCHES), action="append")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="do not update docs/")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="notify-bench-"))
    described = machine()
    print(f"machine: {described}\n")
    broker = infra.embedded_broker(work / "tansu.log")
    pg = infra.embedded_postgres(work / "pg")
    results: dict[str, list[Figure]] = {}
    try:
        for name in args.only or list(BENCHES):
            figures = BENCHES[name](broker=broker, postgres=pg, work=work, runs=args.runs)
            results[name] = figures
            for f in figures:
                print(f.line())
            print()
    finally:
        broker.stop()
        pg.stop()
    if not args.no_write:
        write_report(results, described, args.runs)


def write_report(results: dict[str, list[Figure]], described: str, runs: int) -> None:
    path = ROOT / "docs" / "benchmarks.md"
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (bench/). Each figure is the median of several runs after a",
        "discarded warm-up run, printed beside a limit measured in the same run on the same",
        "broker or database, because this machine is shared and noisy: compare ratios, not",
        "absolute numbers across days. The embedded broker (Tansu, memory-only) and the",
        "benchmark client share the 2 cores with the service under test.",
        "",
        f"Last run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {runs} measured runs each.",
        f"Machine: {described}.",
        "",
        "| benchmark | median | unit | runs |",
        "|---|---:|---|---|",
    ]
    for figures in results.values():
        for f in figures:
            lines.append(f"| {f.name} | {f.median:,.0f} | {f.unit} | {f.spread} |")
    lines += ["", "## Notes", ""]
    for figures in results.values():
        for f in figures:
            if f.note:
                lines.append(f"* {f.name}: {f.note}")
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
