"""What each method's audit entry takes from its messages, declared per method.

Each served method names, in `AUDITED`, the readers that fill its CallFacts from a request message and from a
response message: the purpose and request id it states, the residents it concerns (住民票コード only), the
records it returns (the names of their items, never their values), and the counts its entry carries. Nothing
is found by looking for field names at run time: a method served without a declaration fails at its first
call (`audited_for`), and tests check every field a declaration reads against the schema.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from juki.v1 import prefecture_pb2

from server.services.call_facts import (
    PURPOSE_FORM,
    REQUEST_ID_FORM,
    CallFacts,
    checked,
    is_chunk,
    valid_spiffe_id,
)


@dataclass(frozen=True, slots=True)
class Read:
    """One reader: the fields it reads (dotted paths, for the schema test) and what it does with them."""

    paths: tuple[str, ...]
    run: Callable[[CallFacts, Any], None]


@dataclass(frozen=True, slots=True)
class Audited:
    """The readers of one method: `request` runs on each request message (every message of a client
    stream), `response` on the response (each message of a response stream)."""

    request: tuple[Read, ...] = ()
    response: tuple[Read, ...] = ()

    def on_request(self, facts: CallFacts, message: Any) -> None:
        for read in self.request:
            read.run(facts, message)

    def on_response(self, facts: CallFacts, message: Any) -> None:
        for read in self.response:
            read.run(facts, message)


def _purpose(facts: CallFacts, message: Any) -> None:
    if not facts.purpose:
        facts.purpose = checked(message.purpose, PURPOSE_FORM)


def _request_id(facts: CallFacts, message: Any) -> None:
    if not facts.request_id:
        facts.request_id = checked(message.request_id, REQUEST_ID_FORM)


def _requester(facts: CallFacts, message: Any) -> None:
    """On whose behalf a server calls (the restricted link, J-LIS queries): a valid SPIFFE ID or nothing."""
    if not facts.requester:
        facts.requester = valid_spiffe_id(message.requester)


def _code(facts: CallFacts, message: Any) -> None:
    facts.add_code(message.resident_code)


def _view(facts: CallFacts, view: Any) -> None:
    facts.add_view(view)


def _counted(facts: CallFacts, message: Any) -> None:
    facts.count += 1


def _source(facts: CallFacts, message: Any) -> None:
    if message.source:
        facts.source = _SOURCE_NAMES.get(message.source, "")


def _replayed(facts: CallFacts, message: Any) -> None:
    """An update's count is what it applied (住基法 30条の15 statistics): a replay applied nothing."""
    if message.replayed:
        facts.count = max(0, facts.count - 1)


def _replayed_count(facts: CallFacts, message: Any) -> None:
    facts.count = max(0, facts.count - message.replayed_count)


def _my_number(facts: CallFacts, message: Any) -> None:
    """The restricted link's answer, or a 附票 provision with its My Number."""
    if message.my_number:
        facts.items.add("my_number")
        facts.count += 1


def _streamed(facts: CallFacts, message: Any) -> None:
    """A BatchProvide answer to one condition: its record when FOUND, else it counts one. An answer to a
    chunk (`results`) is counted by its part entry (CallFacts.take_part)."""
    if message.HasField("record"):
        facts.add_view(message.record)
    elif not is_chunk(message):
        facts.count += 1


def _difference(facts: CallFacts, message: Any) -> None:
    """整合: every answer message counts one; a difference names its resident."""
    facts.count += 1
    if message.HasField("difference"):
        facts.add_code(message.difference.resident_code)


_SOURCE_NAMES = {
    v.number: v.name.removeprefix("RECORD_SOURCE_") for v in prefecture_pb2.RecordSource.DESCRIPTOR.values
}


def field(name: str, run: Callable[[CallFacts, Any], None]) -> Read:
    """A reader of the message itself that reads its field `name`."""
    return Read((name,), run)


def inside(name: str, read: Read) -> Read:
    """`read` on the sub-message `name` (each element when repeated), when it is set."""
    paths = tuple(f"{name}.{p}" for p in read.paths)
    inner = read.run

    def run(facts: CallFacts, message: Any) -> None:
        value = getattr(message, name)
        if isinstance(value, Message):
            if message.HasField(name):
                inner(facts, value)
            return
        for element in value:
            inner(facts, element)

    return Read(paths, run)


def views(name: str) -> Read:
    """The record(s) returned in field `name` (a ResidentView or FuhyoView, single or repeated)."""
    return inside(name, Read(("resident_code",), _view))


PURPOSE = field("purpose", _purpose)
REQUEST_ID = field("request_id", _request_id)
REQUESTER = field("requester", _requester)
CODE = field("resident_code", _code)
SOURCE = field("source", _source)
MY_NUMBER = field("my_number", _my_number)
STATED = (PURPOSE, REQUEST_ID)

