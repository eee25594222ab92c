"""The `Prefecture` servicer: translates calls to domain functions and back; no rules live here."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc
from juki.v1 import prefecture_pb2, prefecture_pb2_grpc, records_pb2

from server.audit.disclosure import Disclosure
from server.domain import link, operators
from server.domain import validation as val
from server.domain.errors import DomainError, ErrorKind, Violations, nobody
from server.domain.finding import MAX_MATCHES, Condition, find, parse_condition, too_many
from server.domain.limits import check_message
from server.domain.minimise import resident_view
from server.domain.reconcile import ITEMS, record_items
from server.domain.search import Searcher
from server.domain.updates import apply_notice, validate_notice
from server.identity.pki import SpiffeId
from server.identity.policy import Policy
from server.propagation.national_client import NationalClient
from server.services.applying import NoticeApplier
from server.services.batching import BatchProvision
from server.services.chain import current_caller
from server.services.disclosing import disclose
from server.services.reconciling import ReconcileKind, reconcile
from server.storage.registry import Registry
from server.storage.residents import ResidentStore, ResidentTxn

JST = dt.timezone(dt.timedelta(hours=9), "JST")
LOCAL, NATIONAL = prefecture_pb2.RECORD_SOURCE_LOCAL, prefecture_pb2.RECORD_SOURCE_NATIONAL
T = TypeVar("T")
Context = grpc.aio.ServicerContext[Any, Any]  # the aio context, whatever the request type


def jst_now() -> dt.datetime:
    return dt.datetime.now(JST)


def checked_lookup(request: prefecture_pb2.LookupRequest, policy: Policy) -> tuple[str, bool]:
    """A Lookup request's key ("resident_code" or "my_number") and whether its purpose allows My Number;
    DomainError when a field is invalid or the key is a My Number the purpose does not allow."""
    v = Violations()
    check_message(v, request)
    key = request.WhichOneof("key")
    if key == "resident_code":
        val.check_resident_code(v, "resident_code", request.resident_code)
    elif key == "my_number":
        val.check_my_number(v, "my_number", request.my_number)
    else:
        v.add("key", "required: resident_code or my_number")
    val.check_request_id(v, "request_id", request.request_id)
    v.raise_if_any()
    with_number = policy.allows_my_number(request.purpose)
    if key == "my_number" and not with_number:
        raise DomainError(
            ErrorKind.PERMISSION_DENIED,
            "looking up by My Number needs a purpose that allows My Number",
            reason="PURPOSE_WITHOUT_MY_NUMBER",
        )
    return str(key), with_number


class PrefectureService(prefecture_pb2_grpc.PrefectureServicer):
    def __init__(
        self,
        store: ResidentStore,
        policy: Callable[[], Policy],
        searcher: Searcher,
        *,
        batch_size: int = 256,
        now: Callable[[], dt.datetime] = jst_now,
        national: NationalClient | None = None,
        on_applied: Callable[[], None] = lambda: None,
        registry: Registry | None = None,
        batch_threshold: int = 1000,
        provisions: Callable[[str], Disclosure] | None = None,
    ) -> None:
        self._provisions = provisions
        self._applier = NoticeApplier(
            store,
            validate=lambda notice, today, path: validate_notice(notice, today=today, path=path),
            apply=lambda tx, notice, caller: apply_notice(tx, notice, caller_municipality=caller, now=now),
            batch_size=batch_size,
            now=now,
            on_applied=on_applied,
        )
        self._batch = BatchProvision(
            store,
            registry=registry,
            threshold=batch_threshold,
            now=now,
            allows_my_number=lambda purpose: self._policy().allows_my_number(purpose),
            result=prefecture_pb2.BatchProvideResult,
            view=lambda tx, record, with_number: resident_view(
                record, tx.my_number(record.resident_code) if with_number else ""
            ),
        )
        self._reconcile_kind = ReconcileKind(
            digests=lambda municipality: store.municipality_digests(municipality),
            municipality=lambda record: str(record.municipality_code),
            theirs=lambda record: record_items(record, record.my_number),
            ours=_resident_items,
            items=ITEMS,
        )
        self._national = national
        self._store = store
        self._policy = policy
        self._searcher = searcher
        self._now = now

    # updates (SPEC §6.1) ---------------------------------------------------------------------------
    async def ApplyUpdate(
        self, request: prefecture_pb2.ApplyUpdateRequest, context: Context
    ) -> prefecture_pb2.ApplyUpdateResponse:
        return await self._applier.unary(request.notice)

    async def ApplyUpdates(
        self, request_iterator: AsyncIterator[prefecture_pb2.ApplyUpdateRequest], context: Context
    ) -> prefecture_pb2.ApplyUpdatesResponse:
        return await self._applier.stream(request_iterator, context)

    # reads -----------------------------------------------------------------------------------------
    async def Lookup(
        self, request: prefecture_pb2.LookupRequest, context: Context
    ) -> prefecture_pb2.LookupResponse:
        key, with_number = checked_lookup(request, self._policy())
        with self._store.reader() as tx:
            code = (
                request.resident_code if key == "resident_code" else tx.code_by_my_number(request.my_number)
            )
            record = tx.get(code) if code else None
            number = tx.my_number(record.resident_code) if record is not None and with_number else ""
        if record is not None:
            return prefecture_pb2.LookupResponse(record=resident_view(record, number), source=LOCAL)
        condition = Condition(str(key), request.resident_code or request.my_number)
        views = await self._ask_national(
            condition, request.purpose, request.request_id, with_number, context=context
        )
        if not views:
            raise nobody()
        return prefecture_pb2.LookupResponse(record=views[0], source=NATIONAL)

    # provision and forwarding (SPEC §5.1, §5.4) ----------------------------------------------------
    async def _ask_national(
        self,
        condition: Condition,
        purpose: str,
        request_id: str,
        with_number: bool,
        four_info: prefecture_pb2.FourInfoQuery | None = None,
        *,
        context: Context,
    ) -> list[records_pb2.ResidentView]:
        """The national server's answer, minimised here by this caller's purpose, within the caller's
        remaining deadline (capped)."""
        if self._national is None:
            raise DomainError(ErrorKind.UNAVAILABLE, "no national server configured", "NATIONAL_UNAVAILABLE")
        views = await self._national.query(
            condition,
            purpose=purpose,
            requester=current_caller().uri,
            request_id=request_id,
            four_info=four_info,
            remaining=context.time_remaining(),
        )
        if not with_number:
            for view in views:
                view.my_number = ""
        return views

    def _parse_condition(self, request: Any, oneof: str) -> tuple[Condition, bool]:
        """The request's condition, and whether its purpose allows My Number (a My Number condition must)."""
        v = Violations()
        check_message(v, request)
        val.check_request_id(v, "request_id", request.request_id)
        v.raise_if_any()
        condition = parse_condition(
            request.WhichOneof(oneof),
            request.resident_code,
            request.my_number,
            request.four_info,
            today=self._now().date(),
        )
        with_number = self._policy().allows_my_number(request.purpose)
        if condition.uses_my_number() and not with_number:
            raise DomainError(
                ErrorKind.PERMISSION_DENIED,
                "a My Number condition needs a purpose that allows My Number",
                reason="PURPOSE_WITHOUT_MY_NUMBER",
            )
        return condition, with_number

    async def Provide(
        self, request: prefecture_pb2.ProvideRequest, context: Context
    ) -> prefecture_pb2.ProvideResponse:
        condition, with_number = self._parse_condition(request, "condition")
        views = await self._off_loop(condition.scans(), self._found_views, condition, with_number)
        if len(views) > MAX_MATCHES:
            raise too_many()
        if views:
            return prefecture_pb2.ProvideResponse(records=views, source=LOCAL)
        forwarded = await self._ask_national(
            condition, request.purpose, request.request_id, with_number, request.four_info, context=context
        )
        if not forwarded:
            raise nobody()
        return prefecture_pb2.ProvideResponse(records=forwarded, source=NATIONAL)

    def _found_views(self, condition: Condition, with_number: bool) -> list[records_pb2.ResidentView]:
        with self._store.reader() as tx:
            records = find(tx, condition)
            return [resident_view(r, tx.my_number(r.resident_code) if with_number else "") for r in records]

    @staticmethod
    async def _off_loop(scans: bool, work: Callable[..., T], *args: Any) -> T:
        """`work(*args)` in a worker thread when it scans, else here (a thread costs more than a key read)."""
        return await asyncio.to_thread(work, *args) if scans else work(*args)

    async def QueryNational(
        self, request: prefecture_pb2.QueryNationalRequest, context: Context
    ) -> prefecture_pb2.QueryNationalResponse:
        condition, with_number = self._parse_condition(request, "key")
        views = await self._ask_national(
            condition, request.purpose, request.request_id, with_number, request.four_info, context=context
        )
        return prefecture_pb2.QueryNationalResponse(records=views, source=NATIONAL)

    async def Search(
        self, request: prefecture_pb2.SearchRequest, context: Context
    ) -> prefecture_pb2.SearchResponse:
        records, token, capped = await self._searcher.answer(
            self._store, request, caller=current_caller().uri, today=self._now().date()
        )
        return prefecture_pb2.SearchResponse(
            results=[resident_view(r) for r in records], next_page_token=token, capped=capped
        )

    async def Ping(
        self, request: prefecture_pb2.PingRequest, context: Context
    ) -> prefecture_pb2.PingResponse:
        return prefecture_pb2.PingResponse()

    # not built yet: each answers UNIMPLEMENTED until its issue lands ------------------------------
    async def Disclose(
        self, request: prefecture_pb2.DiscloseRequest, context: Context
    ) -> prefecture_pb2.DiscloseResponse:
        """開示: the resident's 8 items, every provision of their record and every refusal concerning them,
        each with its inclusion proof."""
        with_number = self._policy().allows_my_number(request.purpose)

        def view(tx: ResidentTxn, record: records_pb2.ResidentRecord) -> records_pb2.ResidentView:
            return resident_view(record, tx.my_number(record.resident_code) if with_number else "")

        response: prefecture_pb2.DiscloseResponse = await disclose(
            self._store, request, self._provisions, view, prefecture_pb2.DiscloseResponse
        )
        return response

    async def FetchMyNumber(
        self, request: prefecture_pb2.FetchMyNumberRequest, context: Context
    ) -> prefecture_pb2.FetchMyNumberResponse:
        """The restricted link (SPEC §5.3): one person's My Number and nothing else, for the 附票 server only
        (the policy admits no other caller), for a purpose that allows My Number, on behalf of a requester
        the policy grants Fuhyo.Provide for it, for a person removed by 転出 (persons living abroad are
        removed from the resident register but keep their My Number). Every other person gets one refusal."""
        v = Violations()
        check_message(v, request)
        val.check_resident_code(v, "resident_code", request.resident_code)
        val.check_request_id(v, "request_id", request.request_id, required=True)
        try:
            requester = SpiffeId.parse(request.requester)
            if requester.role not in operators.BULK_ROLES:
                v.add("requester", "an agency or department")
        except ValueError:
            v.add("requester", "the SPIFFE ID of the agency or department asking")
        v.raise_if_any()
        policy = self._policy()
        if not policy.allows_my_number(request.purpose):
            raise DomainError(
                ErrorKind.PERMISSION_DENIED,
                "the purpose does not allow My Number",
                "PURPOSE_WITHOUT_MY_NUMBER",
            )
        link.check_requester(policy, requester, request.purpose, current_caller().trust_domain)
        with self._store.reader() as tx:
            record = tx.get(request.resident_code)
            number = tx.my_number(request.resident_code) if link.moved_out(record) else ""
        if not number:
            raise link.not_abroad()
        return prefecture_pb2.FetchMyNumberResponse(my_number=number)

    async def BatchProvide(
        self, request_iterator: AsyncIterator[prefecture_pb2.BatchProvideRequest], context: Context
    ) -> AsyncIterator[prefecture_pb2.BatchProvideResult]:
        """一括提供: one result per condition, in order; the stream's pace is the caller's (flow control)."""
        async for result in self._batch.stream(request_iterator):
            yield result

    async def Reconcile(
        self, request_iterator: AsyncIterator[prefecture_pb2.ReconcileRequest], context: Context
    ) -> AsyncIterator[prefecture_pb2.ReconcileResponse]:
        """整合: digests per range first, then the records of the differing ranges only."""
        async for response in reconcile(self._store, self._reconcile_kind, request_iterator):
            yield response


def _resident_items(tx: ResidentTxn, code: str) -> tuple[str, tuple[str, ...]] | None:
    record = tx.get(code)
    if record is None:
        return None
    return record.municipality_code, record_items(record, tx.my_number(code))
