"""Shared by the benchmarks: medians over several runs, the machine's description."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Figure:
    name: str
    unit: str
    runs: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def spread(self) -> str:
        if len(self.runs) < 2:
            return ""
        return f"min {min(self.runs):,.0f} / max {max(self.runs):,.0f}"

    def line(self) -> str:
        return (
            f"{self.name:<58} {self.median:>12,.0f} {self.unit:<14} "
            f"({self.spread}, n={len(self.runs)})"
        )


def measure(count: int, action: Callable[[], object]) -> float:
    """Rate (count / seconds) of one run of `action`."""
    started = time.perf_counter()
    action()
    return count / (time.perf_counter() - started)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo").read().splitlines():  # noqa: SIM115
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(open("/proc/meminfo").read().split()[1])  # noqa: SIM115
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    load = os.getloadavg()[0]
    kernel = platform.release()
    py = platform.python_version()
    try:
        git = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        git = "?"
    return (
        f"{os.cpu_count()} cores ({cpu}){mem}, Linux {kernel}, Python {py}, "
        f"load average at start {load:.2f}, commit {git}"
    )
