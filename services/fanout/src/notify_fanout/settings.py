from __future__ import annotations

from notify_common.settings import CommonSettings


class FanoutSettings(CommonSettings):
    fanout_port: int = 8003
    # Source events per batch; outputs of a batch are confirmed together before its input
    # offsets may be committed.
    fanout_batch_size: int = 200
    fanout_batch_wait_s: float = 0.005
    # Replication of the fanout's own topics (table changelogs, repartition): 3 on a
    # production cluster.
    fanout_replication_factor: int = 1
    # A source partition with records beyond what was processed and nothing arriving for
    # this long (while no batch runs) is stalled: logged, counted, un-paused and re-sought
    # (see watchdog.py). Checked every fanout_stall_check_s.
    fanout_stall_after_s: float = 10.0
    fanout_stall_check_s: float = 2.0
    # A folder of notification templates (<TYPE>.<locale>.yaml) that override or add to the
    # shipped ones (notify_common/templates/defaults); checked at start.
    templates_dir: str | None = None
    fanout_data_dir: str = "/tmp/notify-fanout"  # noqa: S108 - scratch only (memory store)
