"""Stall detection for the fanout's source partitions.

In the SIGKILL-and-restart test on the embedded broker, a restarted Faust worker was seen
to stop receiving records of an assigned partition for good: the stream fanned out up to
some offset, the partition's end moved on, and nothing more ever reached the agent — no
error, no rebalance. The contiguity guard cannot see that (it only checks records that
arrive), so this module checks the other direction: a partition whose end is beyond what
the fanout has processed, with no record arriving for `stall_after_s` while the agent sits
idle, is stalled.

`StallWatch` is pure bookkeeping (tested with a fake clock); app.py feeds it the records
the agent takes, the batches it runs and the partitions' ends, and on a stall logs what
Faust and its client believe about the partition, then un-pauses it and seeks it to the
first unprocessed offset. Re-processing is harmless: notification ids are deterministic.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Partition:
    position: int | None = None  # next offset to process, once known
    last_progress: float = 0.0


@dataclass
class StallWatch:
    stall_after_s: float
    clock: Callable[[], float] = time.monotonic
    _parts: dict[tuple[str, int], _Partition] = field(default_factory=dict)
    _busy: int = 0  # batches running (one per source agent at most)
    _busy_since: float | None = None

    def assigned(
        self, tps: set[tuple[str, int]], baseline: Callable[[str, int], int | None]
    ) -> None:
        """Track exactly these partitions; new ones start from the group's committed offset."""
        now = self.clock()
        for key in list(self._parts):
            if key not in tps:
                del self._parts[key]
        for key in tps:
            if key not in self._parts:
                self._parts[key] = _Partition(position=baseline(*key), last_progress=now)

    def reset(self) -> None:
        self._parts.clear()

    def taken(self, topic: str, partition: int, offset: int) -> None:
        """A record of the partition reached the agent."""
        part = self._parts.setdefault((topic, partition), _Partition())
        part.position = max(part.position or 0, offset + 1)
        part.last_progress = self.clock()

    def batch_started(self) -> None:
        self._busy += 1
        if self._busy == 1:
            self._busy_since = self.clock()

    def batch_finished(self) -> None:
        # Time spent in a batch (waiting for output confirmations) is not time a partition
        # sat stalled: move every partition's clock on by it.
        self._busy = max(0, self._busy - 1)
        if self._busy or self._busy_since is None:
            return
        busy = self.clock() - self._busy_since
        self._busy_since = None
        for part in self._parts.values():
            part.last_progress += busy

    def stalled(self, ends: dict[tuple[str, int], int]) -> list[tuple[str, int, int]]:
        """(topic, partition, position) of every tracked partition with records beyond the
        position and no progress for stall_after_s, while no batch is running."""
        if self._busy:
            return []
        now = self.clock()
        found = []
        for key, part in self._parts.items():
            end = ends.get(key)
            if end is None or part.position is None or end <= part.position:
                if end is not None and part.position is not None:
                    # Caught up: idle is not stalled.
                    part.last_progress = now
                continue
            if now - part.last_progress >= self.stall_after_s:
                found.append((key[0], key[1], part.position))
                part.last_progress = now  # one report per stall period
        return found
