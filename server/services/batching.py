"""一括提供 (BatchProvide) for any record server: the declared count (of conditions), the admin approval above
the threshold, the purpose fixed by the first message, one result message per request message in order at
the caller's pace — a single condition's result, or a chunk's results (up to MAX_BATCH_CHUNK conditions,
looked up in one read transaction). What a found record looks like (a ResidentView, or a FuhyoView) and the
result message come in as parameters."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from google.protobuf.message import Message
from juki.v1 import prefecture_pb2, records_pb2

from server.domain import operators
from server.domain.errors import DomainError, ErrorKind, FieldViolation, Violations
from server.domain.finding import Condition, find, parse_condition
from server.domain.limits import MAX_BATCH_CHUNK, check_message
from server.services.chain import current_caller
from server.storage.record_file import RecordFile
from server.storage.registry import Registry

# (read transaction, the one record found, whether its My Number may be given) → the view of it
View = Callable[[Any, records_pb2.ResidentRecord, bool], Message]
MAX_DECLARED = 10_000_000
# A chunk of more conditions is looked up in a worker thread (about 10 µs each: the loop stays free).
ON_LOOP_CONDITIONS = 64


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
        個人番号 condition is REFUSED. `result`: the result message type (condition_id, outcome, record; and
        `results`, the items of a chunk's answer)."""
        self._store = store
        self._registry = registry
        self._threshold = threshold
        self._now = now
        self._allows_my_number = allows_my_number
        self._result = result
        self._view = view

    async def stream(self, requests: AsyncIterator[prefecture_pb2.BatchProvideRequest]) -> AsyncIterator[Any]:
        """One result message per request message, in order: a single condition's result, or a chunk's
        results in condition order. The stream's pace is the caller's (flow control)."""
        purpose = ""
        declared = count = 0
        with_number = False
        today = self._now().date()
        index = 0
        async for request in requests:
            _check_message(request, index)
            if index == 0:
                purpose, declared = request.purpose, request.declared_count
                await self._admit(request)
                with_number = self._allows_my_number(purpose)
            elif request.purpose and request.purpose != purpose:
                raise invalid("purpose", "must not change within a batch")
            index += 1
            count += len(request.conditions) or 1
            if count > declared:
                raise invalid("declared_count", "the stream carries more conditions than declared")
            if request.conditions:
                yield await self._chunk(request.conditions, today, with_number)
            else:
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
        condition = self._condition(request, today, with_number)
        if condition is not None and condition.scans():  # walks an index: in a worker thread, not on the loop
            await asyncio.to_thread(self._find, [condition], with_number, [result])
        else:
            self._find([condition], with_number, [result])
        return result

    async def _chunk(self, conditions: Sequence[Any], today: dt.date, with_number: bool) -> Any:
        """A chunk: every condition parsed, then all looked up in one read transaction — in one worker thread
        when the chunk is large or has a 4情報 condition (its lookups would hold the event loop), else on the
        loop — and answered by one message whose `results` are in condition order."""
        result = self._result()
        parsed: list[Condition | None] = []
        for condition in conditions:
            result.results.add(condition_id=condition.condition_id)
            parsed.append(self._condition(condition, today, with_number))
        if len(parsed) > ON_LOOP_CONDITIONS or any(c is not None and c.scans() for c in parsed):
            await asyncio.to_thread(self._find, parsed, with_number, result.results)
        else:
            self._find(parsed, with_number, result.results)
        return result

    def _condition(self, source: Any, today: dt.date, with_number: bool) -> Condition | None:
        """The condition a request (or a chunk's BatchCondition) names; None when it is REFUSED: malformed,
        or a 個人番号 condition for a purpose without My Number."""
        try:
            condition = parse_condition(
                source.WhichOneof("condition"),
                source.resident_code,
                source.my_number,
                source.four_info,
                today=today,
            )
        except DomainError:
            return None
        if condition.uses_my_number() and not with_number:
            return None
        return condition

    def _find(
        self, conditions: Sequence[Condition | None], with_number: bool, results: Sequence[Any]
    ) -> None:
        """Each condition's outcome (and record) into its result, all in one read transaction."""
        with self._store.reader() as tx:
            for condition, result in zip(conditions, results, strict=True):
                if condition is None:
                    result.outcome = prefecture_pb2.BATCH_OUTCOME_REFUSED
                    continue
                records = find(tx, condition)
                if not records:
                    result.outcome = prefecture_pb2.BATCH_OUTCOME_NOT_FOUND
                elif len(records) > 1:
                    result.outcome = prefecture_pb2.BATCH_OUTCOME_AMBIGUOUS
                else:
                    result.outcome = prefecture_pb2.BATCH_OUTCOME_FOUND
                    result.record.CopyFrom(self._view(tx, records[0], with_number))


_CONDITION = frozenset({"resident_code", "my_number", "four_info"})


def _check_message(request: prefecture_pb2.BatchProvideRequest, index: int) -> None:
    """A message of a batch outside the schema ends the stream; a malformed condition is only REFUSED. A
    message carries one condition or a chunk (at most MAX_BATCH_CHUNK), never both."""
    v = Violations()
    where = f"requests[{index}]"
    check_message(v, request, where, skip=_CONDITION | {"conditions"})
    chunk = request.conditions
    if chunk:
        if len(chunk) > MAX_BATCH_CHUNK:
            v.add(f"{where}.conditions", f"at most {MAX_BATCH_CHUNK:,} conditions a message")
        elif request.condition_id or request.WhichOneof("condition"):
            v.add(f"{where}.conditions", "either one condition (condition_id and its fields) or conditions")
        else:
            for i, condition in enumerate(chunk):
                check_message(v, condition, f"{where}.conditions[{i}]", skip=_CONDITION)
    v.raise_if_any()


def invalid(field: str, description: str) -> DomainError:
    return DomainError(
        ErrorKind.INVALID_ARGUMENT,
        f"invalid field: {field}",
        reason="INVALID_FIELDS",
        violations=[FieldViolation(field, description)],
    )
