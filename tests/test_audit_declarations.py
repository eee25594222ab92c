"""What each method's audit entry takes from its messages is declared per method (server.services.audited):
every served method has a declaration, every field a declaration reads exists in the method's messages,
and the readers fill the entry as the method's messages say."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, MethodDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from juki.v1 import admin_pb2, fuhyo_pb2, national_pb2, prefecture_pb2, records_pb2, witness_pb2

from server.services.audited import AUDITED, audited_for
from server.services.call_facts import INVALID, CallFacts

SERVED = [
    (f"/{service.full_name}/{method.name}", method)
    for module in (
        prefecture_pb2,
        fuhyo_pb2,
        national_pb2,
        admin_pb2,
        witness_pb2,
        health_pb2,
        reflection_pb2,
    )
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]
CODE, OTHER = "12345678901", "10987654321"


def _has_path(descriptor: Descriptor, path: str) -> bool:
    head, _, rest = path.partition(".")
    field = descriptor.fields_by_name.get(head)
    if field is None:
        return False
    if not rest:
        return True
    return field.message_type is not None and _has_path(field.message_type, rest)


def test_every_served_method_has_a_declaration() -> None:
    missing = [name for name, _ in SERVED if name not in AUDITED]
    assert missing == []
    with pytest.raises(LookupError):
        audited_for("/juki.v1.Prefecture/NotAMethod")


@pytest.mark.parametrize(("name", "method"), SERVED, ids=[name for name, _ in SERVED])
def test_every_field_a_declaration_reads_is_in_the_schema(name: str, method: MethodDescriptor) -> None:
    declared = audited_for(name)
    for read in declared.request:
        for path in read.paths:
            assert _has_path(method.input_type, path), f"{name}: request has no {path}"
    for read in declared.response:
        for path in read.paths:
            assert _has_path(method.output_type, path), f"{name}: response has no {path}"


def _facts(name: str, request: Any = None, response: Any = None) -> CallFacts:
    facts = CallFacts(name)
    if request is not None:
        audited_for(name).on_request(facts, request)
    if response is not None:
        audited_for(name).on_response(facts, response)
    return facts


def test_a_lookup_entry_names_its_resident_purpose_request_id_items_and_source() -> None:
    view = records_pb2.ResidentView(
        resident_code=CODE, name_kanji="試験", birth_date="1990-01-01", my_number="1"
    )
    facts = _facts(
        "/juki.v1.Prefecture/Lookup",
        prefecture_pb2.LookupRequest(resident_code=CODE, purpose="bt6-police", request_id="r-1"),
        prefecture_pb2.LookupResponse(record=view, source=prefecture_pb2.RECORD_SOURCE_NATIONAL),
    )
    assert (facts.resident_codes, facts.purpose, facts.request_id, facts.source, facts.count) == (
        [CODE],
        "bt6-police",
        "r-1",
        "NATIONAL",
        1,
    )
    assert facts.items == {"resident_code", "name", "birth_date", "my_number"}


def test_values_not_of_their_form_are_recorded_as_invalid() -> None:
    facts = _facts(
        "/juki.v1.Prefecture/Lookup",
        prefecture_pb2.LookupRequest(resident_code="1234", purpose="NOT A PURPOSE", request_id="x" * 65),
    )
    assert (facts.resident_codes, facts.purpose, facts.request_id) == ([], INVALID, INVALID)


def test_reconcile_entries_name_the_residents_sent_and_the_differences_found() -> None:
    name = "/juki.v1.Prefecture/Reconcile"
    facts = CallFacts(name)
    audited_for(name).on_request(
        facts, prefecture_pb2.ReconcileRequest(record=records_pb2.ResidentRecord(resident_code=CODE))
    )
    audited_for(name).on_response(
        facts,
        prefecture_pb2.ReconcileResponse(difference=prefecture_pb2.ReconcileDifference(resident_code=OTHER)),
    )
    audited_for(name).on_response(
        facts, prefecture_pb2.ReconcileResponse(summary=prefecture_pb2.ReconcileSummary())
    )
    assert facts.resident_codes == [CODE, OTHER]
    assert facts.count == 2  # every answer message


def test_a_fuhyo_update_entry_names_the_person_of_its_notice() -> None:
    notice = fuhyo_pb2.FuhyoNotice(record=records_pb2.FuhyoRecord(resident_code=CODE))
    facts = _facts("/juki.v1.Fuhyo/ApplyUpdate", fuhyo_pb2.FuhyoApplyRequest(notice=notice))
    assert (facts.resident_codes, facts.count) == ([CODE], 1)


def test_a_replayed_update_counts_nothing_applied() -> None:
    name = "/juki.v1.Prefecture/ApplyUpdate"
    notice = prefecture_pb2.ChangeNotice(resident_code=CODE)
    response = prefecture_pb2.ApplyUpdateResponse(
        result=prefecture_pb2.ApplyResult(resident_code=CODE), replayed=True
    )
    facts = _facts(name, prefecture_pb2.ApplyUpdateRequest(notice=notice), response)
    assert (facts.resident_codes, facts.count) == ([CODE], 0)


def test_the_restricted_links_entry_names_requester_and_the_my_number_item_only() -> None:
    facts = _facts(
        "/juki.v1.Prefecture/FetchMyNumber",
        prefecture_pb2.FetchMyNumberRequest(resident_code=CODE, requester="not a spiffe id"),
        prefecture_pb2.FetchMyNumberResponse(my_number="123456789012"),
    )
    assert (facts.resident_codes, facts.requester, facts.items, facts.count) == ([CODE], "", {"my_number"}, 1)
    valid = _facts(
        "/juki.v1.Prefecture/FetchMyNumber",
        prefecture_pb2.FetchMyNumberRequest(requester="spiffe://juki.mie/agency/police"),
    )
    assert valid.requester == "spiffe://juki.mie/agency/police"


def test_a_fuhyo_view_has_only_its_own_items() -> None:
    view = fuhyo_pb2.FuhyoView(resident_code=CODE, name_kanji="試験", address="三重県")
    facts = _facts("/juki.v1.Fuhyo/Lookup", None, fuhyo_pb2.FuhyoLookupResponse(record=view))
    assert facts.items == {"resident_code", "name", "address"}
