"""SPEC §4.2, §5.5: operators work only while registered and not revoked, within their registration; only
an admin administers; one operator registry governs both record servers (`juki admin` changes every copy
before it returns, and says which server did not confirm)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from juki.v1 import admin_pb2, admin_pb2_grpc, fuhyo_pb2, prefecture_pb2, records_pb2

from clients.channel import error_details, secure_channel
from clients.fuhyo_cmds import fuhyo_stub
from server.identity.pki import Pki
from tests.conftest import Server, free_port, make_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path) -> Iterator[Server]:
    """Both record servers (prefectural and 附票), each with its copy of the operator registry."""
    srv = make_server(tmp_path_factory.mktemp("operators"), pki_dir, with_fuhyo=True)
    srv.start()
    yield srv
    srv.stop_all()


def juki_admin(server: Server, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`juki admin …` as the administrator runs it, against the servers of the test's settings."""
    return subprocess.run(
        [sys.executable, "-m", "clients", "--config", str(server.config), "admin", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("JUKI_")}, **env},
    )


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


@pytest.mark.parametrize("operator_id", ["", "x" * 65, "op/0001", "op 1"])
def test_a_revocation_of_a_malformed_operator_id_is_invalid_argument(
    server: Server, operator_id: str
) -> None:
    request = admin_pb2.RevokeOperatorRequest(operator_id=operator_id)
    with pytest.raises(grpc.RpcError) as info:
        admin_stub(server).RevokeOperator(request, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in error_details(info.value)[0]] == ["operator_id"]


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


def fuhyo_lookup(server: Server, stub: Any, code: str) -> Any:
    return stub.Lookup(fuhyo_pb2.FuhyoLookupRequest(purpose="identity-check", resident_code=code), timeout=5)


def test_revoke_operator_reaches_the_fuhyo_server_and_its_open_channels(
    server: Server, seeded_records: list[Any], pki_dir: Path
) -> None:
    Pki(pki_dir).issue("operator", "op-0200", overwrite=True)
    registered = juki_admin(
        server, "register-operator", "op-0200", "--method", "Prefecture.Lookup", "--method", "Fuhyo.Lookup",
        "--purpose", "identity-check",
    )  # fmt: skip
    assert registered.returncode == 0, registered.stderr
    assert "confirmed by: prefecture" in registered.stderr and "fuhyo (" in registered.stderr
    code = code_of(seeded_records)
    on_fuhyo = fuhyo_stub(server.settings, "operator/op-0200")  # one channel, kept open
    on_prefecture = server.stub("operator/op-0200")
    assert fuhyo_lookup(server, on_fuhyo, code).record.resident_code == code
    assert lookup(on_prefecture, code).record.resident_code == code

    revoked = juki_admin(server, "revoke-operator", "op-0200", "--reason", "異動")
    assert revoked.returncode == 0, revoked.stderr
    assert f"fuhyo ({server.settings.fuhyo_target})" in revoked.stderr
    calls: list[Callable[[], Any]] = [
        lambda: fuhyo_lookup(server, on_fuhyo, code),
        lambda: lookup(on_prefecture, code),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as info:
            call()  # the same open channels, next call
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert code not in (info.value.details() or "")


def test_a_record_server_that_does_not_confirm_is_named_and_the_command_fails(
    server: Server, pki_dir: Path
) -> None:
    Pki(pki_dir).issue("operator", "op-0201", overwrite=True)
    down = str(free_port())  # nothing listens there: the 附票 server cannot confirm
    done = juki_admin(
        server, "register-operator", "op-0201", "--method", "Fuhyo.Lookup", "--purpose", "identity-check",
        JUKI_FUHYO_PORT=down,
    )  # fmt: skip
    assert done.returncode == 1
    assert f"fuhyo (127.0.0.1:{down}) did not confirm" in done.stderr
    assert "confirmed by: prefecture" in done.stderr
    inventory = juki_admin(server, "inventory")  # the copies now differ: the inventory says where
    assert inventory.returncode == 1
    assert "fuhyo" in inventory.stderr and "op-0201" in inventory.stderr
    again = juki_admin(
        server, "register-operator", "op-0201", "--method", "Fuhyo.Lookup", "--purpose", "identity-check"
    )
    assert again.returncode == 0, again.stderr
    assert "op-0201" not in juki_admin(server, "inventory").stderr  # (other tests register on one only)
