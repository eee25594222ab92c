"""The outbox relay (SPEC §6.2): every applied change reaches the national server, in order, once in effect.

Changes are queued in the same LMDB transaction that applies them. This relay reads the oldest queued
changes (a batch when behind), sends them with NotifyUpdates over mTLS, and removes them from the outbox
only after the national server confirms. A failure (national down, restarting, refusing) is retried with
capped exponential backoff and full jitter; the national server is idempotent by municipality + sequence,
so a change sent again after a crash between its confirmation and its removal changes nothing there.

Batches are bounded in count and in bytes (`batch_bytes`, below the national server's 8 MiB receive cap).
A change the national server refuses for good — too large, invalid, conflicting with what it holds, or
refused for the identity or prefecture it came with (any answer but the transient ones: UNAVAILABLE,
DEADLINE_EXCEEDED, a rate limit with RetryInfo, INTERNAL/UNKNOWN/UNAUTHENTICATED...) — must not stall the
prefecture. A refused batch is halved until the refused change is alone (the changes before it go on), and
that change is set aside: moved, sealed as it was, to its own table (`outbox_aside`), counted in
`juki_outbox_set_aside{state="refused"}`, shown by `juki outbox status`, alerted on (deploy/). Order is
per municipality (the national server takes each municipality's sequence numbers consecutively), so the
later changes of that municipality — only of that one — are held behind it (`state="held"`, moved to the
same table in order) while every other municipality's changes keep flowing. `juki outbox requeue
<municipality>` puts a stream back in the outbox, in its places, once the cause is dealt with (runbook:
deploy/README.md). A change larger than `max_change_bytes` is set aside without being sent.

An unreachable national server is waited for, not polled: each attempt waits for the channel to connect
(`wait_for_ready`, bounded by the call's timeout) and the channel's reconnect backoff is capped at a second
(`server.identity.credentials.PEER_CHANNEL_OPTIONS`), so delivery resumes within about a second of the
peer returning; only a refusal by a reachable peer backs off exponentially. The outbox gauges are refreshed
every second on their own, so they stay current while an attempt waits. A storage error is not handled here:
it ends `run`, and the supervisor (`server.supervision`) logs, counts and restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from juki.v1 import national_pb2, national_pb2_grpc

from server.domain.national import notice_of
from server.observability import metrics
from server.storage.record_file import RecordFile

log = logging.getLogger(__name__)

_UNREACHABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})
# Answers about the changes sent (not about the peer, the connection or this server's certificate): the
# same batch would be refused again, so its refused change is isolated and set aside.
_FOR_GOOD = frozenset(
    {
        "INVALID_ARGUMENT",
        "FAILED_PRECONDITION",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "OUT_OF_RANGE",
        "ALREADY_EXISTS",
        "NOT_FOUND",
    }
)
_REASON = re.compile(r"[A-Z0-9_]{1,64}")  # a peer's ErrorInfo reason, kept only when it looks like one
HELD = "HELD_BEHIND_SET_ASIDE"
TOO_LARGE = "TOO_LARGE"


class _Outcome(enum.Enum):
    DELIVERED = "delivered"
    UNREACHABLE = "unreachable"  # no answer from the national server (down, frozen, network)
    REFUSED = "refused"  # the national server answered and did not take the batch (try again later)
    REFUSED_FOR_GOOD = "refused-for-good"  # the same batch would be refused again: isolate its culprit


@dataclass
class Batch:
    changes: list[tuple[bytes, national_pb2.PropagatedChange]] = field(default_factory=list)
    hold: list[tuple[bytes, str, str]] = field(default_factory=list)  # (key, stream, reason) to set aside


def stream_of(change: national_pb2.PropagatedChange) -> str:
    """The national server's sequence stream of a change: its file and municipality (a 附票 change's:
    its managing municipality)."""
    prefix = "F" if change.file == national_pb2.CHANGE_FILE_FUHYO else ""
    return prefix + notice_of(change)[0]


@dataclass
class RelayStats:
    delivered: int = 0
    attempts: int = 0
    failures: int = 0
    last_error: str = ""
    consecutive_failures: int = field(default=0, repr=False)


class OutboxRelay:
    def __init__(
        self,
        store: RecordFile[Any],
        channel_factory: Callable[[], grpc.aio.Channel],  # the current channel (new after rotation)
        *,
        prefecture_code: str,
        batch_size: int = 500,
        batch_bytes: int = 4 << 20,
        max_change_bytes: int = (8 << 20) - (64 << 10),
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        idle_poll: float = 1.0,
        timeout: float = 10.0,
    ) -> None:
        self._store = store
        self._channel_factory = channel_factory
        self._prefecture = prefecture_code
        self._batch = batch_size
        self._limit = batch_size  # halved while a refused batch is narrowed to its refused change
        self._batch_bytes = batch_bytes
        self._max_change_bytes = max_change_bytes
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._idle_poll = idle_poll
        self._timeout = timeout
        self._wakeup = asyncio.Event()
        self._stop = asyncio.Event()
        self.stats = RelayStats()

    def notify(self) -> None:
        """Something was queued: deliver now rather than at the next poll."""
        self._wakeup.set()

    def stop(self) -> None:
        self._stop.set()
        self._wakeup.set()

    def _read_batch(self) -> Batch:
        """The oldest queued changes within the count and byte bounds (at least one), skipping — to be set
        aside — the changes of a stream held behind a set-aside change and changes too large to send."""
        batch = Batch()
        size = 0
        with self._store.reader() as tx:
            held = tx.aside_streams()
            raw = tx.outbox_batch(self._limit)
        for key, payload in raw:
            change = national_pb2.PropagatedChange()
            change.ParseFromString(payload)
            stream = stream_of(change)
            if stream in held:
                batch.hold.append((key, stream, HELD))
                continue
            if len(payload) > self._max_change_bytes:
                batch.hold.append((key, stream, TOO_LARGE))
                held.add(stream)
                continue
            if batch.changes and size + len(payload) + 16 > self._batch_bytes:
                break
            batch.changes.append((key, change))
            size += len(payload) + 16  # the tag and length of a repeated field, with room to spare
        return batch

    async def _set_aside(self, entries: list[tuple[bytes, str, str]]) -> None:
        await self._store.set_aside(entries, int(time.time() * 1000), HELD)
        for _, stream, reason in entries:
            if reason != HELD:
                log.error(
                    "a change was set aside: the national server refused it for good",
                    extra={"stream": stream, "reason": reason},
                )
        self._refresh_aside_gauges()

    def _refresh_aside_gauges(self) -> None:
        with self._store.reader() as tx:
            refused, held = tx.aside_counts()
        metrics.OUTBOX_SET_ASIDE.labels("refused").set(refused)
        metrics.OUTBOX_SET_ASIDE.labels("held").set(held)

    def update_gauges(self) -> None:
        self._refresh_aside_gauges()
        with self._store.reader() as tx:
            depth = tx.outbox_depth()
            oldest = tx.outbox_oldest_ms()
        metrics.OUTBOX_DEPTH.set(depth)
        metrics.OUTBOX_OLDEST_AGE.set(0 if oldest is None else max(0.0, time.time() - oldest / 1000))

    async def run(self) -> None:
        """Deliver until stopped; an attempt under way at the stop is abandoned (its changes stay queued)."""
        channel = self._channel_factory()
        stub: Any = national_pb2_grpc.NationalStub(channel)  # type: ignore[no-untyped-call]
        gauges = asyncio.create_task(self._refresh_gauges(), name="outbox-gauges")
        try:
            while not self._stop.is_set():
                batch = self._read_batch()
                if batch.hold:
                    await self._set_aside(batch.hold)
                if not batch.changes:
                    if batch.hold:
                        continue
                    self._wakeup.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), self._idle_poll)
                    continue
                current = self._channel_factory()  # a new channel after certificate rotation
                if current is not channel:
                    channel = current
                    stub = national_pb2_grpc.NationalStub(channel)  # type: ignore[no-untyped-call]
                outcome = await self._unless_stopped(self._deliver(stub, batch.changes))
                if outcome is None:
                    continue
                if outcome is _Outcome.DELIVERED:
                    self._limit = min(self._batch, self._limit * 2)
                    continue
                if outcome is _Outcome.REFUSED_FOR_GOOD:
                    await self._narrow(batch.changes)
                    continue
                await self._sleep_backoff(unreachable=outcome is _Outcome.UNREACHABLE)
        finally:  # the channel stays open: a restarted relay uses it again; the server closes it at the end
            gauges.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gauges

    async def _refresh_gauges(self, every: float = 1.0) -> None:
        while True:
            try:
                self.update_gauges()
            except Exception as exc:  # the relay itself meets the same storage error and is restarted
                metrics.BACKGROUND_FAILURES.labels(task="outbox-gauges").inc()
                log.error("outbox gauges could not be read", extra={"error": type(exc).__name__})
            await asyncio.sleep(every)

    async def _unless_stopped(self, attempt: Awaitable[_Outcome]) -> _Outcome | None:
        """The attempt's outcome, or None when the relay was stopped first (the attempt is cancelled)."""
        running = asyncio.ensure_future(attempt)
        stopping = asyncio.ensure_future(self._stop.wait())
        done, _ = await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if running in done:
            return running.result()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        return None

    async def _deliver(self, stub: Any, batch: list[tuple[bytes, national_pb2.PropagatedChange]]) -> _Outcome:
        request = national_pb2.NotifyUpdatesRequest(
            prefecture_code=self._prefecture, changes=[change for _, change in batch]
        )
        self.stats.attempts += 1
        metrics.RELAY_ATTEMPTS.inc()
        try:
            await stub.NotifyUpdates(request, timeout=self._timeout, wait_for_ready=True)
        except grpc.RpcError as error:
            self.stats.failures += 1
            self.stats.consecutive_failures += 1
            code = error.code().name if hasattr(error, "code") else "UNKNOWN"
            retry, reason = _refusal(error)
            self.stats.last_error = f"{code}:{reason}" if reason else code
            metrics.RELAY_FAILURES.labels(code=code).inc()
            if self.stats.consecutive_failures in (1, 10) or self.stats.consecutive_failures % 100 == 0:
                log.warning("national server did not take %d change(s): %s", len(batch), code)
            await self._store.count_relay_attempt(failed=True)
            if code in _UNREACHABLE:
                return _Outcome.UNREACHABLE
            if code in _FOR_GOOD and not retry:
                return _Outcome.REFUSED_FOR_GOOD
            return _Outcome.REFUSED
        keys = [key for key, _ in batch]
        await self._store.confirm_delivered(keys)
        self.stats.delivered += len(keys)
        self.stats.consecutive_failures = 0
        metrics.RELAY_DELIVERED.inc(len(keys))
        return _Outcome.DELIVERED

    async def _narrow(self, refused: list[tuple[bytes, national_pb2.PropagatedChange]]) -> None:
        """A batch refused for good: send its first half next (the changes before the refused one go on),
        until the refused change is alone; then set it aside (and, with it, its stream's later changes)."""
        if len(refused) > 1:
            self._limit = max(1, len(refused) // 2)
            return
        key, change = refused[0]
        await self._set_aside([(key, stream_of(change), self.stats.last_error)])
        self.stats.consecutive_failures = 0

    async def _sleep_backoff(self, *, unreachable: bool) -> None:
        """Full jitter under a capped exponential ceiling; an unreachable peer's ceiling is a second at most
        (the attempt itself already waited for the channel up to its timeout)."""
        exponent = min(self.stats.consecutive_failures - 1, 30)
        ceiling = min(self._backoff_max, self._backoff_initial * (2**exponent))
        if unreachable:
            ceiling = min(ceiling, 1.0)
        delay = random.uniform(0, ceiling)  # full jitter: peers recovering together do not stampede
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)


def _refusal(error: grpc.RpcError) -> tuple[bool, str]:
    """(whether the refusal carries google.rpc.RetryInfo — a rate limit: the same batch is taken later —,
    its ErrorInfo reason) from the status details of a failed call."""
    trailing: Any = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    retry, reason = False, ""
    for key, value in trailing or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status()
        status.ParseFromString(value)
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = True
            elif detail.Unpack(info) and _REASON.fullmatch(info.reason):
                reason = info.reason
    return retry, reason