NOTHING = Audited()
_LOOKUP = Audited((*STATED, CODE), (views("record"), SOURCE))
_ONE_RECORD = Audited((*STATED, CODE), (views("record"),))
_SEARCH = Audited(STATED, (views("results"),))
_PROVIDE = Audited((*STATED, CODE), (views("records"), SOURCE))
_FUHYO_PROVIDE = Audited((*STATED, CODE), (views("records"), MY_NUMBER))
# a chunk's residents asked for by 住民票コード too; its results are counted by its part entry
_BATCH = Audited((PURPOSE, CODE, inside("conditions", CODE)), (Read(("record", "results"), _streamed),))
_NOTICE = (inside("notice", CODE), inside("notice", Read((), _counted)))  # each notice counts one
_FUHYO_NOTICE = (inside("notice", inside("record", CODE)), _NOTICE[1])
_APPLIED = (inside("result", CODE), field("replayed", _replayed))
_APPLIED_STREAM = (inside("results", CODE), field("replayed_count", _replayed_count))
_RECONCILE = Audited((inside("record", CODE),), (Read(("difference.resident_code",), _difference),))
_NATIONAL_QUERY = Audited((*STATED, CODE, REQUESTER), (views("records"),))

AUDITED: dict[str, Audited] = {
    "/juki.v1.Prefecture/ApplyUpdate": Audited(_NOTICE, _APPLIED),
    "/juki.v1.Prefecture/ApplyUpdates": Audited(_NOTICE, _APPLIED_STREAM),
    "/juki.v1.Prefecture/Lookup": _LOOKUP,
    "/juki.v1.Prefecture/Search": _SEARCH,
    "/juki.v1.Prefecture/Provide": _PROVIDE,
    "/juki.v1.Prefecture/BatchProvide": _BATCH,
    "/juki.v1.Prefecture/Disclose": _ONE_RECORD,  # the request's resident, the record shown
    "/juki.v1.Prefecture/Reconcile": _RECONCILE,
    "/juki.v1.Prefecture/QueryNational": _PROVIDE,
    "/juki.v1.Prefecture/FetchMyNumber": Audited((*STATED, CODE, REQUESTER), (MY_NUMBER,)),
    "/juki.v1.Prefecture/Ping": NOTHING,
    "/juki.v1.Fuhyo/ApplyUpdate": Audited(_FUHYO_NOTICE, _APPLIED),
    "/juki.v1.Fuhyo/ApplyUpdates": Audited(_FUHYO_NOTICE, _APPLIED_STREAM),
    "/juki.v1.Fuhyo/Lookup": _ONE_RECORD,
    "/juki.v1.Fuhyo/Search": _SEARCH,
    "/juki.v1.Fuhyo/Provide": _FUHYO_PROVIDE,
    "/juki.v1.Fuhyo/Redeliver": Audited(STATED, (views("records"), MY_NUMBER)),
    "/juki.v1.Fuhyo/AckDelivery": Audited(STATED),
    "/juki.v1.Fuhyo/BatchProvide": _BATCH,
    "/juki.v1.Fuhyo/Disclose": _ONE_RECORD,
    "/juki.v1.Fuhyo/Reconcile": _RECONCILE,
    "/juki.v1.Fuhyo/QueryNational": _PROVIDE,
    "/juki.v1.Fuhyo/Ping": NOTHING,
    "/juki.v1.National/NotifyUpdates": NOTHING,  # the record servers' entries name the residents
    "/juki.v1.National/Query": _NATIONAL_QUERY,
    "/juki.v1.National/QueryFuhyo": _NATIONAL_QUERY,
    "/juki.v1.National/Ping": NOTHING,
    "/juki.v1.Admin/RegisterOperator": NOTHING,
    "/juki.v1.Admin/RevokeOperator": NOTHING,
    "/juki.v1.Admin/ListOperators": NOTHING,
    "/juki.v1.Admin/IssueApproval": Audited((PURPOSE,)),  # the purpose the approval is for
    "/juki.v1.Admin/Statistics": NOTHING,
    "/juki.v1.Admin/InclusionProof": NOTHING,
    "/juki.v1.Admin/ConsistencyProof": NOTHING,
    "/juki.v1.Witness/AddCheckpoint": NOTHING,
    "/juki.v1.Witness/GetCheckpoint": NOTHING,
    "/grpc.health.v1.Health/Check": NOTHING,
    "/grpc.health.v1.Health/Watch": NOTHING,
    "/grpc.health.v1.Health/List": NOTHING,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": NOTHING,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": NOTHING,
}


def audited_for(method: str) -> Audited:
    """The declaration of a served method; a method served without one is a programming error."""
    try:
        return AUDITED[method]
    except KeyError:
        raise LookupError(f"{method}: no audit declaration in server.services.audited") from None
