"""Asking the national server about a person not held here (機構への照会), over one reused mTLS channel.

A call made on behalf of a caller gets the caller's remaining deadline (less a margin for answering it),
capped at `timeout`: a caller with a 10 s deadline is not answered UNAVAILABLE at 5 s, and a caller
without one does not wait for ever."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from juki.v1 import fuhyo_pb2, national_pb2, national_pb2_grpc, records_pb2

from server.domain.errors import DomainError, ErrorKind
from server.domain.finding import Condition

ANSWER_MARGIN_S = 0.05  # of the caller's deadline, kept for answering it after the peer's answer


def link_timeout(remaining: float | None, cap: float) -> float:
    """The timeout of a call made for a caller with `remaining` seconds left (None: no deadline)."""
    if remaining is None:
        return cap
    return max(0.001, min(cap, remaining - ANSWER_MARGIN_S))


class NationalClient:
    def __init__(self, channel_factory: Callable[[], grpc.aio.Channel], *, timeout: float = 30.0) -> None:
        self._factory = channel_factory
        self._timeout = timeout
        self._stub: Any = None
        self._channel: grpc.aio.Channel | None = None

    def _get_stub(self) -> Any:
        channel = self._factory()  # the current channel (a new one after certificate rotation)
        if channel is not self._channel:
            self._channel = channel
            self._stub = national_pb2_grpc.NationalStub(channel)  # type: ignore[no-untyped-call]
        return self._stub

    async def query(
        self,
        condition: Condition,
        *,
        purpose: str,
        requester: str,
        request_id: str,
        four_info: Any = None,
        remaining: float | None = None,
    ) -> list[records_pb2.ResidentView]:
        """Records the national server holds for the condition; UNAVAILABLE when it cannot be asked within
        the caller's `remaining` seconds (capped)."""
        request = _request(condition, purpose, requester, request_id, four_info)
        response = await self._call(self._get_stub().Query, request, remaining)
        return list(response.records)

    async def query_fuhyo(
        self,
        condition: Condition,
        *,
        purpose: str,
        requester: str,
        request_id: str,
        four_info: Any = None,
        remaining: float | None = None,
    ) -> list[fuhyo_pb2.FuhyoView]:
        """附票 records the national 附票 file (附票全国サーバ) holds for the condition (never by My
        Number), as `query`."""
        request = _request(condition, purpose, requester, request_id, four_info)
        response = await self._call(self._get_stub().QueryFuhyo, request, remaining)
        return list(response.records)

    async def _call(
        self, method: Any, request: national_pb2.NationalQueryRequest, remaining: float | None
    ) -> Any:
        try:
            return await method(request, timeout=link_timeout(remaining, self._timeout))
        except grpc.RpcError as error:
            code = error.code() if hasattr(error, "code") else None
            if code == grpc.StatusCode.FAILED_PRECONDITION:
                raise DomainError(
                    ErrorKind.FAILED_PRECONDITION,
                    "the national server found too many matches",
                    "TOO_MANY_MATCHES",
                ) from None
            raise DomainError(
                ErrorKind.UNAVAILABLE,
                "the national server cannot be asked now; try again later",
                "NATIONAL_UNAVAILABLE",
            ) from None

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()


def _request(
    condition: Condition, purpose: str, requester: str, request_id: str, four_info: Any
) -> national_pb2.NationalQueryRequest:
    request = national_pb2.NationalQueryRequest(purpose=purpose, requester=requester, request_id=request_id)
    if condition.kind == "resident_code":
        request.resident_code = condition.value
    elif condition.kind == "my_number":
        request.my_number = condition.value
    else:
        request.four_info.CopyFrom(four_info)
    return request
