"""The `National` servicer (J-LIS peer): takes propagated changes into the national resident file or the
national 附票 file (附票全国サーバ), answers queries of either."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

import grpc
from juki.v1 import national_pb2, national_pb2_grpc, prefecture_pb2

from server.domain import validation as val
from server.domain.errors import DomainError, ErrorKind, Violations
from server.domain.finding import MAX_MATCHES, find, parse_condition, too_many
from server.domain.fuhyo import fuhyo_view, parse_fuhyo_condition
from server.domain.limits import check_message
from server.domain.minimise import resident_view
from server.domain.national import FILE_OF_ROLE, absorb_change, validate_changes
from server.identity.policy import Policy
from server.services.chain import current_caller
from server.services.prefecture import jst_now
from server.storage.fuhyo_file import FuhyoFile
from server.storage.record_file import RecordFile
from server.storage.residents import ResidentStore

Context = grpc.aio.ServicerContext[Any, Any]
QUERY = "/juki.v1.National/Query"


class NationalService(national_pb2_grpc.NationalServicer):
    def __init__(
        self,
        store: ResidentStore,
        fuhyo_store: FuhyoFile,
        policy: Callable[[], Policy],
        *,
        now: Callable[[], dt.datetime] = jst_now,
    ) -> None:
        self._store = store
        self._fuhyo_store = fuhyo_store
        self._policy = policy
        self._now = now

    async def NotifyUpdates(
        self, request: national_pb2.NotifyUpdatesRequest, context: Context
    ) -> national_pb2.NotifyUpdatesResponse:
        caller = current_caller()
        validate_changes(request, caller=caller, today=self._now().date())
        received_on = self._now().date().isoformat()
        # every change is of the caller's one file (checked above): one store, one transaction
        fuhyo = FILE_OF_ROLE[caller.role] == national_pb2.CHANGE_FILE_FUHYO
        store: RecordFile[Any] = self._fuhyo_store if fuhyo else self._store

        taken, refused = await store.apply_batch(
            request.changes, lambda tx, change: absorb_change(tx, change, received_on=received_on)
        )
        accepted = sum(taken)
        duplicates = len(taken) - accepted
        if refused is not None:
            refused.metadata["accepted"] = str(accepted)
            raise refused
        return national_pb2.NotifyUpdatesResponse(accepted=accepted, duplicates=duplicates)

    async def Query(
        self, request: national_pb2.NationalQueryRequest, context: Context
    ) -> national_pb2.NationalQueryResponse:
        v = Violations()
        check_message(v, request)
        v.raise_if_any()
        condition = parse_condition(
            request.WhichOneof("key"),
            request.resident_code,
            request.my_number,
            request.four_info,
            today=self._now().date(),
        )
        val.check_request_id(v, "request_id", request.request_id)
        v.raise_if_any()
        # Minimised here too (SPEC §4.2): a My Number only for a purpose that allows it, to a caller granted
        # that purpose with My Number (the 附票 server's grant excludes it: its only path is §5.3's link).
        with_number = self._policy().gives_my_number(current_caller(), QUERY, request.purpose)
        if condition.uses_my_number() and not with_number:
            raise DomainError(
                ErrorKind.PERMISSION_DENIED,
                "a My Number condition needs a purpose that allows My Number, for a caller granted it",
                reason="PURPOSE_WITHOUT_MY_NUMBER",
            )

        def found() -> tuple[int, list[Any]]:
            with self._store.reader() as tx:
                records = find(tx, condition, include_removed=True)
                views = [
                    resident_view(r, tx.my_number(r.resident_code) if with_number else "")
                    for r in records[:MAX_MATCHES]
                ]
            return len(records), views

        # a 4情報 walk runs in a worker thread, a key lookup here (a thread costs more than a key read)
        count, views = await asyncio.to_thread(found) if condition.scans() else found()
        if count > MAX_MATCHES:
            raise too_many()
        return national_pb2.NationalQueryResponse(records=views)

    async def QueryFuhyo(
        self, request: national_pb2.NationalQueryRequest, context: Context
    ) -> national_pb2.NationalFuhyoQueryResponse:
        """The national 附票 file by 住民票コード or 4情報; it holds no My Number to look by."""
        condition = parse_fuhyo_condition(request, today=self._now().date())
        with self._fuhyo_store.reader() as tx:
            records = find(tx, condition, include_removed=True)
        if len(records) > MAX_MATCHES:
            raise too_many()
        return national_pb2.NationalFuhyoQueryResponse(records=[fuhyo_view(r) for r in records])

    async def Ping(
        self, request: prefecture_pb2.PingRequest, context: Context
    ) -> prefecture_pb2.PingResponse:
        return prefecture_pb2.PingResponse()
