"""Connects the interceptor chain to the audit trail: one entry per call, subjects as keyed hashes.

Also runs the trail's housekeeping off the event loop: fsync every `flush_interval` (the window in which
entries are with the OS but not yet on disk), signed checkpoints every `checkpoint_interval`, and a
shutdown checkpoint when the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import datetime as dt
import logging
import multiprocessing
import os
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from juki.v1 import admin_pb2

from server.audit.entries import AuditEvent
from server.audit.query import provisions_of, query
from server.audit.trail import AuditTrail, AuditUnavailable
from server.observability import metrics
from server.observability.calls import is_provision
from server.services.call_facts import CallFacts
from server.services.chain import AuditFailure

log = logging.getLogger(__name__)

_MIN_FREE_BYTES = 64 << 10
T = TypeVar("T")
_PR_SET_PDEATHSIG = 1


class TrailAuditor:
    """The chain's CallAuditor over an AuditTrail."""

    def __init__(self, trail: AuditTrail) -> None:
        self.trail = trail

    def record(self, facts: CallFacts) -> None:
        caller = facts.caller
        event = AuditEvent(
            caller=caller.uri if caller else "",
            role=caller.role if caller else "",
            method=facts.method,
            purpose=facts.purpose,
            outcome=facts.outcome,
            subjects=tuple(self.trail.subject_hash(code) for code in facts.resident_codes),
            items=tuple(sorted(facts.items)),
            request_id=facts.request_id,
            source=facts.source,
            count=facts.count if facts.applied is None else facts.applied,
            kind="provision" if is_provision(facts) else "",
            requester=facts.requester,
        )
        try:
            self.trail.append(event)
        except AuditUnavailable:
            metrics.AUDIT_WRITE_FAILURES.inc()
            raise AuditFailure from None
        metrics.AUDIT_ENTRIES.inc()

    def ready(self) -> bool:
        """Healthy, or the storage looks writable again (the next append decides)."""
        if self.trail.healthy:
            return True
        try:
            st = os.statvfs(self.trail.directory)
        except OSError:
            return False
        return not st.f_flag & os.ST_RDONLY and st.f_bavail * st.f_frsize >= _MIN_FREE_BYTES


def monthly_statistics(directory: Path, month: str) -> admin_pb2.StatisticsResponse:
    """Counts of applied updates by municipality and of provisions by caller, purpose and outcome in a
    month (住基法 30条の15), from the audit trail."""
    start = dt.datetime.fromisoformat(f"{month}-01T00:00:00+09:00")
    end = (start + dt.timedelta(days=32)).replace(day=1)
    updates: Counter[str] = Counter()
    provisions: Counter[str] = Counter()
    for entry in query(directory, since=start, until=end):
        # an update entry counts what the call applied, whatever its outcome (a stream refused at its
        # fourth notice applied three)
        if entry["role"] == "municipal-cs" and "/ApplyUpdate" in entry["method"]:
            updates[entry["caller"].rsplit("/", 1)[-1]] += int(entry["count"])
        elif entry["kind"] == "provision":
            provisions[f"{entry['caller']} {entry['purpose']} {entry['outcome']}"] += max(
                1, int(entry["count"])
            )
    return admin_pb2.StatisticsResponse(
        month=month,
        updates_by_municipality=[
            admin_pb2.StatisticsCount(key=k, count=v) for k, v in sorted(updates.items())
        ],
        provisions=[admin_pb2.StatisticsCount(key=k, count=v) for k, v in sorted(provisions.items())],
    )


def _statistics_bytes(directory: Path, month: str) -> bytes:
    return monthly_statistics(directory, month).SerializeToString()


def _die_with_parent() -> None:
    """In the reader's child (Linux): killed when the server process dies, even by SIGKILL (no orphan)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the server died before the line above
        os._exit(0)


class TrailReader:
    """Reads over the whole audit trail — a month's statistics, a resident's provisions (開示) — in a child
    process, one at a time: they are pure-Python work of up to seconds, which in a thread of this process
    would still hold the GIL the event loop needs. The child is started (spawned: nothing of this process
    is shared) at the first read and kept."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._pool: ProcessPoolExecutor | None = None

    async def _run(self, work: Callable[..., T], *args: Any) -> T:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_die_with_parent
            )
        return await asyncio.get_running_loop().run_in_executor(self._pool, work, *args)

    async def statistics(self, month: str) -> admin_pb2.StatisticsResponse:
        raw = await self._run(_statistics_bytes, self._directory, month)
        return admin_pb2.StatisticsResponse.FromString(raw)

    async def provisions(self, subject_hash: str) -> list[dict[str, Any]]:
        return await self._run(provisions_of, self._directory, subject_hash)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


async def housekeeping(
    trail: AuditTrail,
    *,
    flush_interval: float,
    stop: asyncio.Event,
    on_health: Callable[[bool], Awaitable[None]] | None = None,
    retention_years: int = 7,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> None:
    """fsync grouped every flush_interval, checkpoints at their interval, never on the event loop; reports
    the trail's health (the server is NOT_SERVING while its audit trail cannot be written)."""
    loop = asyncio.get_running_loop()
    healthy = True
    next_erasure = 0.0
    while not stop.is_set():
        if retention_years and loop.time() >= next_erasure:
            next_erasure = loop.time() + 3600.0
            try:
                erased = await loop.run_in_executor(None, trail.erase_expired, now(), retention_years)
                if erased.entries:
                    metrics.AUDIT_ERASED.inc(erased.entries)
                    log.info(
                        "audit entries past retention erased",
                        extra={"segments": erased.segments, "entries": erased.entries},
                    )
            except (AuditUnavailable, OSError):
                log.error("audit retention could not erase expired segments; will retry")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), flush_interval)
        try:
            await loop.run_in_executor(None, trail.flush)
            await loop.run_in_executor(None, trail.maybe_checkpoint)
        except (AuditUnavailable, OSError):
            metrics.AUDIT_WRITE_FAILURES.inc()
            log.error("audit trail flush or checkpoint failed; calls are refused until it is writable")
        if on_health is not None and trail.healthy != healthy:
            healthy = trail.healthy
            await on_health(healthy)
