"""The outbox relay (SPEC §6.2): every applied change reaches the national server, in order, once in effect.

Changes are queued in the same LMDB transaction that applies them. This relay reads the oldest queued
changes (a batch when behind), sends them with NotifyUpdates over mTLS, and removes them from the outbox
only after the national server confirms. A failure (national down, restarting, refusing) is retried with
capped exponential backoff and full jitter; the national server is idempotent by municipality + sequence,
so a change sent again after a crash between its confirmation and its removal changes nothing there.

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
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from juki.v1 import national_pb2, national_pb2_grpc

from server.observability import metrics
from server.storage.record_file import RecordFile

log = logging.getLogger(__name__)

_UNREACHABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})


class _Outcome(enum.Enum):
    DELIVERED = "delivered"
    UNREACHABLE = "unreachable"  # no answer from the national server (down, frozen, network)
    REFUSED = "refused"  # the national server answered and did not take the batch


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
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        idle_poll: float = 1.0,
        timeout: float = 10.0,
    ) -> None:
        self._store = store
        self._channel_factory = channel_factory
        self._prefecture = prefecture_code
        self._batch = batch_size
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

    def _read_batch(self) -> list[tuple[bytes, national_pb2.PropagatedChange]]:
        with self._store.reader() as tx:
            raw = tx.outbox_batch(self._batch)
        batch = []
        for key, payload in raw:
            change = national_pb2.PropagatedChange()
            change.ParseFromString(payload)
            batch.append((key, change))
        return batch

    def update_gauges(self) -> None:
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
                if not batch:
                    self._wakeup.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), self._idle_poll)
                    continue
                current = self._channel_factory()  # a new channel after certificate rotation
                if current is not channel:
                    channel = current
                    stub = national_pb2_grpc.NationalStub(channel)  # type: ignore[no-untyped-call]
                outcome = await self._unless_stopped(self._deliver(stub, batch))
                if outcome is None or outcome is _Outcome.DELIVERED:
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
            self.stats.last_error = code
            metrics.RELAY_FAILURES.labels(code=code).inc()
            if self.stats.consecutive_failures in (1, 10) or self.stats.consecutive_failures % 100 == 0:
                log.warning("national server did not take %d change(s): %s", len(batch), code)
            await self._store.count_relay_attempt(failed=True)
            return _Outcome.UNREACHABLE if code in _UNREACHABLE else _Outcome.REFUSED
        keys = [key for key, _ in batch]
        await self._store.confirm_delivered(keys)
        self.stats.delivered += len(keys)
        self.stats.consecutive_failures = 0
        metrics.RELAY_DELIVERED.inc(len(keys))
        return _Outcome.DELIVERED

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
