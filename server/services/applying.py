"""Applying change notices from a municipal CS, unary or streamed, in write batches (SPEC §6.1), for any
record server: the rules come in as `validate` and `apply`."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from juki.v1 import prefecture_pb2

from server.domain.errors import DomainError
from server.domain.updates import Applied
from server.observability import metrics
from server.services.chain import current_caller
from server.storage.record_file import RecordFile

Context = grpc.aio.ServicerContext[Any, Any]
Validate = Callable[[Any, dt.date, str], None]  # (notice, today, field path) → raises INVALID_ARGUMENT
Apply = Callable[[Any, Any, str], Applied]  # (transaction, notice, caller's municipality)


class NoticeApplier:
    def __init__(
        self,
        store: RecordFile[Any],
        *,
        validate: Validate,
        apply: Apply,
        batch_size: int,
        now: Callable[[], dt.datetime],
        on_applied: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._validate = validate
        self._apply_one = apply
        self._batch_size = batch_size
        self._now = now
        self._on_applied = on_applied

    async def apply(self, notices: list[Any]) -> tuple[list[Applied], DomainError | None]:
        """Apply in order in one write transaction; stop at the first refused notice, keep those before."""
        caller = current_caller().id
        done, refused = await self._store.apply_batch(
            notices, lambda tx, notice: self._apply_one(tx, notice, caller)
        )
        applied = sum(1 for a in done if not a.replayed)
        if applied:
            metrics.UPDATES_APPLIED.labels(caller).inc(applied)
            self._on_applied()
        if refused is not None:
            metrics.UPDATES_REJECTED.labels(refused.reason or refused.kind.value).inc()
        return done, refused

    async def unary(self, notice: Any) -> prefecture_pb2.ApplyUpdateResponse:
        try:
            self._validate(notice, self._now().date(), "notice")
        except DomainError as err:
            metrics.UPDATES_REJECTED.labels(err.reason).inc()
            raise
        done, refused = await self.apply([notice])
        if refused is not None:
            raise refused
        return prefecture_pb2.ApplyUpdateResponse(result=done[0].result, replayed=done[0].replayed)

    async def stream(self, requests: AsyncIterator[Any]) -> prefecture_pb2.ApplyUpdatesResponse:
        results: list[Applied] = []
        pending: list[Any] = []
        failure: DomainError | None = None
        index = 0
        async for request in requests:
            try:
                self._validate(request.notice, self._now().date(), f"notices[{index}]")
            except DomainError as err:
                metrics.UPDATES_REJECTED.labels(err.reason).inc()
                failure = err
                break
            pending.append(request.notice)
            index += 1
            if len(pending) >= self._batch_size:
                done, failure = await self.apply(pending)
                results.extend(done)
                pending = []
                if failure is not None:
                    break
        if pending:
            done, refused = await self.apply(pending)
            results.extend(done)
            failure = failure or refused
        with self._store.reader() as tx:
            last = tx.last_sequence(current_caller().id)
        if failure is not None:
            failure.metadata["last_applied_sequence"] = str(last)
            failure.metadata["applied_in_stream"] = str(len(results))
            raise failure
        return prefecture_pb2.ApplyUpdatesResponse(
            results=[a.result for a in results],
            replayed_count=sum(a.replayed for a in results),
            last_applied_sequence=last,
        )
