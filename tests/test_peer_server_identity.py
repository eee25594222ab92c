"""SPEC §4.1/§4.2: a server calling a peer server checks who answers. Every server-to-server channel (the
relay and forwarding to J-LIS, the restricted link to the prefectural server, checkpoints to a witness)
expects one server role: a peer presenting a certificate of another server role (a compromised 附票 server
posing as J-LIS, say) fails the handshake, and nothing — no change, no My Number — is sent to it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
from juki.v1 import national_pb2_grpc, prefecture_pb2

from server.identity.credentials import PeerChannel, ServerTls
from server.identity.pki import Pki


async def _serve_as(pki: Pki, identity: str, calls: list[str]) -> tuple[grpc.aio.Server, str]:
    """A server presenting `identity`'s certificate that answers National.Ping and records each call."""

    async def ping(request: bytes, context: Any) -> bytes:
        calls.append("Ping")
        return prefecture_pb2.PingResponse().SerializeToString()

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "juki.v1.National", {"Ping": grpc.unary_unary_rpc_method_handler(ping)}
            )
        ]
    )
    port = server.add_secure_port("127.0.0.1:0", ServerTls(pki, identity).credentials())
    await server.start()
    return server, f"127.0.0.1:{port}"


async def _ping_as_relay(pki: Pki, target: str) -> grpc.StatusCode:
    peer = PeerChannel(pki, "prefectural-server/24", target, peer="national")
    try:
        stub: Any = national_pb2_grpc.NationalStub(peer())  # type: ignore[no-untyped-call]
        await stub.Ping(prefecture_pb2.PingRequest(), timeout=5)
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        return code
    finally:
        await peer.close()


@pytest.mark.parametrize(
    ("answering", "expected"),
    [
        ("national/jlis", grpc.StatusCode.OK),
        ("fuhyo-server/24", grpc.StatusCode.UNAVAILABLE),
        ("prefectural-server/24", grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_only_the_expected_server_role_is_spoken_to(
    pki_dir: Path, answering: str, expected: grpc.StatusCode
) -> None:
    pki = Pki(pki_dir)
    calls: list[str] = []

    async def scenario() -> grpc.StatusCode:
        server, target = await _serve_as(pki, answering, calls)
        try:
            return await _ping_as_relay(pki, target)
        finally:
            await server.stop(None)

    assert asyncio.run(scenario()) == expected
    assert calls == (["Ping"] if expected == grpc.StatusCode.OK else []), "an impostor must receive nothing"
