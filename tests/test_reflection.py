"""SPEC §5: server reflection over mTLS, both `grpc.reflection.v1` (newer grpcurl asks it first) and
`v1alpha`, granted by the policy like every other method (refusals are in test_mtls_identity)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from clients.channel import secure_channel
from server.identity.pki import Pki
from tests.conftest import Server


def ask(server: Server, version: str, request: reflection_pb2.ServerReflectionRequest) -> Any:
    with secure_channel(
        Pki(server.settings.pki_path), "monitor/monitor-01", server.settings.prefecture_target
    ) as channel:
        call = channel.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        (reply,) = list(call(iter([request]), timeout=5))
    return reply


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection_lists_every_service(server: Server, version: str) -> None:
    reply = ask(server, version, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in reply.list_services_response.service}
    assert {
        "juki.v1.Prefecture",
        "juki.v1.Admin",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
@pytest.mark.parametrize(
    ("symbol", "file"),
    [
        ("juki.v1.Prefecture", "juki/v1/prefecture.proto"),
        ("grpc.reflection.v1.ServerReflection", "grpc/reflection/v1/reflection.proto"),
    ],
)
def test_reflection_describes_services(server: Server, version: str, symbol: str, file: str) -> None:
    reply = ask(server, version, reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol))
    assert not reply.HasField("error_response"), reply.error_response
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in reply.file_descriptor_response.file_descriptor_proto
    ]
    assert file in {f.name for f in files}


def test_unknown_reflection_version_is_refused(server: Server) -> None:
    with pytest.raises(grpc.RpcError) as info:
        ask(server, "v2", reflection_pb2.ServerReflectionRequest(list_services=""))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
