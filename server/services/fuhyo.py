"""The `Fuhyo` servicer (附票都道府県サーバ): translates calls to the 附票 rules, the shared search, batch
provision, disclosure and 整合 (the prefectural server's code, on 附票 records), the national 附票 file, the
restricted link and the temporary area. It never writes a My Number anywhere but the temporary area."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from juki.v1 import fuhyo_pb2, fuhyo_pb2_grpc, prefecture_pb2, records_pb2

from server.audit.disclosure import Disclosure
from server.domain import link
from server.domain import validation as val
from server.domain.errors import DomainError, ErrorKind, Violations, nobody
from server.domain.finding import MAX_MATCHES, Condition, find, parse_condition, too_many
from server.domain.fuhyo import (
    apply_fuhyo_notice,
    fuhyo_view,
    held_answer,
    lives_abroad,
    parse_fuhyo_condition,
    parse_held,
    validate_fuhyo_notice,
)
from server.domain.limits import check_message
from server.domain.reconcile import FUHYO_ITEMS, fuhyo_items
from server.domain.search import Searcher
from server.identity.policy import Policy
from server.propagation.my_number_link import MyNumberLink
from server.propagation.national_client import NationalClient
from server.services.applying import NoticeApplier
from server.services.batching import BatchProvision
from server.services.chain import current_caller
from server.services.disclosing import disclose
from server.services.reconciling import ReconcileKind, reconcile
from server.storage.fuhyo_file import FuhyoFile, FuhyoTxn, removed
from server.storage.registry import Registry
from server.tempstore import TempStore, TempStoreError, caller_slot

Context = grpc.aio.ServicerContext[Any, Any]


class FuhyoService(fuhyo_pb2_grpc.FuhyoServicer):
    def __init__(
        self,
        store: FuhyoFile,
        policy: Callable[[], Policy],
        searcher: Searcher,
        link: MyNumberLink,
        tempstore: TempStore,
        *,
        now: Callable[[], dt.datetime],
        batch_size: int = 256,
        on_applied: Callable[[], None] = lambda: None,
        national: NationalClient | None = None,
        registry: Registry | None = None,
        batch_threshold: int = 1000,
        provisions: Callable[[str], Disclosure] | None = None,
    ) -> None:
        self._store = store
        self._national = national
        self._provisions = provisions
        self._batch = BatchProvision(
            store,
            registry=registry,
            threshold=batch_threshold,
            now=now,
            allows_my_number=lambda purpose: False,  # no My Number here: a 個人番号 condition is REFUSED
            result=fuhyo_pb2.FuhyoBatchProvideResult,
            view=lambda tx, record, with_number: fuhyo_view(record),
        )
        self._reconcile_kind = ReconcileKind(
            digests=lambda municipality: store.municipality_digests(municipality),
            municipality=lambda record: str(record.managing_municipality_code),
            theirs=lambda record: fuhyo_items(
                record, record.notice_kind == records_pb2.FUHYO_NOTICE_KIND_REMOVE
            ),
            ours=_held_items,
            items=FUHYO_ITEMS,
        )
        self._policy = policy
        self._link = link
        self._tempstore = tempstore
        self._now = now
        self._searcher = searcher
        self._applier = NoticeApplier(
            store,
            validate=lambda notice, today, path: validate_fuhyo_notice(notice, today=today, path=path),
            apply=self._apply_one,
            batch_size=batch_size,
            now=now,
            on_applied=on_applied,
        )

    def _apply_one(self, tx: FuhyoTxn, notice: fuhyo_pb2.FuhyoNotice, caller: str) -> Any:
        return apply_fuhyo_notice(tx, notice, caller_municipality=caller, now=self._now)

    async def ApplyUpdate(
        self, request: fuhyo_pb2.FuhyoApplyRequest, context: Context
    ) -> prefecture_pb2.ApplyUpdateResponse:
        return await self._applier.unary(request.notice)

    async def ApplyUpdates(
        self, request_iterator: AsyncIterator[fuhyo_pb2.FuhyoApplyRequest], context: Context
    ) -> prefecture_pb2.ApplyUpdatesResponse:
        return await self._applier.stream(request_iterator, context)

    async def Lookup(
        self, request: fuhyo_pb2.FuhyoLookupRequest, context: Context
    ) -> fuhyo_pb2.FuhyoLookupResponse:
        v = Violations()
        check_message(v, request)
        val.check_resident_code(v, "resident_code", request.resident_code)
        val.check_request_id(v, "request_id", request.request_id)
        v.raise_if_any()
        with self._store.reader() as tx:
            record = tx.get(request.resident_code)
        if record is None:
            raise nobody()
        return fuhyo_pb2.FuhyoLookupResponse(record=fuhyo_view(record))

    async def Search(
        self, request: prefecture_pb2.SearchRequest, context: Context
    ) -> fuhyo_pb2.FuhyoSearchResponse:
        records, token, capped = await self._searcher.answer(
            self._store, request, caller=current_caller().uri, today=self._now().date()
        )
        return fuhyo_pb2.FuhyoSearchResponse(
            results=[fuhyo_view(r) for r in records], next_page_token=token, capped=capped
        )

    async def Provide(
        self, request: fuhyo_pb2.FuhyoProvideRequest, context: Context
    ) -> fuhyo_pb2.FuhyoProvideResponse:
        v = Violations()
        check_message(v, request)
        val.check_request_id(v, "request_id", request.request_id, required=request.include_my_number)
        v.raise_if_any()
        condition = parse_condition(
            request.WhichOneof("condition"),
            request.resident_code,
            "",
            request.four_info,
            today=self._now().date(),
        )
        if request.include_my_number and not self._policy().allows_my_number(request.purpose):
            raise _purpose_without_my_number()
        if condition.scans():  # a 4情報 walk: in a worker thread, not on the event loop
            records = await asyncio.to_thread(self._find, condition)
        else:
            records = self._find(condition)
        if len(records) > MAX_MATCHES:
            raise too_many()
        if not records:
            raise nobody()
        views = [fuhyo_view(r) for r in records]
        answer = fuhyo_pb2.FuhyoProvideResponse(records=views, request_id=request.request_id)
        if not request.include_my_number:
            return answer
        if len(records) != 1:
            raise DomainError(
                ErrorKind.FAILED_PRECONDITION, "My Number is given for one person only", "AMBIGUOUS"
            )
        if not lives_abroad(records[0]):  # checked here first: nothing is asked, nothing held
            raise link.not_abroad()
        caller = current_caller().uri
        slot = caller_slot(caller, request.request_id)
        if self._holds(slot, caller):
            raise _held_already()
        answer.my_number = await self._link.fetch(
            records[0].resident_code,
            purpose=request.purpose,
            requester=caller,
            request_id=request.request_id,
            remaining=context.time_remaining(),
        )
        try:
            await self._tempstore.put_async(slot, caller, held_answer(request.purpose, answer))
        except TempStoreError:
            raise _held_already() from None
        return answer

    def _find(self, condition: Condition) -> list[records_pb2.ResidentRecord]:
        with self._store.reader() as tx:
            return find(tx, condition)

    async def Redeliver(
        self, request: fuhyo_pb2.RedeliverRequest, context: Context
    ) -> fuhyo_pb2.FuhyoProvideResponse:
        """The held answer again: same caller, same purpose as the provision, a purpose that (still, after
        any policy reload) allows My Number, within the TTL."""
        _check_schema(request)
        if not self._policy().allows_my_number(request.purpose):
            raise _purpose_without_my_number()
        purpose, answer = parse_held(await self._held(request.request_id, ack=False))
        if purpose != request.purpose:
            raise DomainError(
                ErrorKind.PERMISSION_DENIED,
                "a redelivery states the purpose of the original provision",
                "OTHER_PURPOSE",
            )
        return answer

    async def AckDelivery(
        self, request: fuhyo_pb2.AckDeliveryRequest, context: Context
    ) -> fuhyo_pb2.AckDeliveryResponse:
        _check_schema(request)
        await self._held(request.request_id, ack=True)
        return fuhyo_pb2.AckDeliveryResponse()

    def _holds(self, slot: str, caller: str) -> bool:
        try:
            self._tempstore.get(slot, caller)
        except TempStoreError:
            return False
        return True

    async def _held(self, request_id: str, *, ack: bool) -> bytes:
        """The caller's held payload (acknowledged: erased). Not held, expired, acknowledged or another
        caller's: one answer, so that nobody learns what others hold."""
        v = Violations()
        val.check_request_id(v, "request_id", request_id, required=True)
        v.raise_if_any()
        caller = current_caller().uri
        slot = caller_slot(caller, request_id)
        try:
            if ack:
                await self._tempstore.ack_async(slot, caller)
                return b""
            return self._tempstore.get(slot, caller)
        except TempStoreError:
            raise DomainError(
                ErrorKind.NOT_FOUND, "nothing held for this caller under this request id", "NOT_HELD"
            ) from None

    async def BatchProvide(
        self, request_iterator: AsyncIterator[prefecture_pb2.BatchProvideRequest], context: Context
    ) -> AsyncIterator[fuhyo_pb2.FuhyoBatchProvideResult]:
        """一括提供, as the prefectural server's (the same code), on 附票 records, never with a My Number."""
        async for result in self._batch.stream(request_iterator):
            yield result

    async def Disclose(
        self, request: prefecture_pb2.DiscloseRequest, context: Context
    ) -> fuhyo_pb2.FuhyoDiscloseResponse:
        """開示 of a 附票 record: the record, its provisions and refusals from this server's trail, proofs."""
        response: fuhyo_pb2.FuhyoDiscloseResponse = await disclose(
            self._store,
            request,
            self._provisions,
            lambda tx, record: fuhyo_view(record),
            fuhyo_pb2.FuhyoDiscloseResponse,
        )
        return response

    async def Reconcile(
        self, request_iterator: AsyncIterator[fuhyo_pb2.FuhyoReconcileRequest], context: Context
    ) -> AsyncIterator[prefecture_pb2.ReconcileResponse]:
        """整合 of the 附票 records the calling municipality manages, as the prefectural server's."""
        async for response in reconcile(self._store, self._reconcile_kind, request_iterator):
            yield response

    async def QueryNational(
        self, request: prefecture_pb2.QueryNationalRequest, context: Context
    ) -> fuhyo_pb2.FuhyoQueryNationalResponse:
        """機構への照会: the national 附票 file, by 住民票コード or 4情報 (the 附票 holds no My Number)."""
        condition = parse_fuhyo_condition(request, today=self._now().date())
        if self._national is None:
            raise DomainError(ErrorKind.UNAVAILABLE, "no national server configured", "NATIONAL_UNAVAILABLE")
        views = await self._national.query_fuhyo(
            condition,
            purpose=request.purpose,
            requester=current_caller().uri,
            request_id=request.request_id,
            four_info=request.four_info,
            remaining=context.time_remaining(),
        )
        return fuhyo_pb2.FuhyoQueryNationalResponse(
            records=views, source=prefecture_pb2.RECORD_SOURCE_NATIONAL
        )

    async def Ping(
        self, request: prefecture_pb2.PingRequest, context: Context
    ) -> prefecture_pb2.PingResponse:
        return prefecture_pb2.PingResponse()


def _held_items(tx: FuhyoTxn, code: str) -> tuple[str, tuple[str, ...]] | None:
    record = tx.get_fuhyo(code)
    if record is None:
        return None
    return record.managing_municipality_code, fuhyo_items(record, removed(record))


def _check_schema(request: Any) -> None:
    v = Violations()
    check_message(v, request)
    v.raise_if_any()


def _purpose_without_my_number() -> DomainError:
    return DomainError(
        ErrorKind.PERMISSION_DENIED, "the purpose does not allow My Number", "PURPOSE_WITHOUT_MY_NUMBER"
    )


def _held_already() -> DomainError:
    return DomainError(ErrorKind.ALREADY_EXISTS, "this request id is held already: redeliver it", "HELD")
