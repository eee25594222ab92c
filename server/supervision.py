"""Supervised background tasks: none of them dies quietly (issue 14, SPEC §7).

Every long-running job of a server (the outbox relay, retention, backups, temporary-area expiry, store
gauges, audit housekeeping) runs under a `Supervisor`. A job that raises is logged (its name and the
exception's class, never its message: a message of a library may quote data), counted in
`juki_background_failures_total{task}`, and started again after a capped exponential backoff. While it is
failing, its own health entry (`jukinet.task.<name>`) says NOT_SERVING, and so does the server as a whole
when the job is critical (it writes the store the server serves from). It counts as recovered once it has
run `healthy_after` seconds without failing again. A job that returns has finished (it saw its stop event).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from server.observability import metrics

log = logging.getLogger(__name__)

HealthReport = Callable[[str, bool, bool], Awaitable[None]]  # (task name, healthy, critical)


class Supervisor:
    def __init__(
        self,
        report: HealthReport,
        *,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        healthy_after: float = 5.0,
    ) -> None:
        self._report = report
        self._initial = backoff_initial
        self._max = backoff_max
        self._healthy_after = healthy_after
        self._stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.failing: set[str] = set()

    def start(self, name: str, job: Callable[[], Awaitable[None]], *, critical: bool = False) -> None:
        """Run `job()` until it returns, restarting it whenever it raises."""
        metrics.BACKGROUND_FAILURES.labels(task=name)  # the series exists (at 0) before any failure
        self.tasks.append(asyncio.create_task(self._supervise(name, job, critical), name=name))

    def stop(self) -> None:
        """No more restarts; a job sleeping in its backoff ends now (jobs end on their own stop events)."""
        self._stop.set()

    async def wait(self, timeout: float) -> None:
        """Wait for every job to end; one still running after `timeout` is cancelled (never re-raised)."""
        if not self.tasks:
            return
        _, pending = await asyncio.wait(self.tasks, timeout=timeout)
        for task in pending:
            log.warning("background task did not stop in time; cancelled", extra={"task": task.get_name()})
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _supervise(self, name: str, job: Callable[[], Awaitable[None]], critical: bool) -> None:
        delay = self._initial
        while not self._stop.is_set():
            run = asyncio.ensure_future(job())
            try:
                if name in self.failing:
                    done, _ = await asyncio.wait({run}, timeout=self._healthy_after)
                    if not done:
                        await self._recovered(name, critical)
                        delay = self._initial
                await run
                return
            except asyncio.CancelledError:
                run.cancel()
                raise
            except Exception as exc:
                metrics.BACKGROUND_FAILURES.labels(task=name).inc()
                log.error(
                    "background task failed; restarting after backoff",
                    extra={"task": name, "error": type(exc).__name__, "retry_in_s": round(delay, 2)},
                )
                if name not in self.failing:
                    self.failing.add(name)
                    await self._report(name, False, critical)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            delay = min(self._max, delay * 2)

    async def _recovered(self, name: str, critical: bool) -> None:
        self.failing.discard(name)
        log.info("background task recovered", extra={"task": name})
        await self._report(name, True, critical)
