"""Connects the interceptor chain to the audit trail: one entry per call (and one per part of a streamed
provision: a BatchProvide chunk), subjects as keyed hashes.

Also runs the trail's housekeeping off the event loop: fsync every `flush_interval` (the window in which
entries are with the OS but not yet on disk), signed checkpoints every `checkpoint_interval` (a heartbeat
when idle), each handed to the witnesses, and a shutdown checkpoint when the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import datetime as dt
import logging
import multiprocessing
import os
import signal
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from juki.v1 import admin_pb2

from server.audit.entries import AuditEvent
from server.audit.proofs import NoProof, checkpoint_note
from server.audit.query import provisions_of, query
from server.audit.trail import AuditTrail, AuditUnavailable
from server.observability import metrics
from server.observability.calls import is_provision
from server.services.call_facts import CallFacts
from server.services.chain import AuditFailure
from server.services.witness import Submitter

log = logging.getLogger(__name__)

_MIN_FREE_BYTES = 64 << 10
T = TypeVar("T")
_PR_SET_PDEATHSIG = 1


class TrailAuditor:
    """The chain's CallAuditor over an AuditTrail."""

    def __init__(self, trail: AuditTrail) -> None:
        self.trail = trail

    def record(self, facts: CallFacts) -> None:
        self._append(self._event(facts))

    def record_intent(self, facts: CallFacts) -> None:
        """The intent entry of a call about to write (outcome INTENT), fsynced before the handler runs."""
        event = dataclasses.replace(self._event(facts), outcome="INTENT", kind="intent", items=(), count=0)
        self._append(event)
        try:
            self.trail.flush()
        except AuditUnavailable:
            metrics.AUDIT_WRITE_FAILURES.inc()
            raise AuditFailure from None

    def _event(self, facts: CallFacts) -> AuditEvent:
        caller = facts.caller
        return AuditEvent(
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
            claimed=facts.claimed.uri if facts.claimed else "",
            serial=f"{facts.serial:x}" if facts.serial is not None else "",
            part=facts.part,
        )

    def _append(self, event: AuditEvent) -> None:
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
        elif entry["kind"] == "provision" and "part" not in entry:  # a part's results: in its call's count
            provisions[f"{entry['caller']} {entry['purpose']} {entry['outcome']}"] += max(
                1, int(entry["count"])
            )
    return admin_pb2.StatisticsResponse(
        month=month, updates_by_municipality=bounded_counts(updates), provisions=bounded_counts(provisions)
    )


MAX_STATISTICS_COUNTS = 1000  # per list of an answer; the rest are summed under OTHERS
OTHERS = "<others>"


def bounded_counts(counts: Counter[str]) -> list[admin_pb2.StatisticsCount]:
    """The counts in key order, at most MAX_STATISTICS_COUNTS of them (the last one then sums the rest)."""
    keys = sorted(counts)
    kept, rest = keys[: MAX_STATISTICS_COUNTS - 1], keys[MAX_STATISTICS_COUNTS - 1 :]
    out = [admin_pb2.StatisticsCount(key=k, count=counts[k]) for k in kept]
    if len(rest) == 1:
        out.append(admin_pb2.StatisticsCount(key=rest[0], count=counts[rest[0]]))
    elif rest:
        out.append(admin_pb2.StatisticsCount(key=OTHERS, count=sum(counts[k] for k in rest)))
    return out


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
    witnesses: Sequence[Submitter] = (),
) -> None:
    """fsync grouped every flush_interval, checkpoints at their interval, never on the event loop, each
    handed to the witnesses; reports the trail's health (the server is NOT_SERVING while its audit trail
    cannot be written)."""
    loop = asyncio.get_running_loop()
    healthy = True
    next_erasure = 0.0
    if witnesses:  # the newest checkpoint at once: a trail rolled back while stopped is refused at start
        with contextlib.suppress(NoProof, OSError):
            size, note = await loop.run_in_executor(None, checkpoint_note, trail.directory)
            for witness in witnesses:
                witness.offer(note, size)
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
            checkpoint = await loop.run_in_executor(None, trail.maybe_checkpoint)
            if checkpoint is not None:
                for witness in witnesses:
                    witness.offer(checkpoint["note"], checkpoint["seq"])
        except (AuditUnavailable, OSError):
            metrics.AUDIT_WRITE_FAILURES.inc()
            log.error("audit trail flush or checkpoint failed; calls are refused until it is writable")
        if on_health is not None and trail.healthy != healthy:
            healthy = trail.healthy
            await on_health(healthy)
