"""Read a process tree's CPU time and resident memory from ``/proc`` (Linux only).

A router may be several processes (Crossbar: a controller plus a router worker; ours with
``--workers N``), so every figure is summed over the given PIDs and all their descendants.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK")


def _read_stat(pid: int) -> tuple[int, float, float] | None:
    """Return (ppid, utime+stime seconds, stime seconds) of ``pid``, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    ppid = int(fields[1])
    utime, stime = int(fields[11]), int(fields[12])
    return ppid, (utime + stime) / _TICKS, stime / _TICKS


_STATUS_FIELDS = {
    b"VmRSS:": 0,
    b"VmHWM:": 1,
    b"voluntary_ctxt_switches:": 2,
    b"nonvoluntary_ctxt_switches:": 3,
}


def _read_status(pid: int) -> tuple[int, int, int, int]:
    """(VmRSS KiB, VmHWM KiB, voluntary, nonvoluntary context switches) of ``pid``: resident
    memory now and its peak so far; how often it slept, and how often it was preempted."""
    found = [0, 0, 0, 0]
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                key, _, value = line.partition(b"\t")
                index = _STATUS_FIELDS.get(key)
                if index is not None:
                    found[index] = int(value.split()[0])
    except OSError:
        pass
    return found[0], found[1], found[2], found[3]


def process_tree(pids: list[int]) -> list[int]:
    """``pids`` plus every live descendant, found by scanning ``/proc/*/stat``."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = _read_stat(int(name))
        if st is not None:
            children.setdefault(st[0], []).append(int(name))
    seen: list[int] = []
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in seen or not os.path.exists(f"/proc/{pid}"):
            continue
        seen.append(pid)
        todo.extend(children.get(pid, ()))
    return sorted(seen)


@dataclass(frozen=True)
class Sample:
    """One reading of a process tree."""

    at: float  # time.perf_counter()
    cpu_s: float  # user + system seconds, summed
    rss_kib: int  # VmRSS, summed
    hwm_kib: int  # VmHWM (each process's peak RSS so far), summed
    pids: tuple[int, ...]
    slept: int = 0  # voluntary context switches, summed
    preempted: int = 0  # nonvoluntary context switches, summed
    sys_s: float = 0.0  # of cpu_s, the seconds spent in the kernel (system time), summed


def sample(pids: list[int]) -> Sample:
    """Read CPU seconds and RSS of ``pids`` and their descendants now."""
    tree = process_tree(pids)
    cpu = sys_s = 0.0
    rss = hwm = slept = preempted = 0
    for pid in tree:
        st = _read_stat(pid)
        if st is not None:
            cpu += st[1]
            sys_s += st[2]
            now, peak, voluntary, involuntary = _read_status(pid)
            rss += now
            hwm += peak
            slept += voluntary
            preempted += involuntary
    return Sample(time.perf_counter(), cpu, rss, hwm, tuple(tree), slept, preempted, sys_s)


def delta(before: Sample | None, after: Sample | None) -> dict[str, object] | None:
    """The broker figures for one measurement window (None when no PID was given)."""
    if before is None or after is None:
        return None
    wall = max(after.at - before.at, 1e-9)
    cpu = after.cpu_s - before.cpu_s
    return {
        "pids": list(after.pids),
        "cpu_s": round(cpu, 3),
        "sys_s": round(after.sys_s - before.sys_s, 3),
        "cpu_util": round(cpu / wall, 3),
        "rss_kib": after.rss_kib,
        "rss_mib": round(after.rss_kib / 1024, 1),
        "rss_start_kib": before.rss_kib,
        "peak_rss_kib": after.hwm_kib,
        "peak_rss_mib": round(after.hwm_kib / 1024, 1),
        "slept": after.slept - before.slept,
        "preempted": after.preempted - before.preempted,
    }


def system_busy_s() -> float:
    """CPU seconds all CPUs spent not idle since boot (from the first line of /proc/stat)."""
    with open("/proc/stat", "rb") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7]
    return busy / _TICKS


@dataclass(frozen=True)
class Machine:
    """The whole machine and the load generator itself, to tell who else used the CPUs."""

    at: float
    busy_s: float
    client: Sample


def machine() -> Machine:
    return Machine(time.perf_counter(), system_busy_s(), sample([os.getpid()]))


def noise(before: Machine, after: Machine, broker_cpu_s: float) -> dict[str, float]:
    """CPU used in the window by the client, and by everything that is neither it nor the
    broker (other processes on the machine: a busy neighbour makes the numbers noisy)."""
    wall = max(after.at - before.at, 1e-9)
    client = after.client.cpu_s - before.client.cpu_s
    other = (after.busy_s - before.busy_s) - client - broker_cpu_s
    return {
        "client_cpu_util": round(client / wall, 3),
        "other_cpu_util": round(max(0.0, other) / wall, 3),
    }
