"""Every request message of every service, as a test sends it (issue 12): who may call each method, a
base request that passes the chain (granted purpose), how the request travels (unary or which stream),
and where a field's violation is named. Shared by the limit tests and the property-based tests.

The bases never apply anything on their own: notices carry a sequence far past any municipality's, so a
request the validation let through would still be refused (FAILED_PRECONDITION), never stored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from juki.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    fuhyo_pb2,
    fuhyo_pb2_grpc,
    national_pb2,
    national_pb2_grpc,
    prefecture_pb2,
    prefecture_pb2_grpc,
    records_pb2,
)

from clients.channel import secure_channel
from server.identity.pki import Pki
from tests.conftest import Server
from tests.notices import my_number, new_code

P, F, N, A, R = prefecture_pb2, fuhyo_pb2, national_pb2, admin_pb2, records_pb2
FAR = 10**12  # a sequence no municipality reaches
CS = "municipal-cs/242012"
POLICE = "agency/police"
POLICE_PURPOSE = "bt6-police-driving-licence"
CODE = new_code(777_001)
NUMBER = my_number(777_001)


def four_info() -> R.FourInfo:
    return R.FourInfo(name_kanji="三重　花子", name_kana="ミエ　ハナコ", birth_date="1990-04-01",
                      sex=R.SEX_FEMALE, address="三重県津市広明町13番地")  # fmt: skip


def notice() -> P.ChangeNotice:
    return P.ChangeNotice(
        municipality_code="242012", sequence=FAR, resident_code=CODE, change_reason=R.CHANGE_REASON_SHUSSEI,
        change_date="2020-01-02", four_info=four_info(), my_number=NUMBER, oaza_code="1001",
        operator_id="op-1", terminal_id="t-1", timestamp="2020-01-03T09:30:00+09:00",
        former_surname=R.FormerSurname(kanji="旧姓", kana="キュウセイ"),
    )  # fmt: skip


def fuhyo_notice() -> F.FuhyoNotice:
    record = R.FuhyoRecord(
        resident_code=CODE, name_kanji="附票　花子", name_kana="フヒョウ　ハナコ", birth_date="1980-01-01",
        sex=R.SEX_FEMALE, address_municipality_code="242012", address="三重県津市広明町13番地",
        last_address="", change_date="2024-01-01", former_resident_code=new_code(777_002),
        managing_municipality_code="242012", state_kind=1, gaiji_pattern="QUJD",
    )  # fmt: skip
    return F.FuhyoNotice(managing_municipality_code="242012", sequence=FAR, kind=F.FUHYO_CHANGE_KIND_CREATE,
                         change_date="2024-01-01", record=record)  # fmt: skip


def resident_record() -> R.ResidentRecord:
    record = R.ResidentRecord(
        resident_code=CODE, four_info=four_info(), my_number=NUMBER, change_date="2020-01-02",
        search_kana="ミエハナコ", municipality_code="242012", oaza_code="1", operator_id="op-1",
        terminal_id="t-1", timestamp="2020-01-03T09:30:00+09:00", notified_date="2020-01-03",
        removed_date="", former_surname=R.FormerSurname(kanji="旧姓", kana="キュウセイ"),
    )  # fmt: skip
    return record


def ranges() -> P.ReconcileRanges:
    every = [P.RangeDigest(prefix=str(d), digest=b"x" * 32) for d in range(10)]
    return P.ReconcileRanges(municipality_code="242012", prefix_length=1, ranges=every)


@dataclass(frozen=True)
class Method:
    """One method: where it is served, who calls it, a base request, how it travels."""

    service: str  # "Prefecture" | "Fuhyo" | "National" | "Admin"
    name: str
    identity: str
    base: Callable[[], Message]
    kind: str = "unary"  # "unary" | "notices" (ApplyUpdates) | "batch" | "reconcile"

    @property
    def full(self) -> str:
        return f"{self.service}.{self.name}"

    @property
    def request_type(self) -> Any:
        return self.base().DESCRIPTOR

    def violation_path(self, path: str) -> str:
        """Where the chain or the handler names a field of this method's request."""
        if self.kind == "notices":
            return path.replace("notice.", "notices[0].", 1)
        if self.kind == "batch":
            return f"requests[0].{path}"
        return path


