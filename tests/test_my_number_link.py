"""SPEC §5.3, the restricted link: Prefecture.FetchMyNumber answers one My Number, to the 附票 server only,
for a purpose that allows My Number, for a person removed by 転出 (国外転出者); every answer and refusal is
recorded. (Requesters and the refusal of other persons: tests/test_trust_between_servers.py.)"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from juki.v1 import prefecture_pb2, records_pb2

from server.audit.query import query
from tests.conftest import Server

FUHYO = "fuhyo-server/24"
POLICE = "spiffe://juki.mie/agency/police"


def fetch(
    server: Server, identity: str, code: str, purpose: str = "bt6-police-driving-licence", **extra: Any
) -> Any:
    request = prefecture_pb2.FetchMyNumberRequest(
        resident_code=code,
        purpose=purpose,
        requester=extra.pop("requester", POLICE),
        request_id="req-1",
        **extra,
    )
    return server.stub(identity).FetchMyNumber(request, timeout=5)


def moved_out(seeded_records: list[Any]) -> Any:
    return next(r for r in seeded_records if r.change_reason == records_pb2.CHANGE_REASON_TENSHUTSU)


def test_the_fuhyo_server_gets_the_my_number_and_nothing_else(
    server: Server, seeded_records: list[Any]
) -> None:
    person = moved_out(seeded_records)
    answer = fetch(server, FUHYO, person.resident_code)
    assert answer.my_number == person.my_number
    assert [f.name for f, _ in answer.ListFields()] == ["my_number"]


def test_a_person_removed_from_the_register_still_has_a_my_number(
    server: Server, seeded_records: list[Any]
) -> None:
    abroad = moved_out(seeded_records)
    assert abroad.deleted_flag
    assert fetch(server, FUHYO, abroad.resident_code).my_number == abroad.my_number


@pytest.mark.parametrize(
    "identity",
    ["agency/police", "department/tax", "operator/op-0001", "prefectural-server/24", "national/jlis",
     "municipal-cs/242012", "monitor/monitor-01", "admin/admin-01", "auditor/auditor-01"],
)  # fmt: skip
def test_any_other_certificate_is_refused_with_no_digits(
    server: Server, seeded_records: list[Any], identity: str
) -> None:
    person = next(r for r in seeded_records if not r.deleted_flag)
    with pytest.raises(grpc.RpcError) as info:
        fetch(server, identity, person.resident_code)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    text = (info.value.details() or "") + repr(info.value.trailing_metadata())
    assert person.my_number not in text and person.my_number[:6] not in text


@pytest.mark.parametrize(
    "purpose", ["bt6-education-teacher-licence", "identity-check", "bt5-health-statistics"]
)
def test_a_purpose_without_my_number_is_refused(
    server: Server, seeded_records: list[Any], purpose: str
) -> None:
    person = next(r for r in seeded_records if not r.deleted_flag)
    with pytest.raises(grpc.RpcError) as info:
        fetch(server, FUHYO, person.resident_code, purpose=purpose)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_code_not_held_and_a_bad_requester(server: Server, seeded_records: list[Any]) -> None:
    with pytest.raises(grpc.RpcError) as info:
        fetch(server, FUHYO, "00000000000")
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED  # as for anyone else not abroad
    person = moved_out(seeded_records)
    for requester in ("", "agency/police", "spiffe://juki.mie/operator/op-0001"):
        with pytest.raises(grpc.RpcError) as info:
            fetch(server, FUHYO, person.resident_code, requester=requester)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_every_answer_and_refusal_is_recorded(server: Server, seeded_records: list[Any]) -> None:
    person = moved_out(seeded_records)
    directory = server.settings.path(server.settings.audit_dir)
    before = len(list(query(directory, method="/juki.v1.Prefecture/FetchMyNumber")))
    fetch(server, FUHYO, person.resident_code)
    with pytest.raises(grpc.RpcError):
        fetch(server, "agency/police", person.resident_code)
    entries = list(query(directory, method="/juki.v1.Prefecture/FetchMyNumber"))[before:]
    assert [(e["role"], e["outcome"]) for e in entries] == [
        ("fuhyo-server", "OK"),
        ("agency", "PERMISSION_DENIED"),
    ]
    assert entries[0]["items"] == ["my_number"] and len(entries[0]["subjects"]) == 1
