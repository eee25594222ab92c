"""Refusals cannot fall through to the handler by construction: every step of the chain refuses by raising,
and each wrapper's handler call sits after the steps in the same block, so even a `context.abort` that
returned (grpc's raises) would not let the handler run. Driven in-process, with a context whose abort
returns: the one thing a real grpc server cannot be made to do."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from juki.v1 import prefecture_pb2

from server.identity.peers import PeerIdentities, RevocationList
from server.identity.pki import Pki
from server.identity.policy import Policy
from server.services.call_facts import CallFacts
from server.services.chain import AccessInterceptor, purpose_methods


class ReturningContext:
    """A servicer context whose abort records the status and returns instead of raising."""

    def __init__(self, auth: dict[str, list[bytes]]) -> None:
        self.auth = auth
        self.aborted: list[grpc.StatusCode] = []

    def auth_context(self) -> dict[str, list[bytes]]:
        return self.auth

    async def abort(self, code: grpc.StatusCode, message: str, metadata: Any = ()) -> None:
        self.aborted.append(code)

    def cancelled(self) -> bool:
        return False

    def code(self) -> Any:
        return None


class Trail:
    def __init__(self) -> None:
        self.outcomes: list[str] = []
        self.written: list[CallFacts] = []

    def record(self, facts: CallFacts) -> None:
        self.outcomes.append(facts.outcome)
        self.written.append(facts)

    def record_intent(self, facts: CallFacts) -> None:
        self.outcomes.append("INTENT")

    def ready(self) -> bool:
        return True


def _gate(pki_dir: Path, trail: Trail) -> AccessInterceptor:
    pki = Pki(pki_dir)
    return AccessInterceptor(
        PeerIdentities("juki.mie", RevocationList(pki.crl_path, pki.ca_cert_path)),
        Policy.load(),
        purpose_methods(prefecture_pb2.DESCRIPTOR.services_by_name["Prefecture"]),
        auditor=trail,
    )


def _handlers(ran: list[str]) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    async def lookup(request: Any, context: Any) -> Any:
        ran.append("Lookup")
        return prefecture_pb2.LookupResponse()

    async def batch(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        ran.append("BatchProvide")
        yield prefecture_pb2.BatchProvideResult()

    async def apply(requests: AsyncIterator[Any], context: Any) -> Any:
        ran.append("ApplyUpdates")
        return prefecture_pb2.ApplyUpdatesResponse()

    return {
        "/juki.v1.Prefecture/Lookup": grpc.unary_unary_rpc_method_handler(
            lookup, prefecture_pb2.LookupRequest.FromString, prefecture_pb2.LookupResponse.SerializeToString
        ),
        "/juki.v1.Prefecture/BatchProvide": grpc.stream_stream_rpc_method_handler(
            batch, prefecture_pb2.BatchProvideRequest.FromString
        ),
        "/juki.v1.Prefecture/ApplyUpdates": grpc.stream_unary_rpc_method_handler(
            apply, prefecture_pb2.ApplyUpdateRequest.FromString
        ),
    }


def _wrapped(gate: AccessInterceptor, name: str, handler: grpc.RpcMethodHandler[Any, Any]) -> Any:
    async def continuation(details: Any) -> grpc.RpcMethodHandler[Any, Any]:
        return handler

    details: Any = type("Details", (), {"method": name, "invocation_metadata": ()})()
    return asyncio.run(gate.intercept_service(continuation, details))


async def _requests() -> AsyncIterator[bytes]:
    yield prefecture_pb2.BatchProvideRequest(purpose="bt6-police-driving-licence").SerializeToString()


async def _drive(wrapped: Any, context: ReturningContext) -> None:
    if wrapped.unary_unary:
        await wrapped.unary_unary(prefecture_pb2.LookupRequest().SerializeToString(), context)
    elif wrapped.stream_unary:
        await wrapped.stream_unary(_requests(), context)
    else:
        async for _ in wrapped.stream_stream(_requests(), context):
            pass


@pytest.mark.parametrize(
    "name",
    ["/juki.v1.Prefecture/Lookup", "/juki.v1.Prefecture/BatchProvide", "/juki.v1.Prefecture/ApplyUpdates"],
)
def test_an_unidentified_caller_never_reaches_the_handler_even_if_abort_returned(
    pki_dir: Path, name: str
) -> None:
    ran: list[str] = []
    trail = Trail()
    gate = _gate(pki_dir, trail)
    wrapped = _wrapped(gate, name, _handlers(ran)[name])
    context = ReturningContext({})  # no client certificate
    with pytest.raises(AssertionError):  # the wrapper ends the call itself when abort does not
        asyncio.run(_drive(wrapped, context))
    assert ran == []
    assert context.aborted == [grpc.StatusCode.UNAUTHENTICATED]
    assert trail.outcomes == ["UNAUTHENTICATED"]


def test_a_caller_not_granted_the_method_never_reaches_the_handler_even_if_abort_returned(
    pki_dir: Path,
) -> None:
    ran: list[str] = []
    trail = Trail()
    gate = _gate(pki_dir, trail)
    name = "/juki.v1.Prefecture/Lookup"
    wrapped = _wrapped(gate, name, _handlers(ran)[name])
    cert, _ = Pki(pki_dir).cert_paths("municipal-cs", "242012")  # 市町村CS: no Lookup (SPEC §5.2)
    pem = cert.read_bytes()
    context = ReturningContext({"x509_pem_cert": [pem]})
    with pytest.raises(AssertionError):
        asyncio.run(_drive(wrapped, context))
    assert ran == []
    assert context.aborted == [grpc.StatusCode.PERMISSION_DENIED]


def test_a_call_to_an_unknown_method_records_what_the_refused_certificate_claimed(pki_dir: Path) -> None:
    """An identity this deployment does not know, calling a method nobody serves: UNAUTHENTICATED, and the
    entry names the identity and serial the certificate claimed (never authenticated)."""
    pki = Pki(pki_dir)
    trail = Trail()
    gate = AccessInterceptor(
        PeerIdentities(
            "juki.mie", RevocationList(pki.crl_path, pki.ca_cert_path), known=lambda spiffe: False
        ),
        Policy.load(),
        frozenset(),
        auditor=trail,
    )

    async def continuation(details: Any) -> None:
        return None

    details: Any = type(
        "Details", (), {"method": "/juki.v1.Prefecture/NoSuchMethod", "invocation_metadata": ()}
    )()
    wrapped = asyncio.run(gate.intercept_service(continuation, details))
    cert, _ = pki.cert_paths("agency", "police")
    context = ReturningContext({"x509_pem_cert": [cert.read_bytes()]})
    with pytest.raises(AssertionError):
        asyncio.run(wrapped.unary_unary(b"", context))
    assert context.aborted == [grpc.StatusCode.UNAUTHENTICATED]
    assert [(f.method, f.outcome, f.caller) for f in trail.written] == [
        ("/juki.v1.Prefecture/NoSuchMethod", "UNAUTHENTICATED", None)
    ]
    assert (
        trail.written[0].claimed is not None
        and trail.written[0].claimed.uri == "spiffe://juki.mie/agency/police"
    )
    assert trail.written[0].serial is not None