METHODS: tuple[Method, ...] = (
    Method("Prefecture", "ApplyUpdate", CS, lambda: P.ApplyUpdateRequest(notice=notice())),
    Method("Prefecture", "ApplyUpdates", CS, lambda: P.ApplyUpdateRequest(notice=notice()), "notices"),
    Method("Prefecture", "Lookup", "operator/op-0001",
           lambda: P.LookupRequest(resident_code=CODE, purpose="identity-check", request_id="r-1")),
    Method("Prefecture", "Search", "operator/op-0001",
           lambda: P.SearchRequest(name_kana="ミエ", birth_date="1990-04-01", sex=R.SEX_FEMALE,
                                   address_prefix="三重県", purpose="identity-check", request_id="r-1")),
    Method("Prefecture", "Provide", POLICE,
           lambda: P.ProvideRequest(resident_code=CODE, purpose=POLICE_PURPOSE, request_id="r-1")),
    Method("Prefecture", "BatchProvide", POLICE,
           lambda: P.BatchProvideRequest(purpose=POLICE_PURPOSE, declared_count=1, condition_id="c0",
                                         resident_code=CODE), "batch"),
    Method("Prefecture", "Disclose", "operator/op-0001",
           lambda: P.DiscloseRequest(resident_code=CODE, purpose="disclosure", request_id="r-1")),
    Method("Prefecture", "Reconcile", CS, lambda: P.ReconcileRequest(ranges=ranges()), "reconcile"),
    Method("Prefecture", "Reconcile", CS, lambda: P.ReconcileRequest(record=resident_record()), "reconcile"),
    Method("Prefecture", "QueryNational", "operator/op-0001",
           lambda: P.QueryNationalRequest(resident_code=CODE, purpose="identity-check", request_id="r-1")),
    Method("Prefecture", "FetchMyNumber", "fuhyo-server/24",
           lambda: P.FetchMyNumberRequest(resident_code=CODE, purpose=POLICE_PURPOSE,
                                          requester=f"spiffe://juki.mie/{POLICE}", request_id="r-1")),
    Method("Prefecture", "Ping", CS, P.PingRequest),
    Method("Fuhyo", "Ping", CS, P.PingRequest),
    Method("National", "Ping", "prefectural-server/24", P.PingRequest),
    Method("Fuhyo", "ApplyUpdate", CS, lambda: F.FuhyoApplyRequest(notice=fuhyo_notice())),
    Method("Fuhyo", "ApplyUpdates", CS, lambda: F.FuhyoApplyRequest(notice=fuhyo_notice()), "notices"),
    Method("Fuhyo", "Lookup", "operator/op-0001",
           lambda: F.FuhyoLookupRequest(resident_code=CODE, purpose="identity-check", request_id="r-1")),
    Method("Fuhyo", "Search", "operator/op-0001",
           lambda: P.SearchRequest(name_kana="ミエ", sex=R.SEX_FEMALE, purpose="identity-check")),
    Method("Fuhyo", "Provide", POLICE,
           lambda: F.FuhyoProvideRequest(resident_code=CODE, purpose=POLICE_PURPOSE, request_id="r-1")),
    Method("Fuhyo", "Redeliver", POLICE,
           lambda: F.RedeliverRequest(request_id="r-1", purpose=POLICE_PURPOSE)),
    Method("Fuhyo", "AckDelivery", POLICE,
           lambda: F.AckDeliveryRequest(request_id="r-1", purpose=POLICE_PURPOSE)),
    Method("Fuhyo", "BatchProvide", POLICE,
           lambda: P.BatchProvideRequest(purpose=POLICE_PURPOSE, declared_count=1, condition_id="c0",
                                         resident_code=CODE), "batch"),
    Method("Fuhyo", "Disclose", "operator/op-0001",
           lambda: P.DiscloseRequest(resident_code=CODE, purpose="disclosure", request_id="r-1")),
    Method("Fuhyo", "Reconcile", CS, lambda: F.FuhyoReconcileRequest(ranges=ranges()), "reconcile"),
    Method("Fuhyo", "Reconcile", CS, lambda: F.FuhyoReconcileRequest(record=fuhyo_notice().record),
           "reconcile"),
    Method("Fuhyo", "QueryNational", "operator/op-0001",
           lambda: P.QueryNationalRequest(resident_code=CODE, purpose="identity-check", request_id="r-1")),
    Method("National", "NotifyUpdates", "prefectural-server/24",
           lambda: N.NotifyUpdatesRequest(prefecture_code="24", changes=[N.PropagatedChange(
               file=N.CHANGE_FILE_RESIDENT, notice=notice(), applied_at="2020-01-03T09:30:00+09:00")])),
    Method("National", "Query", "prefectural-server/24",
           lambda: N.NationalQueryRequest(resident_code=CODE, purpose="identity-check",
                                          requester="spiffe://juki.mie/operator/op-0001", request_id="r-1")),
    Method("National", "QueryFuhyo", "fuhyo-server/24",
           lambda: N.NationalQueryRequest(resident_code=CODE, purpose="identity-check",
                                          requester="spiffe://juki.mie/operator/op-0001", request_id="r-1")),
    Method("Admin", "RegisterOperator", "admin/admin-01",
           lambda: A.RegisterOperatorRequest(operator_id="op-limits", methods=["Prefecture.Lookup"],
                                             purposes=["identity-check"], note="section 1")),
    Method("Admin", "RevokeOperator", "admin/admin-01",
           lambda: A.RevokeOperatorRequest(operator_id="op-nobody", reason="left")),
    Method("Admin", "ListOperators", "admin/admin-01", A.ListOperatorsRequest),
    Method("Admin", "IssueApproval", "admin/admin-01",
           lambda: A.IssueApprovalRequest(caller=f"spiffe://juki.mie/{POLICE}", purpose=POLICE_PURPOSE,
                                          max_count=5)),
    Method("Admin", "Statistics", "auditor/auditor-01", lambda: A.StatisticsRequest(month="2026-01")),
    Method("Admin", "InclusionProof", "auditor/auditor-01", lambda: A.InclusionProofRequest(seq=1)),
    Method("Admin", "ConsistencyProof", "auditor/auditor-01", lambda: A.ConsistencyProofRequest(first=1)),
)  # fmt: skip

