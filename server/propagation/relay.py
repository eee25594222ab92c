"""The outbox relay (SPEC §6.2): every applied change reaches the national server, in order, once in effect.

Changes are queued in the same LMDB transaction that applies them. This relay reads the oldest queued
changes (a batch when behind), sends them with NotifyUpdates over mTLS, and removes them from the outbox
only after the national server confirms. A failure (national down, restarting, refusing) is retried with
capped exponential backoff and full jitter; the national server is idempotent by municipality + sequence,
so a change sent again after a crash between its confirmation and its removal changes nothing there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from juki.v1 import national_pb2, national_pb2_grpc

from server.observability import metrics
from server.storage.residents import ResidentStore

log = logging.getLogger(__name__)


@dataclass
class RelayStats:
    delivered: int = 0
    attempts: int = 0
    failures: int = 0
    last_error: str = ""
    consecutive_failures: int = field(default=0, repr=False)


def _count(tx: Any, *, failed: bool) -> None:
    """Persist attempt and failure counts, for `juki outbox status` (the metrics restart with the process)."""
    tx.bump(b"relay_attempts")
    if failed:
        tx.bump(b"relay_failures")


class OutboxRelay:
    def __init__(
        self,
        store: ResidentStore,
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
        channel = self._channel_factory()
        stub: Any = national_pb2_grpc.NationalStub(channel)  # type: ignore[no-untyped-call]
        try:
            while not self._stop.is_set():
                self.update_gauges()
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
                if await self._deliver(stub, batch):
                    continue
                await self._sleep_backoff()
        finally:
            await channel.close()

    async def _deliver(self, stub: Any, batch: list[tuple[bytes, national_pb2.PropagatedChange]]) -> bool:
        request = national_pb2.NotifyUpdatesRequest(
            prefecture_code=self._prefecture, changes=[change for _, change in batch]
        )
        self.stats.attempts += 1
        metrics.RELAY_ATTEMPTS.inc()
        try:
            await stub.NotifyUpdates(request, timeout=self._timeout)
        except grpc.RpcError as error:
            self.stats.failures += 1
            self.stats.consecutive_failures += 1
            code = error.code().name if hasattr(error, "code") else "UNKNOWN"
            self.stats.last_error = code
            metrics.RELAY_FAILURES.labels(code=code).inc()
            if self.stats.consecutive_failures in (1, 10) or self.stats.consecutive_failures % 100 == 0:
                log.warning("national server did not take %d change(s): %s", len(batch), code)
            await self._store.env.write(lambda txn: _count(self._store.bind(txn), failed=True))
            return False
        keys = [key for key, _ in batch]

        def confirm(txn: Any) -> None:
            tx = self._store.bind(txn)
            tx.remove_delivered(keys)
            _count(tx, failed=False)

        await self._store.env.write(confirm)
        self.stats.delivered += len(keys)
        self.stats.consecutive_failures = 0
        metrics.RELAY_DELIVERED.inc(len(keys))
        return True

    async def _sleep_backoff(self) -> None:
        exponent = min(self.stats.consecutive_failures - 1, 30)
        ceiling = min(self._backoff_max, self._backoff_initial * (2**exponent))
        delay = random.uniform(0, ceiling)  # full jitter: peers recovering together do not stampede
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)
