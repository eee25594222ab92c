"""CPU time and memory of server processes, read from /proc (Linux): the harness measures a server and
everything it started (worker processes, a database's backends) as one."""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants still alive."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo.extend(int(child) for child in task.read_text().split())
            except OSError:
                continue
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by every process of `pids` (those that exited count 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / _TICK


def cpu_by_process(pids: list[int]) -> dict[int, float]:
    """CPU seconds so far of each process of `pids` (one that exited: 0)."""
    return {pid: cpu_seconds([pid]) for pid in pids}


def pin(pids: list[int], cpus: tuple[int, ...]) -> None:
    """Pin every thread of every process of `pids` to `cpus` (threads started later inherit it)."""
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                os.sched_setaffinity(int(task.name), cpus)
            except (OSError, ValueError):
                continue  # the thread ended meanwhile


def memory_mb(pid: int) -> dict[str, float]:
    """Resident memory of one process: all of it, and the anonymous part (file-backed LMDB pages aside)."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    import platform

    import grpc
    import lmdb

    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kb / (1 << 20), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "lmdb": lmdb.__version__,
    }
