"""SPEC §4.2, §5.5: operators work only while registered and not revoked, within their registration; only
an admin administers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from juki.v1 import admin_pb2, admin_pb2_grpc, prefecture_pb2, records_pb2

from clients.channel import error_details, secure_channel
from server.identity.pki import Pki
from tests.conftest import Server


def admin_stub(server: Server, identity: str = "admin/admin-01") -> Any:
    channel = secure_channel(Pki(server.settings.pki_path), identity, server.settings.prefecture_target)
    server._channels.append(channel)
    return admin_pb2_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]


def lookup(stub: Any, code: str, purpose: str = "identity-check") -> Any:
    return stub.Lookup(prefecture_pb2.LookupRequest(purpose=purpose, resident_code=code), timeout=5)


def code_of(seeded_records: list[Any]) -> str:
    return str(next(r for r in seeded_records if r.state == records_pb2.RECORD_STATE_ACTIVE).resident_code)


def test_revoking_an_operator_refuses_its_next_call_on_an_open_channel(
    server: Server, seeded_records: list[Any], pki_dir: Path
) -> None:
    Pki(pki_dir).issue("operator", "op-0100", overwrite=True)
    admin = admin_stub(server)
    admin.RegisterOperator(
        admin_pb2.RegisterOperatorRequest(
            operator_id="op-0100", methods=["Prefecture.Lookup"], purposes=["identity-check"]
        ),
        timeout=5,
    )
    operator = server.stub("operator/op-0100")
    code = code_of(seeded_records)
    assert lookup(operator, code).record.resident_code == code  # channel open and working
    revoked = admin.RevokeOperator(admin_pb2.RevokeOperatorRequest(operator_id="op-0100", reason="異動"))
    assert revoked.state == admin_pb2.OPERATOR_STATE_REVOKED and revoked.revoked_by.endswith(
        "/admin/admin-01"
    )
    with pytest.raises(grpc.RpcError) as info:
        lookup(operator, code)  # same channel, next call
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert code not in (info.value.details() or "")


def test_an_unregistered_operator_is_unauthenticated(
    server: Server, seeded_records: list[Any], pki_dir: Path
) -> None:
    Pki(pki_dir).issue("operator", "op-0999", overwrite=True)
    stub = server.stub("operator/op-0999")
    with pytest.raises(grpc.RpcError) as info:
        lookup(stub, code_of(seeded_records))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as info:
        stub.Ping(prefecture_pb2.PingRequest())
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_an_operator_works_only_within_its_registration(
    server: Server, seeded_records: list[Any], pki_dir: Path
) -> None:
    Pki(pki_dir).issue("operator", "op-0101", overwrite=True)
    admin_stub(server).RegisterOperator(
        admin_pb2.RegisterOperatorRequest(
            operator_id="op-0101", methods=["Prefecture.Search"], purposes=["disclosure"]
        )
    )
    stub = server.stub("operator/op-0101")
    with pytest.raises(grpc.RpcError) as info:
        lookup(stub, code_of(seeded_records))  # Lookup not registered
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    record = seeded_records[3].four_info
    with pytest.raises(grpc.RpcError) as info:  # Search registered, but not for this purpose
        stub.Search(
            prefecture_pb2.SearchRequest(purpose="identity-check", name_kana=record.name_kana, sex=record.sex)
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    found = stub.Search(
        prefecture_pb2.SearchRequest(purpose="disclosure", name_kana=record.name_kana, sex=record.sex)
    )
    assert found.results


@pytest.mark.parametrize(
    ("methods", "purposes", "field"),
    [
        (["Prefecture.ApplyUpdate"], [], "methods[0]"),  # not a method of operators
        (["Prefecture.Lookup"], ["bt6-police-driving-licence"], "purposes[0]"),  # an agency's purpose
        ([], ["identity-check"], "methods"),
        (["Nonsense"], [], "methods[0]"),
    ],
)
def test_a_registration_beyond_the_policy_is_refused(
    server: Server, methods: list[str], purposes: list[str], field: str
) -> None:
    request = admin_pb2.RegisterOperatorRequest(operator_id="op-0102", methods=methods, purposes=purposes)
    with pytest.raises(grpc.RpcError) as info:
        admin_stub(server).RegisterOperator(request, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in [f for f, _ in error_details(info.value)[0]]


@pytest.mark.parametrize(
    "identity", ["operator/op-0001", "agency/police", "auditor/auditor-01", "monitor/monitor-01"]
)
def test_only_an_admin_administers(server: Server, identity: str) -> None:
    request = admin_pb2.RegisterOperatorRequest(
        operator_id="op-0001", methods=["Prefecture.Lookup"], purposes=["identity-check"]
    )
    with pytest.raises(grpc.RpcError) as info:
        admin_stub(server, identity).RegisterOperator(request, timeout=5)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError):
        admin_stub(server, identity).ListOperators(admin_pb2.ListOperatorsRequest(), timeout=5)


def test_a_registration_may_name_methods_by_their_full_path(
    server: Server, seeded_records: list[Any], pki_dir: Path
) -> None:
    Pki(pki_dir).issue("operator", "op-0104", overwrite=True)
    entry = admin_stub(server).RegisterOperator(
        admin_pb2.RegisterOperatorRequest(
            operator_id="op-0104", methods=["/juki.v1.Prefecture/Lookup"], purposes=["identity-check"]
        )
    )
    assert list(entry.methods) == ["Prefecture.Lookup"]
    code = code_of(seeded_records)
    assert lookup(server.stub("operator/op-0104"), code).record.resident_code == code


def test_the_inventory_lists_revoked_operators_too(server: Server, pki_dir: Path) -> None:
    admin = admin_stub(server)
    admin.RegisterOperator(
        admin_pb2.RegisterOperatorRequest(
            operator_id="op-0103", methods=["Prefecture.Lookup"], purposes=["identity-check"]
        )
    )
    admin.RevokeOperator(admin_pb2.RevokeOperatorRequest(operator_id="op-0103", reason="退職"))
    inventory = {e.operator_id: e for e in admin.ListOperators(admin_pb2.ListOperatorsRequest()).operators}
    assert inventory["op-0103"].state == admin_pb2.OPERATOR_STATE_REVOKED
    assert inventory["op-0001"].state == admin_pb2.OPERATOR_STATE_ACTIVE
    with pytest.raises(grpc.RpcError) as info:
        admin.RevokeOperator(admin_pb2.RevokeOperatorRequest(operator_id="op-nobody"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
