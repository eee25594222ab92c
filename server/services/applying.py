"""Applying change notices from a municipal CS, unary or streamed, in write batches (SPEC §6.1), for any
record server: the rules come in as `validate` and `apply`.

The stream contract (ApplyUpdates): notices are applied in order, one write transaction per batch, each
notice whole or not at all. The stream ends at the FIRST failing notice — refused by a rule, invalid, or a
message that does not decode — with that notice's error, which names it (`notices[i]` / `requests[i]`, and
ErrorInfo metadata `notice_index`); every notice before it is applied first, and the error's metadata
carries `last_applied_sequence` and `applied_in_stream`. A stream cancelled by its client (or past its
deadline) applies the batches committed before the cancellation reached the server: notices received but
not yet in a committed batch are not applied (the CS sends them again; a notice that was applied is then
an idempotent replay). grpc ends the iteration of a cancelled stream as if the client had closed it and
reports the cancellation a moment later, so the last batch is written only after waiting CANCEL_NOTICE_S
for that report. Whatever the outcome, the call's audit entry counts the notices
applied (`CallFacts.applied`), which is what Statistics (住基法 30条の15) counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from juki.v1 import prefecture_pb2

from server.domain.errors import DomainError
from server.domain.updates import Applied
from server.observability import metrics
from server.services.chain import current_caller, current_facts
from server.storage.record_file import RecordFile

Context = grpc.aio.ServicerContext[Any, Any]
Validate = Callable[[Any, dt.date, str], None]  # (notice, today, field path) → raises INVALID_ARGUMENT
Apply = Callable[[Any, Any, str], Applied]  # (record-level transaction, notice, caller's municipality)
# After a stream's end, grpc reports its cancellation (if it was one) within this; measured: under 0.2 ms.
CANCEL_NOTICE_S = 0.005


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
        """Apply in order in one write transaction; stop at the first refused notice, keep those before.

        A cancellation while the transaction runs waits for its commit (it cannot be taken back), so that
        what was applied is counted before the cancellation goes on."""
        caller = current_caller().id
        writing = asyncio.ensure_future(
            self._store.apply_batch(notices, lambda tx, notice: self._apply_one(tx, notice, caller))
        )
        try:
            done, refused = await asyncio.shield(writing)
        except asyncio.CancelledError:
            while not writing.done():  # its commit cannot be taken back: wait for it, then count it
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(writing)
            self._count(*writing.result())
            raise
        self._count(done, refused)
        return done, refused

    def _count(self, done: list[Applied], refused: DomainError | None) -> None:
        applied = sum(1 for a in done if not a.replayed)
        facts = current_facts()
        facts.applied = (facts.applied or 0) + applied
        if applied:
            metrics.UPDATES_APPLIED.labels(current_caller().id).inc(applied)
            self._on_applied()
        if refused is not None:
            metrics.UPDATES_REJECTED.labels(refused.reason or refused.kind.value).inc()

    async def unary(self, notice: Any) -> prefecture_pb2.ApplyUpdateResponse:
        current_facts().applied = 0
        try:
            self._validate(notice, self._now().date(), "notice")
        except DomainError as err:
            metrics.UPDATES_REJECTED.labels(err.reason).inc()
            raise
        done, refused = await self.apply([notice])
        if refused is not None:
            raise refused
        return prefecture_pb2.ApplyUpdateResponse(result=done[0].result, replayed=done[0].replayed)

    async def stream(
        self, requests: AsyncIterator[Any], context: Context
    ) -> prefecture_pb2.ApplyUpdatesResponse:
        current_facts().applied = 0
        results: list[Applied] = []
        pending: list[Any] = []
        failure: DomainError | None = None
        index = 0  # of the next message of the stream
        try:
            async for request in requests:  # an undecodable message raises here, naming requests[index]
                try:
                    self._validate(request.notice, self._now().date(), f"notices[{index}]")
                except DomainError as err:
                    metrics.UPDATES_REJECTED.labels(err.reason).inc()
                    failure = _at(err, index)
                    break
                pending.append(request.notice)
                index += 1
                if len(pending) >= self._batch_size:
                    failure = await self._apply_batch(pending, results)
                    pending = []
                    if failure is not None:
                        break
        except DomainError as err:
            failure = _at(err, index)
        # A client's cancellation also ends the iteration, and grpc reports it to this task a moment later
        # (at an await): the stream's uncommitted notices are applied only once the end was not one.
        await asyncio.sleep(CANCEL_NOTICE_S)
        if context.cancelled():
            raise asyncio.CancelledError
        if pending:  # before the failing message: applied first, and an earlier refusal comes first
            failure = await self._apply_batch(pending, results) or failure
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

    async def _apply_batch(self, pending: list[Any], results: list[Applied]) -> DomainError | None:
        """Apply a batch whose first notice is notice number len(results) of the stream; the refusal (if
        any) names its notice."""
        start = len(results)
        done, refused = await self.apply(pending)
        results.extend(done)
        return None if refused is None else _at(refused, start + len(done))


def _at(err: DomainError, index: int) -> DomainError:
    """The error of the stream's notice `index`, naming it (a field path already names it when invalid)."""
    err.metadata.setdefault("notice_index", str(index))
    if not err.violations and not err.message.startswith("notices["):
        err.message = f"notices[{index}]: {err.message}"
    return err