_STUBS = {
    "Prefecture": prefecture_pb2_grpc.PrefectureStub,
    "Fuhyo": fuhyo_pb2_grpc.FuhyoStub,
    "National": national_pb2_grpc.NationalStub,
    "Admin": admin_pb2_grpc.AdminStub,
}


def target(server: Server, service: str) -> str:
    s = server.settings
    return {"Fuhyo": s.fuhyo_target, "National": s.national_target}.get(service, s.prefecture_target)


class Callers:
    """One channel per (server, identity), kept for the module."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self._stubs: dict[tuple[str, str], Any] = {}

    def stub(self, service: str, identity: str) -> Any:
        key = (service, identity)
        if key not in self._stubs:
            channel = secure_channel(
                Pki(self.server.settings.pki_path), identity, target(self.server, service)
            )
            self.server._channels.append(channel)
            self._stubs[key] = _STUBS[service](channel)  # type: ignore[no-untyped-call]
        return self._stubs[key]

    def call(self, method: Method, request: Message) -> list[Message]:
        """Send `request` as the method takes it; the answers (raises grpc.RpcError when refused)."""
        rpc = getattr(self.stub(method.service, method.identity), method.name)
        if method.kind == "unary":
            return [rpc(request, timeout=10)]
        if method.kind == "notices":
            return [rpc(iter([request]), timeout=10)]
        if method.kind == "batch":
            return list(rpc(iter([request]), timeout=10))
        messages = [request]
        if request.WhichOneof("part") == "record":
            messages.insert(0, type(request)(ranges=ranges()))
        return list(rpc(iter(messages), timeout=10))


def string_fields(descriptor: Descriptor, prefix: str = "") -> Iterator[tuple[str, FieldDescriptor]]:
    """(path, field) of every string and bytes field reachable from a message (repeated: element 0)."""
    for fd in descriptor.fields:
        name = prefix + fd.name + ("[0]" if fd.is_repeated else "")
        if fd.type == FieldDescriptor.TYPE_MESSAGE and fd.message_type is not None:
            yield from string_fields(fd.message_type, name + ".")
        elif fd.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
            yield name, fd


def put(message: Message, path: str, value: Any) -> None:
    """Set the field at `path` ("a.b[0].c"; a repeated element 0 is added when absent)."""
    *parents, last = path.split(".")
    target_message: Any = message
    for part in parents:
        name = part.removesuffix("[0]")
        if part.endswith("[0]"):
            items = getattr(target_message, name)
            target_message = items[0] if len(items) else items.add()
        else:
            target_message = getattr(target_message, name)
    name = last.removesuffix("[0]")
    if last.endswith("[0]"):
        items = getattr(target_message, name)
        if len(items):
            items[0] = value
        else:
            items.append(value)
    else:
        setattr(target_message, name, value)


def refusal(call: Callable[[], Any]) -> grpc.RpcError | None:
    try:
        call()
    except grpc.RpcError as error:
        return error
    return None
