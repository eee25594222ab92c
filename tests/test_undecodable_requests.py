"""Identity and authorization come before a byte of the request is decoded (issue 11, hole 10).

Raw bytes over real mTLS through a generic channel call (no serializer): a caller that may not call the
method is refused whatever it sends; an allowed caller's undecodable bytes are INVALID_ARGUMENT with a
BadRequest violation, for every message of a client or bidi stream too; every such call leaves one audit
entry; no class name, path or traceback reaches the caller.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from juki.v1 import prefecture_pb2, records_pb2

from clients.channel import error_details, secure_channel
from server.audit.query import query
from server.identity.pki import Pki
from tests.conftest import Server
from tests.notices import Municipality, fresh_resident

P = prefecture_pb2
R = records_pb2
GARBAGE = [b"\xff", b"\x0a\x7f", b"\x08", b"\x1a\x05ab"]  # bad tag, truncated: no request decodes
LEAKS = ("DecodeError", "class", "google.protobuf", "Traceback", "Unexpected", ".py", "Error parsing")


def entries(server: Server) -> list[dict[str, Any]]:
    return list(query(server.settings.path(server.settings.audit_dir)))


def channel(server: Server, identity: str) -> grpc.Channel:
    made = secure_channel(Pki(server.settings.pki_path), identity, server.settings.prefecture_target)
    server._channels.append(made)
    return made


def assert_tells_nothing(error: grpc.RpcError) -> None:
    trailing: Any = error.trailing_metadata()
    text = (error.details() or "") + repr(trailing)
    for leak in LEAKS:
        assert leak not in text, leak


def raw_unary(server: Server, identity: str, method: str, payload: bytes) -> grpc.RpcError:
    call: Any = channel(server, identity).unary_unary(f"/juki.v1.Prefecture/{method}")
    with pytest.raises(grpc.RpcError) as info:
        call(payload, timeout=5)
    return info.value


@pytest.mark.parametrize("payload", GARBAGE)
@pytest.mark.parametrize(
    ("identity", "method"),
    [
        ("monitor/monitor-01", "Lookup"),
        ("monitor/monitor-01", "ApplyUpdate"),
        ("auditor/auditor-01", "Provide"),
    ],
)
def test_a_caller_without_the_method_is_refused_whatever_bytes_it_sends(
    server: Server, identity: str, method: str, payload: bytes
) -> None:
    before = len(entries(server))
    error = raw_unary(server, identity, method, payload)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert_tells_nothing(error)
    after = entries(server)
    assert len(after) == before + 1
    assert after[-1]["outcome"] == "PERMISSION_DENIED" and after[-1]["caller"].endswith(identity)


def test_an_unregistered_operator_is_unauthenticated_whatever_bytes_it_sends(
    server: Server, pki_dir: Path
) -> None:
    Pki(pki_dir).issue("operator", "op-raw", overwrite=True)
    before = len(entries(server))
    error = raw_unary(server, "operator/op-raw", "Lookup", GARBAGE[0])
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert_tells_nothing(error)
    assert entries(server)[before:][-1]["outcome"] == "UNAUTHENTICATED"


@pytest.mark.parametrize("payload", GARBAGE)
@pytest.mark.parametrize(
    ("identity", "method"),
    [("agency/police", "Lookup"), ("municipal-cs/242012", "ApplyUpdate"), ("monitor/monitor-01", "Ping")],
)
def test_undecodable_bytes_of_an_allowed_caller_are_invalid_argument_and_audited(
    server: Server, identity: str, method: str, payload: bytes
) -> None:
    before = len(entries(server))
    error = raw_unary(server, identity, method, payload)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert_tells_nothing(error)
    violations, _, reason = error_details(error)
    assert [f for f, _ in violations] == ["request"] and reason == "UNDECODABLE"
    after = entries(server)
    assert len(after) == before + 1
    assert after[-1]["outcome"] == "INVALID_ARGUMENT" and after[-1]["method"].endswith(f"/{method}")


def test_well_formed_bytes_still_work(server: Server) -> None:
    call: Any = channel(server, "monitor/monitor-01").unary_unary("/juki.v1.Prefecture/Ping")
    assert P.PingResponse.FromString(call(P.PingRequest().SerializeToString(), timeout=5)) is not None


def test_an_undecodable_message_of_a_client_stream_is_invalid_argument_naming_its_index(
    server: Server,
) -> None:
    code, number = fresh_resident()
    birth = Municipality("245615").notice(  # 御浜町: no other test sends its notices
        code, R.CHANGE_REASON_SHUSSEI, my_number=number, birth_date="2024-05-01"
    )
    call: Any = channel(server, "municipal-cs/245615").stream_unary("/juki.v1.Prefecture/ApplyUpdates")
    before = len(entries(server))
    with pytest.raises(grpc.RpcError) as info:
        call(iter([P.ApplyUpdateRequest(notice=birth).SerializeToString(), GARBAGE[1]]), timeout=5)
    error = info.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert_tells_nothing(error)
    assert [f for f, _ in error_details(error)[0]] == ["requests[1]"]
    assert entries(server)[before:][-1]["outcome"] == "INVALID_ARGUMENT"
    reader = server.open_reader()
    try:
        with reader.reader() as tx:
            assert tx.get(code) is not None  # the good notice before the bad message is applied, whole
    finally:
        reader.env.close()


def test_a_monitor_opening_a_client_stream_is_refused_before_anything_is_read(server: Server) -> None:
    call: Any = channel(server, "monitor/monitor-01").stream_unary("/juki.v1.Prefecture/ApplyUpdates")
    with pytest.raises(grpc.RpcError) as info:
        call(iter([GARBAGE[0], GARBAGE[2]]), timeout=5)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert_tells_nothing(info.value)


@pytest.mark.parametrize("bad_index", [0, 1])
def test_an_undecodable_message_of_a_bidi_stream_is_invalid_argument_naming_its_index(
    server: Server, seeded_records: list[Any], bad_index: int
) -> None:
    first = P.BatchProvideRequest(
        purpose="bt6-police-driving-licence",
        declared_count=2,
        condition_id="c-1",
        resident_code=seeded_records[0].resident_code,
    ).SerializeToString()
    messages = [first, GARBAGE[3]] if bad_index == 1 else [GARBAGE[3], first]
    call: Any = channel(server, "agency/police").stream_stream("/juki.v1.Prefecture/BatchProvide")
    before = len(entries(server))
    responses = call(iter(messages), timeout=5)
    received = []
    with pytest.raises(grpc.RpcError) as info:
        for response in responses:
            received.append(P.BatchProvideResult.FromString(response))
    error = info.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert_tells_nothing(error)
    assert [f for f, _ in error_details(error)[0]] == [f"requests[{bad_index}]"]
    assert len(received) == bad_index  # the good condition before the bad message was answered
    assert entries(server)[before:][-1]["outcome"] == "INVALID_ARGUMENT"
