"""Where a benchmark's CPU goes, by process group, read from ``/proc`` (Linux only).

``snapshot(groups)`` reads the CPU seconds (user + system, all threads) of every process
whose pid a group names, plus the machine's busy and idle time from ``/proc/stat``;
``split(before, after, commands)`` turns two snapshots into CPU microseconds a command for
each group and the machine's busy share. A group is a callable that takes a process's pid,
its parent pid and its command name and says whether the process belongs to it; the first
group that claims a process has it.

With everything on one machine, ``ceiling_cmds_per_s`` is what the machine's CPUs would
carry at 100% busy for the CPU a command cost in the window: the bound a run cannot pass
however the work is scheduled.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CpuSnapshot", "snapshot", "split"]

Group = Callable[[int, int, str], bool]

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSnapshot:
    group_s: dict[str, float]
    busy_s: float
    idle_s: float


def _process_stats():
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as stat:
                text = stat.read()
        except OSError:  # the process ended while we looked
            continue
        comm = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        # fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15
        yield int(name), int(fields[1]), comm, (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def snapshot(groups: dict[str, Group]) -> CpuSnapshot:
    totals = dict.fromkeys(groups, 0.0)
    for pid, ppid, comm, cpu_s in _process_stats():
        for name, member in groups.items():
            if member(pid, ppid, comm):
                totals[name] += cpu_s
                break
    with open("/proc/stat") as stat:
        ticks = [int(value) for value in stat.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    busy = sum(ticks[:8]) - idle  # user nice system idle iowait irq softirq steal
    return CpuSnapshot(totals, busy / _TICKS_PER_S, idle / _TICKS_PER_S)


def split(before: CpuSnapshot, after: CpuSnapshot, commands: float) -> dict:
    """CPU microseconds a command per group (processes that ended in the window count only up
    to their last snapshot), the machine's busy share and the ceiling it implies."""
    cpus = os.cpu_count() or 1
    busy_s = after.busy_s - before.busy_s
    wall_cpu_s = busy_s + after.idle_s - before.idle_s
    per_command = {name: (after.group_s[name] - before.group_s.get(name, 0.0)) * 1e6 / commands
                   for name in after.group_s} if commands > 0 else {}
    busy_share = busy_s / wall_cpu_s if wall_cpu_s > 0 else 0.0
    machine_us = busy_s * 1e6 / commands if commands > 0 else 0.0
    return {"cpu_us_per_command": per_command, "machine_cpu_us_per_command": machine_us,
            "machine_busy_share": busy_share, "cpus": cpus,
            "ceiling_cmds_per_s": cpus * 1e6 / machine_us if machine_us > 0 else None}
