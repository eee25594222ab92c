"""SPEC §4.2 and §3.3: default deny by role, method and purpose; only the 8 items leave the server."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from juki.v1 import prefecture_pb2, records_pb2

from tests.conftest import Server

EIGHT_ITEMS = {
    "resident_code",
    "name_kanji",
    "name_kana",
    "birth_date",
    "sex",
    "address",
    "my_number",
    "change_reason",
    "change_date",
    "state",
}


def active(records: list[Any]) -> Any:
    return next(r for r in records if r.state == records_pb2.RECORD_STATE_ACTIVE)


def lookup(server: Server, identity: str, purpose: str, **key: str) -> Any:
    return server.stub(identity).Lookup(prefecture_pb2.LookupRequest(purpose=purpose, **key), timeout=5)


def refused(server: Server, identity: str, method: str, request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        getattr(server.stub(identity), method)(request, timeout=5)
    return info.value


def assert_view_matches(view: Any, record: Any, *, my_number: str) -> None:
    assert view.resident_code == record.resident_code
    assert view.name_kanji == record.four_info.name_kanji
    assert view.name_kana == record.four_info.name_kana
    assert view.birth_date == record.four_info.birth_date
    assert view.sex == record.four_info.sex
    assert view.address == record.four_info.address
    assert view.change_reason == record.change_reason
    assert view.change_date == record.change_date
    assert view.my_number == my_number


def test_view_carries_only_the_eight_items() -> None:
    fields = {f.name for f in records_pb2.ResidentView.DESCRIPTOR.fields}
    assert fields == EIGHT_ITEMS


@pytest.mark.parametrize(
    ("identity", "purpose"),
    [("agency/police", "bt6-police-driving-licence"), ("department/tax", "bt5-tax-vehicle")],
)
def test_my_number_purpose_gets_the_eight_items_with_my_number(
    server: Server, seeded_records: list[Any], identity: str, purpose: str
) -> None:
    record = active(seeded_records)
    view = lookup(server, identity, purpose, resident_code=record.resident_code).record
    assert_view_matches(view, record, my_number=record.my_number)


@pytest.mark.parametrize(
    ("identity", "purpose"),
    [
        ("agency/education", "bt6-education-teacher-licence"),
        ("department/health", "bt5-health-statistics"),
        ("operator/op-0001", "identity-check"),
    ],
)
def test_purpose_without_my_number_gets_no_my_number(
    server: Server, seeded_records: list[Any], identity: str, purpose: str
) -> None:
    record = active(seeded_records)
    view = lookup(server, identity, purpose, resident_code=record.resident_code).record
    assert_view_matches(view, record, my_number="")


def test_lookup_by_my_number_finds_the_resident(server: Server, seeded_records: list[Any]) -> None:
    record = seeded_records[17]
    view = lookup(server, "agency/police", "bt6-police-driving-licence", my_number=record.my_number).record
    assert view.resident_code == record.resident_code
    assert view.my_number == record.my_number


def test_lookup_by_my_number_needs_a_my_number_purpose(server: Server, seeded_records: list[Any]) -> None:
    request = prefecture_pb2.LookupRequest(
        purpose="bt6-education-teacher-licence", my_number=seeded_records[17].my_number
    )
    error = refused(server, "agency/education", "Lookup", request)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


def test_operator_search_never_returns_my_number(server: Server, seeded_records: list[Any]) -> None:
    record = active(seeded_records)
    response = server.stub("operator/op-0001").Search(
        prefecture_pb2.SearchRequest(
            purpose="identity-check",
            name_kana=record.four_info.name_kana,
            birth_date=record.four_info.birth_date,
        ),
        timeout=5,
    )
    assert record.resident_code in [v.resident_code for v in response.results]
    assert all(v.my_number == "" for v in response.results)


def test_unknown_lookup_is_not_found(server: Server) -> None:
    request = prefecture_pb2.LookupRequest(purpose="identity-check", resident_code="00000000000")
    assert refused(server, "operator/op-0001", "Lookup", request).code() == grpc.StatusCode.NOT_FOUND


REFUSALS = [
    # (who, method, purpose): a role not granted the method, or a purpose not granted to the caller
    ("monitor/monitor-01", "Lookup", "identity-check"),
    ("auditor/auditor-01", "Lookup", "identity-check"),
    ("admin/admin-01", "Lookup", "identity-check"),
    ("municipal-cs/242012", "Lookup", "identity-check"),
    ("fuhyo-server/24", "Lookup", "bt6-police-driving-licence"),
    ("national/jlis", "Lookup", "identity-check"),
    ("agency/police", "Lookup", ""),  # an agency without a purpose
    ("agency/police", "Lookup", "bt5-tax-vehicle"),  # another body's purpose
    ("agency/education", "Lookup", "bt6-police-driving-licence"),
    ("department/tax", "Lookup", "identity-check"),
    ("operator/op-0001", "Lookup", "bt6-police-driving-licence"),
    ("agency/police", "Search", "bt6-police-driving-licence"),
    ("monitor/monitor-01", "Search", "identity-check"),
]


@pytest.mark.parametrize(("identity", "method", "purpose"), REFUSALS)
def test_refused_caller_gets_permission_denied_and_no_data(
    server: Server, seeded_records: list[Any], identity: str, method: str, purpose: str
) -> None:
    record = active(seeded_records)
    if method == "Lookup":
        request: Any = prefecture_pb2.LookupRequest(purpose=purpose, resident_code=record.resident_code)
    else:
        request = prefecture_pb2.SearchRequest(
            purpose=purpose, name_kana=record.four_info.name_kana, birth_date=record.four_info.birth_date
        )
    error = refused(server, identity, method, request)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert_carries_no_record_data(error, record)


def assert_carries_no_record_data(error: grpc.RpcError, record: Any) -> None:
    trailing: Any = error.trailing_metadata()
    text = repr(error.details()) + repr(trailing)
    raw = b"".join(value for _, value in trailing or () if isinstance(value, bytes))
    for value in (
        record.resident_code,
        record.my_number,
        record.four_info.name_kanji,
        record.four_info.address,
    ):
        assert value not in text
        assert value.encode() not in raw


def test_updates_are_refused_to_every_role_but_municipal_cs(server: Server) -> None:
    notice = prefecture_pb2.ChangeNotice(municipality_code="242012", sequence=1)
    for identity in ("operator/op-0001", "agency/police", "monitor/monitor-01", "national/jlis"):
        error = refused(server, identity, "ApplyUpdate", prefecture_pb2.ApplyUpdateRequest(notice=notice))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, identity


def test_every_role_may_ping(server: Server) -> None:
    for identity in ("monitor/monitor-01", "auditor/auditor-01", "municipal-cs/245623", "fuhyo-server/24"):
        server.stub(identity).Ping(prefecture_pb2.PingRequest(), timeout=5)
