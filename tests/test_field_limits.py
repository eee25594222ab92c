"""SPEC §4.2, issue 12 items 2–4: every string field of every request of every service has a documented
length and alphabet, checked at the boundary; whatever passes is storable; no internals in any answer.

The table (server/domain/limits.py) is complete and is what docs/limits.md says; then, against real
servers, each string field of each request in turn is sent one character too long, and with an ESC
inside: INVALID_ARGUMENT naming that field (a purpose: refused by the policy), nothing stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.rpc import error_details_pb2, status_pb2
from juki.v1 import admin_pb2, fuhyo_pb2, national_pb2, prefecture_pb2, records_pb2

from clients.channel import error_details
from server.domain.errors import MAX_VIOLATIONS, DomainError, ErrorKind
from server.domain.limits import BINARY, COUNTS, LIMITS, Limit, markdown_table
from server.services.status import status_metadata
from tests.conftest import Server, make_server
from tests.requests_catalogue import (
    CS,
    METHODS,
    Callers,
    Method,
    fuhyo_notice,
    put,
    refusal,
    string_fields,
)

P, F, R = prefecture_pb2, fuhyo_pb2, records_pb2
SERVICES = [
    prefecture_pb2.DESCRIPTOR.services_by_name["Prefecture"],
    fuhyo_pb2.DESCRIPTOR.services_by_name["Fuhyo"],
    national_pb2.DESCRIPTOR.services_by_name["National"],
    admin_pb2.DESCRIPTOR.services_by_name["Admin"],
]
LEAKS = (
    "Traceback",
    "<class",
    "ValueError",
    "OverflowError",
    "DecodeError",
    "Exception",
    ".py",
    "lmdb",
    "Unexpected",
    "google.protobuf",
)
DOCS = Path(__file__).parents[1] / "docs" / "limits.md"


def request_fields(descriptor: Descriptor, seen: set[str]) -> Iterator[FieldDescriptor]:
    if descriptor.full_name in seen:
        return
    seen.add(descriptor.full_name)
    for fd in descriptor.fields:
        if fd.type == FieldDescriptor.TYPE_MESSAGE and fd.message_type is not None:
            yield from request_fields(fd.message_type, seen)
        else:
            yield fd


def every_request_field() -> list[FieldDescriptor]:
    seen: set[str] = set()
    return [fd for s in SERVICES for m in s.methods for fd in request_fields(m.input_type, seen)]


# --- the table ------------------------------------------------------------------------------------------


def test_every_string_field_of_every_request_has_a_documented_limit() -> None:
    strings = {
        fd.full_name
        for fd in every_request_field()
        if fd.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES)
    }
    assert strings - LIMITS.keys() == set(), "fields without a limit"
    assert LIMITS.keys() - strings == set(), "limits of fields no request has"
    repeated = {fd.full_name for fd in every_request_field() if fd.is_repeated and fd.full_name in LIMITS}
    assert repeated == COUNTS.keys()


def test_docs_limits_md_is_the_table() -> None:
    assert markdown_table() in DOCS.read_text(encoding="utf-8")


def test_the_catalogue_sends_every_method_of_every_service() -> None:
    assert {(m.service, m.name) for m in METHODS} == {(s.name, m.name) for s in SERVICES for m in s.methods}


# --- at the boundary, on real servers --------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("limits"), pki_dir, seeded=200, elsewhere=20, with_fuhyo=True)
    srv.start()
    yield srv
    srv.stop_all()


@pytest.fixture(scope="module")
def callers(deployment: Server) -> Callers:
    return Callers(deployment)


_ALLOWED = {"digits": "1", "date": "1", "month": "1", "rfc3339": "1", "text": "三", "kana": "ア"}


def too_long(limit: Limit) -> Any:
    if limit.alphabet is BINARY:
        return b"\x00" * (limit.bytes + 1)
    return _ALLOWED.get(limit.alphabet.name, "a") * (limit.chars + 1)


def with_escape(limit: Limit) -> str:
    return _ALLOWED.get(limit.alphabet.name, "a") + "\x1b[2J"[: max(1, min(4, limit.chars - 1))]


CONDITIONS = ("resident_code", "my_number", "four_info.")
CHUNK = "conditions[0]."  # a condition of a BatchProvide chunk


def cases() -> Iterator[Any]:
    for method in METHODS:
        base = method.base()
        chosen = base.WhichOneof("part") if method.kind == "reconcile" else None
        for path, fd in string_fields(method.request_type):
            if chosen and not path.startswith(chosen + "."):
                continue
            limit = LIMITS[fd.full_name]
            yield pytest.param(method, path, too_long(limit), id=f"{method.full}:{path}:too-long")
            if limit.alphabet is not BINARY:
                yield pytest.param(method, path, with_escape(limit), id=f"{method.full}:{path}:escape")


def assert_tells_nothing(error: grpc.RpcError) -> None:
    text = (error.details() or "") + repr(error.trailing_metadata())
    for leak in LEAKS:
        assert leak not in text, leak


@pytest.mark.parametrize(("method", "path", "value"), list(cases()))
def test_a_field_beyond_its_limit_is_refused_at_the_boundary(
    callers: Callers, method: Method, path: str, value: Any
) -> None:
    request = method.base()
    in_chunk = method.kind == "batch" and path.startswith(CHUNK)
    if in_chunk:  # a message carries one condition or a chunk, never both: the base's condition goes
        request.ClearField("condition_id")
        request.ClearField("condition")
    put(request, path, value)
    if method.kind == "batch" and path.removeprefix(CHUNK).startswith(CONDITIONS):
        [answer] = callers.call(method, request)
        result: Any = answer.results[0] if in_chunk else answer  # type: ignore[attr-defined]
        assert result.outcome == P.BATCH_OUTCOME_REFUSED and not result.HasField("record")
        return
    error = refusal(lambda: callers.call(method, request))
    assert error is not None, "accepted"
    assert_tells_nothing(error)
    if path.rsplit(".", 1)[-1] == "purpose" and method.full != "Prefecture.BatchProvide":
        assert error.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT)
        return
    if method.full == "Prefecture.BatchProvide" and path == "purpose":
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED  # the policy checks it first
        return
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    violations, _, _ = error_details(error)
    assert method.violation_path(path) in {field for field, _ in violations}


# --- the issue's examples ------------------------------------------------------------------------------


def fuhyo_snapshot(server: Server) -> tuple[int, int, int]:
    """The 附票 store's records, history and Tsu's sequence, read-only from the test process."""
    store = server.open_fuhyo_reader()
    try:
        with store.reader() as tx:
            return tx.count("records"), tx.count("history"), tx.last_sequence("242012")
    finally:
        store.close()


FUHYO_CASES = [
    ("gaiji_pattern-1MB", "gaiji_pattern", "A" * (1 << 20)),
    ("former_resident_code-NUL-ESC", "former_resident_code", "1234\x00\x1b67890"),
    ("address_municipality_code-letters", "address_municipality_code", "XYZ"),
    ("last_address-2000-NULs", "last_address", "\x00" * 2000),
    ("notice_kind-undefined", "notice_kind", 99),  # an enum (FuhyoNoticeKind): defined values only
    ("name_gaiji_count-2^32-1", "name_gaiji_count", 2**32 - 1),
]


@pytest.mark.parametrize(("name", "value"), [c[1:] for c in FUHYO_CASES], ids=[c[0] for c in FUHYO_CASES])
def test_a_fuhyo_notice_out_of_its_schema_is_refused_and_stores_nothing(
    deployment: Server, callers: Callers, name: str, value: Any
) -> None:
    before = fuhyo_snapshot(deployment)
    notice = fuhyo_notice()
    notice.sequence = before[2] + 1  # the next sequence: only the bad field stops it
    setattr(notice.record, name, value)
    stub = callers.stub("Fuhyo", CS)
    with pytest.raises(grpc.RpcError) as info:
        stub.ApplyUpdate(F.FuhyoApplyRequest(notice=notice), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations, _, _ = error_details(info.value)
    assert f"notice.record.{name}" in {field for field, _ in violations}
    assert fuhyo_snapshot(deployment) == before


def test_an_enum_takes_only_its_defined_values(callers: Callers) -> None:
    notice = fuhyo_notice()
    notice.kind = 7  # type: ignore[assignment]
    with pytest.raises(grpc.RpcError) as info:
        callers.stub("Fuhyo", CS).ApplyUpdate(F.FuhyoApplyRequest(notice=notice), timeout=10)
    assert ("notice.kind", "not a defined value of FuhyoChangeKind") in error_details(info.value)[0]
    request = next(m for m in METHODS if m.full == "National.NotifyUpdates").base()
    request.changes[0].file = 9  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as info:
        callers.stub("National", "prefectural-server/24").NotifyUpdates(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "changes[0].file" in {field for field, _ in error_details(info.value)[0]}


@pytest.mark.parametrize("note", ["section\x001", "\x1b[31mred\x1b[0m", "line\nbreak", "bidi\u202eoverride"])
def test_an_operator_note_takes_no_control_characters(callers: Callers, note: str) -> None:
    request = admin_pb2.RegisterOperatorRequest(
        operator_id="op-note", methods=["Prefecture.Lookup"], purposes=["identity-check"], note=note
    )
    with pytest.raises(grpc.RpcError) as info:
        callers.stub("Admin", "admin/admin-01").RegisterOperator(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {field for field, _ in error_details(info.value)[0]} == {"note"}
    listed = callers.stub("Admin", "admin/admin-01").ListOperators(
        admin_pb2.ListOperatorsRequest(), timeout=10
    )
    assert "op-note" not in [entry.operator_id for entry in listed.operators]


@pytest.mark.parametrize(
    "caller",
    ["spiffe://juki.osaka/agency/police", "spiffe://juki.mie/operator/op-0001", "spiffe://juki.mie/admin/x"],
)
def test_an_approval_is_only_for_a_bulk_caller_of_this_trust_domain(callers: Callers, caller: str) -> None:
    request = admin_pb2.IssueApprovalRequest(caller=caller, purpose="bt6-police-driving-licence", max_count=5)
    with pytest.raises(grpc.RpcError) as info:
        callers.stub("Admin", "admin/admin-01").IssueApproval(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {field for field, _ in error_details(info.value)[0]} == {"caller"}


def test_an_approval_for_a_bulk_caller_of_this_trust_domain_is_issued(callers: Callers) -> None:
    request = admin_pb2.IssueApprovalRequest(
        caller="spiffe://juki.mie/agency/police", purpose="bt6-police-driving-licence", max_count=5
    )
    approval = callers.stub("Admin", "admin/admin-01").IssueApproval(request, timeout=10)
    assert approval.token and approval.caller == request.caller


# --- item 4: no internals, every INVALID_ARGUMENT with a BadRequest --------------------------------------


@pytest.mark.parametrize(
    "month",
    ["2026-13", "0000-01", "２０２６-０１", "9999-12", "2026-00", "2026-1", "", "2026-01\n", "1999-12"],
)
def test_statistics_of_a_month_that_is_none_is_invalid_argument_with_a_bad_request(
    callers: Callers, month: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        callers.stub("Admin", "auditor/auditor-01").Statistics(
            admin_pb2.StatisticsRequest(month=month), timeout=10
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert_tells_nothing(info.value)
    assert {field for field, _ in error_details(info.value)[0]} == {"month"}


def test_statistics_of_a_month_answers(callers: Callers) -> None:
    answer = callers.stub("Admin", "auditor/auditor-01").Statistics(
        admin_pb2.StatisticsRequest(month="2026-12"), timeout=10
    )
    assert answer.month == "2026-12"


def test_an_invalid_argument_always_carries_a_bad_request() -> None:
    """The safety net behind every rule: an INVALID_ARGUMENT raised without violations still names one."""
    err = DomainError(ErrorKind.INVALID_ARGUMENT, "something is off", "INVALID_FIELDS")
    [(_, raw)] = status_metadata(grpc.StatusCode.INVALID_ARGUMENT, err.message, err)
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status_pb2.Status.FromString(raw).details)
    assert [(v.field, v.description) for v in bad.field_violations] == [("request", "something is off")]


def test_a_request_with_thousands_of_bad_fields_names_a_bounded_few(callers: Callers) -> None:
    """1000 changes, each with two bad fields: one INVALID_ARGUMENT whose trailers stay small."""
    request = next(m for m in METHODS if m.full == "National.NotifyUpdates").base()
    change = request.changes[0]  # type: ignore[attr-defined]
    change.applied_at = "\x00" * 35
    change.notice.four_info.address = "\x1b" * 10
    request.changes.extend([change] * 999)  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as info:
        callers.stub("National", "prefectural-server/24").NotifyUpdates(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = error_details(info.value)[0]
    assert 1 <= len(violations) <= MAX_VIOLATIONS
    assert len(info.value.details() or "") < 1024
    trailing: Any = info.value.trailing_metadata() or ()
    assert sum(len(value) for _, value in trailing) < 4096
