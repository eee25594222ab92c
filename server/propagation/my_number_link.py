"""The 附票 server's side of the restricted link (SPEC §5.3): Prefecture.FetchMyNumber over one mTLS channel
kept open and reused, presenting the fuhyo-server certificate. A fetch gets the remaining deadline of the
call it serves, capped (`server.propagation.national_client.link_timeout`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from juki.v1 import prefecture_pb2, prefecture_pb2_grpc

from server.domain.errors import DomainError, ErrorKind
from server.propagation.national_client import link_timeout


class MyNumberLink:
    def __init__(self, channel_factory: Callable[[], grpc.aio.Channel], *, timeout: float = 30.0) -> None:
        self._factory = channel_factory
        self._timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None

    async def fetch(
        self,
        resident_code: str,
        *,
        purpose: str,
        requester: str,
        request_id: str,
        remaining: float | None = None,
    ) -> str:
        """One person's My Number; DomainError (UNAVAILABLE, PERMISSION_DENIED, NOT_FOUND) otherwise."""
        channel = self._factory()  # the current channel (a new one after certificate rotation)
        if channel is not self._channel:
            self._channel = channel
            self._stub = prefecture_pb2_grpc.PrefectureStub(channel)  # type: ignore[no-untyped-call]
        request = prefecture_pb2.FetchMyNumberRequest(
            resident_code=resident_code, purpose=purpose, requester=requester, request_id=request_id
        )
        try:
            response = await self._stub.FetchMyNumber(request, timeout=link_timeout(remaining, self._timeout))
        except grpc.RpcError as error:
            code = error.code() if hasattr(error, "code") else None
            if code == grpc.StatusCode.NOT_FOUND:
                raise DomainError(
                    ErrorKind.NOT_FOUND,
                    "the prefectural server holds no My Number for this person",
                    "NO_MY_NUMBER",
                ) from None
            if code == grpc.StatusCode.PERMISSION_DENIED:
                raise DomainError(
                    ErrorKind.PERMISSION_DENIED,
                    "the prefectural server refused the My Number",
                    "LINK_REFUSED",
                ) from None
            raise DomainError(
                ErrorKind.UNAVAILABLE, "the prefectural server cannot be asked now", "PREFECTURE_UNAVAILABLE"
            ) from None
        return str(response.my_number)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
