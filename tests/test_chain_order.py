"""The chain's order of effects (SPEC §4.4): a call's audit entry is written before its caller learns the
outcome, also when the handler refuses the call (grpc's abort sends a status at once, so the chain must
write the entry first and only then answer)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from juki.v1 import prefecture_pb2

from clients.channel import error_details, secure_channel
from server.app import server_credentials
from server.domain.errors import DomainError, ErrorKind
from server.identity.peers import PeerIdentities, RevocationList
from server.identity.pki import Pki
from server.identity.policy import Policy
from server.services.call_facts import CallFacts
from server.services.chain import AUDIT_DOWN, AccessInterceptor, purpose_methods
from server.services.status import INTERNAL_MESSAGE

SLOW_WRITE = 0.3


class SlowTrail:
    """Records outcomes; each write takes SLOW_WRITE seconds, so a status sent before it shows."""

    def __init__(self) -> None:
        self.outcomes: list[str] = []
        self.fault: Exception | None = None  # raised by the next writes (a fault, not a full disk)

    def record(self, facts: CallFacts) -> None:
        if self.fault is not None:
            raise self.fault
        time.sleep(SLOW_WRITE)
        self.outcomes.append(facts.outcome)

    def record_intent(self, facts: CallFacts) -> None:
        self.record(facts)

    def ready(self) -> bool:
        return True


async def _refuse_lookup(request: Any, context: Any) -> Any:
    raise DomainError(ErrorKind.NOT_FOUND, "no such resident", "NOT_FOUND")


SECRET = "98320567321"  # what an exception's message might carry (a resident's code)


async def _ping(request: Any, context: Any) -> Any:
    return prefecture_pb2.PingResponse()


async def _fail_provide(request: Any, context: Any) -> Any:
    known: dict[str, Any] = {}
    return known[SECRET]  # an unexpected exception (KeyError naming the value)


@pytest.fixture
def chain_server(pki_dir: Path) -> Iterator[tuple[str, SlowTrail]]:
    trail = SlowTrail()
    pki = Pki(pki_dir)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = asyncio.Event()
    port: list[int] = []

    async def serve() -> None:
        access = AccessInterceptor(
            PeerIdentities("juki.mie", RevocationList(pki.crl_path, pki.ca_cert_path)),
            Policy.load(),
            purpose_methods(prefecture_pb2.DESCRIPTOR.services_by_name["Prefecture"]),
            auditor=trail,
        )
        server = grpc.aio.server(interceptors=[access])
        handler = grpc.unary_unary_rpc_method_handler(
            _refuse_lookup,
            prefecture_pb2.LookupRequest.FromString,
            prefecture_pb2.LookupResponse.SerializeToString,
        )
        pinging = grpc.unary_unary_rpc_method_handler(
            _ping, prefecture_pb2.PingRequest.FromString, prefecture_pb2.PingResponse.SerializeToString
        )
        failing = grpc.unary_unary_rpc_method_handler(
            _fail_provide,
            prefecture_pb2.ProvideRequest.FromString,
            prefecture_pb2.ProvideResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    "juki.v1.Prefecture", {"Lookup": handler, "Provide": failing, "Ping": pinging}
                )
            ]
        )
        port.append(server.add_secure_port("127.0.0.1:0", server_credentials(pki, "prefectural-server/24")))
        await server.start()
        started.set()
        await stop.wait()
        await server.stop(None)

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10)
    yield f"127.0.0.1:{port[0]}", trail
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)
    loop.close()


def test_a_handler_refusal_is_recorded_before_the_caller_sees_it(
    chain_server: tuple[str, SlowTrail], pki_dir: Path
) -> None:
    target, trail = chain_server
    with secure_channel(Pki(pki_dir), "agency/police", target) as channel:
        lookup = channel.unary_unary(
            "/juki.v1.Prefecture/Lookup",
            request_serializer=prefecture_pb2.LookupRequest.SerializeToString,
            response_deserializer=prefecture_pb2.LookupResponse.FromString,
        )
        request = prefecture_pb2.LookupRequest(purpose="bt6-police-driving-licence", resident_code="1" * 11)
        with pytest.raises(grpc.RpcError) as info:
            lookup(request, timeout=5)
        seen = list(trail.outcomes)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert seen == ["NOT_FOUND"]


def test_an_unexpected_exception_is_internal_with_an_error_id_and_nothing_else(
    chain_server: tuple[str, SlowTrail], pki_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target, trail = chain_server
    with secure_channel(Pki(pki_dir), "agency/police", target) as channel:
        provide: Any = channel.unary_unary("/juki.v1.Prefecture/Provide")
        request = prefecture_pb2.ProvideRequest(purpose="bt6-police-driving-licence", resident_code=SECRET)
        with (
            caplog.at_level(logging.ERROR, logger="server.services.chain"),
            pytest.raises(grpc.RpcError) as info,
        ):
            provide(request.SerializeToString(), timeout=5)
    error = info.value
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == INTERNAL_MESSAGE
    _, metadata, reason = error_details(error)
    assert reason == "INTERNAL" and set(metadata) == {"error_id"}
    text = (error.details() or "") + repr(error.trailing_metadata())
    for leak in (SECRET, "KeyError", "class", "Traceback", ".py"):
        assert leak not in text
    logged = [r for r in caplog.records if getattr(r, "error_id", None) == metadata["error_id"]]
    assert len(logged) == 1 and logged[0].__dict__["error_type"] == "KeyError"
    assert SECRET not in logged[0].getMessage()
    assert trail.outcomes == ["INTERNAL"]


def test_a_fault_in_writing_the_entry_fails_the_call_closed_and_names_nothing(
    chain_server: tuple[str, SlowTrail], pki_dir: Path
) -> None:
    target, trail = chain_server
    trail.fault = RuntimeError(f"cannot write entry about {SECRET}")
    request = prefecture_pb2.LookupRequest(purpose="bt6-police-driving-licence", resident_code=SECRET)
    with secure_channel(Pki(pki_dir), "agency/police", target) as channel:
        lookup: Any = channel.unary_unary("/juki.v1.Prefecture/Lookup")
        with pytest.raises(grpc.RpcError) as info:
            lookup(request.SerializeToString(), timeout=5)
    assert (info.value.code(), info.value.details()) == AUDIT_DOWN
    text = (info.value.details() or "") + repr(info.value.trailing_metadata())
    for leak in (SECRET, "RuntimeError", "class", "Traceback"):
        assert leak not in text


def test_ping_answers_while_its_entry_cannot_be_written(
    chain_server: tuple[str, SlowTrail], pki_dir: Path
) -> None:
    """Ping and health return no record data: they answer while the trail is down (issue 14), so that
    health can say NOT_SERVING rather than fail itself."""
    target, trail = chain_server
    trail.fault = RuntimeError("the trail's disk is full")
    with secure_channel(Pki(pki_dir), "agency/police", target) as channel:
        ping: Any = channel.unary_unary("/juki.v1.Prefecture/Ping")
        assert ping(prefecture_pb2.PingRequest().SerializeToString(), timeout=5) == b""
