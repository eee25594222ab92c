"""一括提供 (BatchProvide) for any record server: the declared count, the admin approval above the threshold,
the purpose fixed by the first message, one result per condition in order at the caller's pace. What a
found record looks like (a ResidentView, or a FuhyoView) and the result message come in as parameters."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

from google.protobuf.message import Message
from juki.v1 import prefecture_pb2, records_pb2

from server.domain import operators
from server.domain.errors import DomainError, ErrorKind, FieldViolation, Violations
from server.domain.finding import Condition, find, parse_condition
from server.domain.limits import check_message
from server.services.chain import current_caller
from server.storage.record_file import RecordFile
from server.storage.registry import Registry

# (read transaction, the one record found, whether its My Number may be given) → the view of it
View = Callable[[Any, records_pb2.ResidentRecord, bool], Message]
MAX_DECLARED = 10_000_000


class BatchProvision:
    def __init__(
        self,
        store: RecordFile[Any],
        *,
        registry: Registry | None,
        threshold: int,
        now: Callable[[], dt.datetime],
        allows_my_number: Callable[[str], bool],
        result: Callable[..., Any],
        view: View,
    ) -> None:
        """`allows_my_number(purpose)`: always False where no My Number is held (the 附票 server): then a
        個人番号 condition is REFUSED. `result`: the result message type (condition_id, outcome, record)."""
        self._store = store
        self._registry = registry
        self._threshold = threshold
        self._now = now
        self._allows_my_number = allows_my_number
        self._result = result
        self._view = view

    async def stream(self, requests: AsyncIterator[prefecture_pb2.BatchProvideRequest]) -> AsyncIterator[Any]:
        """One result per condition, in order; the stream's pace is the caller's (flow control)."""
        purpose = ""
        declared = count = 0
        with_number = False
        today = self._now().date()
        async for request in requests:
            _check_message(request, count)
            if count == 0:
                purpose, declared = request.purpose, request.declared_count
                await self._admit(request)
                with_number = self._allows_my_number(purpose)
            elif request.purpose and request.purpose != purpose:
                raise invalid("purpose", "must not change within a batch")
            count += 1
            if count > declared:
                raise invalid("declared_count", "the stream carries more conditions than declared")
            yield await self._one(request, today, with_number)

    async def _admit(self, first: prefecture_pb2.BatchProvideRequest) -> None:
        if not 1 <= first.declared_count <= MAX_DECLARED:
            raise invalid("declared_count", "required in the first message: 1 to 10,000,000")
        if first.declared_count <= self._threshold and not first.approval_token:
            return
        caller, purpose, count, now = current_caller(), first.purpose, first.declared_count, self._now()
        registry = self._registry
        if registry is None:
            raise DomainError(ErrorKind.PERMISSION_DENIED, "no approvals here", "NO_APPROVAL")
        assert registry is not None

        await registry.consume_approval(
            first.approval_token,
            lambda record: operators.check_approval(
                record, caller=caller, purpose=purpose, count=count, now=now
            ),
        )

    async def _one(
        self, request: prefecture_pb2.BatchProvideRequest, today: dt.date, with_number: bool
    ) -> Any:
        result = self._result(condition_id=request.condition_id)
        try:
            condition = parse_condition(
                request.WhichOneof("condition"),
                request.resident_code,
                request.my_number,
                request.four_info,
                today=today,
            )
        except DomainError:
            result.outcome = prefecture_pb2.BATCH_OUTCOME_REFUSED
            return result
        if condition.uses_my_number() and not with_number:
            result.outcome = prefecture_pb2.BATCH_OUTCOME_REFUSED
            return result
        if condition.scans():  # a 4情報 condition walks an index: in a worker thread, not on the event loop
            records = await asyncio.to_thread(self._find, condition, with_number, result)
        else:
            records = self._find(condition, with_number, result)
        if not records:
            result.outcome = prefecture_pb2.BATCH_OUTCOME_NOT_FOUND
        elif len(records) > 1:
            result.outcome = prefecture_pb2.BATCH_OUTCOME_AMBIGUOUS
        else:
            result.outcome = prefecture_pb2.BATCH_OUTCOME_FOUND
        return result

    def _find(self, condition: Condition, with_number: bool, result: Any) -> list[records_pb2.ResidentRecord]:
        with self._store.reader() as tx:
            records = find(tx, condition)
            if len(records) == 1:
                result.record.CopyFrom(self._view(tx, records[0], with_number))
        return records


_CONDITION = frozenset({"resident_code", "my_number", "four_info"})


def _check_message(request: prefecture_pb2.BatchProvideRequest, index: int) -> None:
    """A message of a batch outside the schema ends the stream; a malformed condition is only REFUSED."""
    v = Violations()
    check_message(v, request, f"requests[{index}]", skip=_CONDITION)
    v.raise_if_any()


def invalid(field: str, description: str) -> DomainError:
    return DomainError(
        ErrorKind.INVALID_ARGUMENT,
        f"invalid field: {field}",
        reason="INVALID_FIELDS",
        violations=[FieldViolation(field, description)],
    )
