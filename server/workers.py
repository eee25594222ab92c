"""Several prefectural server processes on one port (SO_REUSEPORT) to scale reads with cores (SPEC §8, §10).

`supervise()` is the parent of `settings.prefecture_workers` workers. It never opens LMDB or gRPC while they
run: it prepares what they would race to create (keys, the environment), starts each as a fresh process
(`juki serve prefecture --worker K`, never a fork of a process with an open environment) and then only
relays signals:

- SIGTERM/SIGINT: SIGTERM to every worker, wait for their graceful drains, exit 0 (1 if one failed);
- SIGHUP: forwarded (each worker reloads the revocation list and the policy);
- a worker that exits on its own: logged, the others are stopped, exit 1 (no respawning).

Each worker opens its own LMDB environment (LMDB serialises writers across processes) and its own audit
trail (worker k > 0 in `<audit_dir>/w<k>`, see `server.audit.entries`). Worker 0 alone runs the singleton
jobs: outbox relay, backups, retention, store gauges and /metrics. Metrics use prometheus_client's
multiprocess mode in a fresh directory per run, so worker 0's /metrics shows the sum over all workers.

While every worker serves, `<data_dir>/workers.json` names the parent and the worker pids (for the bench,
which measures CPU over all of them); it is removed when the parent exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.multiprocess import mark_process_dead

from server.app import prepare_prefecture
from server.settings import Settings

log = logging.getLogger(__name__)

WORKERS_FILE = "workers.json"
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
_POLL = 0.05

# argv of worker `worker`, given the settings file and the run directory
WorkerCommand = Callable[[Path, int, Path], list[str]]


@dataclass(frozen=True)
class Workers:
    """What `<data_dir>/workers.json` says: who serves the prefectural port."""

    parent: int
    workers: list[int]
    port: int
    run_dir: Path  # settings, readiness files and the metrics files of this run (left behind on SIGKILL)


def workers_file(settings: Settings) -> Path:
    return settings.data_path / WORKERS_FILE


def read_workers(settings: Settings) -> Workers | None:
    """The running workers, or None when no supervisor has them all serving."""
    try:
        data = json.loads(workers_file(settings).read_text())
        workers = [int(p) for p in data["workers"]]
        return Workers(int(data["parent"]), workers, int(data["port"]), Path(data["run_dir"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _ready_file(run_dir: Path, worker: int) -> Path:
    return run_dir / f"worker-{worker}.ready"


def announce_ready(run_dir: Path, worker: int) -> None:
    """Called by worker `worker` once it serves: tells the supervisor (atomically, with its pid)."""
    path = _ready_file(run_dir, worker)
    partial = path.with_suffix(".tmp")
    partial.write_text(str(os.getpid()))
    partial.replace(path)


async def exit_with_parent(parent: int, every: float = 1.0) -> None:
    """In a worker: drain and stop (as on SIGTERM) once `parent`, its supervisor, is gone (e.g. killed with
    SIGKILL), so that no orphan keeps the port."""
    while os.getppid() == parent:
        await asyncio.sleep(every)
    log.error("the supervisor is gone; stopping")
    os.kill(os.getpid(), signal.SIGTERM)


def _write_json(path: Path, data: object) -> None:
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(data))
    partial.replace(path)


class _Supervisor:
    def __init__(self, settings: Settings, command: WorkerCommand, run_dir: Path) -> None:
        self.settings = settings
        self.command = command
        self.run_dir = run_dir
        self.metrics_dir = run_dir / "metrics"
        self.procs: list[asyncio.subprocess.Process] = []
        self.stop = asyncio.Event()

    async def spawn(self) -> None:
        config = self.run_dir / "settings.toml"
        config.write_text(self.settings.to_toml())
        self.metrics_dir.mkdir()
        # the settings file is complete: JUKI_* variables of this process must not override it
        env = {k: v for k, v in os.environ.items() if not k.startswith("JUKI_")}
        env.update({METRICS_DIR_ENV: str(self.metrics_dir), "PYTHONUNBUFFERED": "1"})
        for worker in range(self.settings.prefecture_workers):
            argv = self.command(config, worker, self.run_dir)
            self.procs.append(await asyncio.create_subprocess_exec(*argv, env=env))

    async def all_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.stop.is_set():
            for worker, proc in enumerate(self.procs):
                if proc.returncode is not None:
                    log.error(
                        "prefecture worker exited while starting",
                        extra={"worker": worker, "pid": proc.pid, "returncode": proc.returncode},
                    )
                    return False
            if all(_ready_file(self.run_dir, k).exists() for k in range(len(self.procs))):
                return True
            if time.monotonic() > deadline:
                log.error("prefecture workers did not start in time", extra={"timeout": timeout})
                return False
            await asyncio.sleep(_POLL)
        return False

    async def first_exit(self) -> int | None:
        """Wait for a stop signal (None) or for a worker to exit (its index)."""
        waits = {asyncio.ensure_future(proc.wait()): k for k, proc in enumerate(self.procs)}
        stopped = asyncio.ensure_future(self.stop.wait())
        done, _ = await asyncio.wait({stopped, *waits}, return_when=asyncio.FIRST_COMPLETED)
        for future in (stopped, *waits):
            future.cancel()
        dead = sorted(waits[f] for f in done if f in waits)
        return dead[0] if dead and not self.stop.is_set() else None  # stopping: a worker may go first

    def signal_all(self, sig: int) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    async def stop_all(self) -> list[int]:
        """SIGTERM to every live worker, then their exit codes (SIGKILL for one that outlives its drain)."""
        self.signal_all(signal.SIGTERM)
        timeout = 3 * self.settings.grace_seconds + 10

        async def reap(proc: asyncio.subprocess.Process) -> int:
            try:
                code = await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                log.error("prefecture worker did not stop in time; killed", extra={"pid": proc.pid})
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                code = await proc.wait()
            mark_process_dead(proc.pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]
            return code

        return list(await asyncio.gather(*(reap(p) for p in self.procs)))


async def supervise(
    settings: Settings,
    command: WorkerCommand,
    *,
    on_ready: Callable[[list[int]], None] | None = None,
    start_timeout: float = 60.0,
) -> int:
    """Run `settings.prefecture_workers` workers on the prefectural port until SIGTERM/SIGINT; exit status."""
    settings = settings.replace(home=settings.home.resolve())
    prepare_prefecture(settings)
    run_dir = Path(tempfile.mkdtemp(prefix="juki-prefecture-"))
    supervisor = _Supervisor(settings, command, run_dir)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, supervisor.stop.set)
    loop.add_signal_handler(signal.SIGINT, supervisor.stop.set)
    loop.add_signal_handler(signal.SIGHUP, supervisor.signal_all, signal.SIGHUP)
    listing = workers_file(settings)
    failed = True
    try:
        await supervisor.spawn()
        if not await supervisor.all_ready(start_timeout):
            failed = not supervisor.stop.is_set()  # stopped while starting is no failure
        else:
            pids = [p.pid for p in supervisor.procs]
            _write_json(
                listing,
                {
                    "parent": os.getpid(),
                    "workers": pids,
                    "port": settings.prefecture_port,
                    "run_dir": str(run_dir),
                },
            )
            log.info("prefecture workers serving", extra={"workers": len(pids), "pids": pids})
            if on_ready is not None:
                on_ready(pids)
            dead = await supervisor.first_exit()
            failed = dead is not None
            if dead is not None:
                proc = supervisor.procs[dead]
                log.error(
                    "prefecture worker exited unexpectedly; stopping the others",
                    extra={"worker": dead, "pid": proc.pid, "returncode": proc.returncode},
                )
            else:
                log.info("draining the prefecture workers")
    finally:
        codes = await supervisor.stop_all()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        current = read_workers(settings)
        if current is not None and current.parent == os.getpid():
            listing.unlink(missing_ok=True)
        shutil.rmtree(run_dir, ignore_errors=True)
    if any(codes):
        log.error("prefecture workers stopped with errors", extra={"returncodes": codes})
    return 1 if failed or any(codes) else 0
