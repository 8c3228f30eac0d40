"""``bench.cpu_split``: CPU a command by process group, from /proc."""
from __future__ import annotations

import os
import time

from matchcore.bench import cpu_split


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_a_snapshot_sees_this_process_burn_cpu_and_nothing_in_an_empty_group():
    own = os.getpid()
    groups = {"me": lambda pid, ppid, comm: pid == own, "nobody": lambda pid, ppid, comm: False}
    before = cpu_split.snapshot(groups)
    _burn(0.2)
    after = cpu_split.snapshot(groups)
    figures = cpu_split.split(before, after, commands=1000)
    # 0.2 s over 1000 commands is 200 us a command (ticks are 10 ms: allow one either side)
    assert 180 <= figures["cpu_us_per_command"]["me"] <= 230
    assert figures["cpu_us_per_command"]["nobody"] == 0
    assert figures["machine_cpu_us_per_command"] >= figures["cpu_us_per_command"]["me"] - 20
    assert 0 < figures["machine_busy_share"] <= 1


def test_the_first_group_that_claims_a_process_has_it():
    own = os.getpid()
    groups = {"first": lambda pid, ppid, comm: pid == own, "second": lambda pid, ppid, comm: pid == own}
    before = cpu_split.snapshot(groups)
    _burn(0.1)
    after = cpu_split.snapshot(groups)
    assert after.group_s["second"] == before.group_s["second"] == 0


def test_the_ceiling_is_the_cpus_over_the_cpu_a_command_cost():
    before = cpu_split.CpuSnapshot({"a": 0.0}, busy_s=10.0, idle_s=5.0)
    after = cpu_split.CpuSnapshot({"a": 1.0}, busy_s=12.0, idle_s=7.0)
    figures = cpu_split.split(before, after, commands=1_000_000)
    assert figures["cpu_us_per_command"] == {"a": 1.0}
    assert figures["machine_cpu_us_per_command"] == 2.0
    assert figures["machine_busy_share"] == 0.5
    assert figures["ceiling_cmds_per_s"] == figures["cpus"] * 500_000
