"""What the per-core measurement rests on: pinning reaches every thread of a running process (a server's
threads exist before it is pinned), and CPU is read per process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import procstat

THREADS = """
import threading, time
for _ in range(3):
    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
print("ready", flush=True)
time.sleep(30)
"""


def test_pinning_reaches_every_thread_of_a_running_process() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    target = (cpus[-1],)
    child = subprocess.Popen([sys.executable, "-c", THREADS], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        tasks = [int(t.name) for t in Path(f"/proc/{child.pid}/task").iterdir()]
        assert len(tasks) == 4
        procstat.pin([child.pid], target)
        assert all(os.sched_getaffinity(tid) == set(target) for tid in tasks)
    finally:
        child.kill()
        child.wait()


def test_cpu_is_read_per_process_and_a_gone_process_counts_nothing() -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        deadline = time.monotonic() + 20
        while procstat.cpu_by_process([busy.pid])[busy.pid] < 0.05 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert procstat.cpu_by_process([busy.pid])[busy.pid] >= 0.05
    finally:
        busy.kill()
        busy.wait()
    assert procstat.cpu_by_process([busy.pid]) == {busy.pid: 0.0}


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_a_process_pinned_before_it_starts_threads_keeps_them_on_its_core() -> None:
    first = sorted(os.sched_getaffinity(0))[0]
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(1);" + THREADS], stdout=subprocess.PIPE, text=True
    )
    try:
        procstat.pin([child.pid], (first,))  # as the harness pins a client process right after it starts
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        tasks = [int(t.name) for t in Path(f"/proc/{child.pid}/task").iterdir()]
        assert len(tasks) == 4 and all(os.sched_getaffinity(tid) == {first} for tid in tasks)
    finally:
        child.kill()
        child.wait()
