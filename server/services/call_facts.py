"""What a call concerned and returned, read off its request and response for the audit trail.

Only resident codes leave this module (the auditor hashes them with its key before anything is written),
plus the names of the items returned — never their values. Nothing a caller typed is recorded unchecked:
a purpose, request id, requester or method name that is not of its documented form (server/domain/limits.py)
is recorded as INVALID, a resident code that is not 11 digits not at all — so a refused call adds a
bounded entry to the trail whatever it carried.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from server.domain.codes import is_valid_resident_code
from server.identity.pki import SpiffeId

INVALID = "<invalid>"  # what the trail records of a caller's value that is not of its documented form
_PURPOSE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_METHOD = re.compile(r"/[A-Za-z0-9_.]{1,100}/[A-Za-z0-9_]{1,100}")

MAX_SUBJECTS = 1000  # per entry of most calls; a larger call records its count and the first subjects
# A provision's entry names every resident provided (the resident's disclosure is built from it).
PROVISION_METHODS = frozenset(
    {
        "/juki.v1.Prefecture/Provide",
        "/juki.v1.Prefecture/BatchProvide",
        "/juki.v1.Fuhyo/Provide",
        "/juki.v1.Fuhyo/BatchProvide",
    }
)

# Calls made by a server on behalf of someone else: the entry also names that requester (a SPIFFE ID).
REQUESTER_METHODS = frozenset(
    {"/juki.v1.Prefecture/FetchMyNumber", "/juki.v1.National/Query", "/juki.v1.National/QueryFuhyo"}
)

# ResidentView field → the SPEC §3.3 item it carries
_ITEMS = (
    ("resident_code", "resident_code"),
    ("name_kanji", "name"),
    ("birth_date", "birth_date"),
    ("sex", "sex"),
    ("address", "address"),
    ("my_number", "my_number"),
    ("change_reason", "change_reason"),
    ("change_date", "change_date"),
)


@dataclass
class CallFacts:
    method: str
    caller: SpiffeId | None = None
    claimed: SpiffeId | None = None  # a refused certificate's identity (never authenticated) …
    serial: int | None = None  # … and its serial
    purpose: str = ""
    request_id: str = ""
    requester: str = ""  # on whose behalf a server calls (REQUESTER_METHODS), when a valid SPIFFE ID
    outcome: str = "OK"
    resident_codes: list[str] = field(default_factory=list)
    items: set[str] = field(default_factory=set)
    source: str = ""
    count: int = 0
    applied: int | None = None  # set by a call that applies notices: what it applied (its entry's count)
    started: float = field(default_factory=time.perf_counter)
    meter: Any = None  # the method's metrics (observability.calls.MethodMetrics)
    part: int = 0  # n ≥ 1: these facts are the n-th part entry of a streamed provision (take_part)

    def __post_init__(self) -> None:
        self._seen: set[str] = set()
        self._cap = None if self.method in PROVISION_METHODS else MAX_SUBJECTS
        self._parts = 0  # part entries taken so far …
        self._parted = 0  # … and this call's count when the last was taken

    def add_code(self, code: str) -> None:
        if not is_valid_resident_code(code):
            return  # nothing names a resident but 11 digits; anything else is no subject
        if code not in self._seen and (self._cap is None or len(self.resident_codes) < self._cap):
            self._seen.add(code)
            self.resident_codes.append(code)

    def add_request(self, request: Any) -> None:
        """Purpose, request id and the resident a request names (when it names one)."""
        if request is None:
            return
        self.purpose = self.purpose or _checked(str(getattr(request, "purpose", "")), _PURPOSE)
        self.request_id = self.request_id or _checked(str(getattr(request, "request_id", "")), _REQUEST_ID)
        code = getattr(request, "resident_code", "")
        if code:
            self.add_code(code)
        self._add_chunk(request)
        if self.method in REQUESTER_METHODS and not self.requester:
            self.requester = _valid_spiffe_id(request.requester)
        notice = getattr(request, "notice", None)
        if notice is not None and isinstance(notice, Message):
            self.add_code(getattr(notice, "resident_code", ""))
            self.count += 1

    def add_view(self, view: Any) -> None:
        self.add_code(view.resident_code)
        self.count += 1
        for name, item in _ITEMS:
            if getattr(view, name, None):  # a 附票 view has fewer items than a resident's
                self.items.add(item)

    def add_response(self, response: Any) -> None:
        """Records returned (ResidentView under record / records / results) and apply results."""
        if response is None:
            return
        descriptor = response.DESCRIPTOR
        if "source" in descriptor.fields_by_name and response.source:
            enum = descriptor.fields_by_name["source"].enum_type
            self.source = enum.values_by_number[response.source].name.removeprefix("RECORD_SOURCE_")
        if "record" in descriptor.fields_by_name and response.HasField("record"):
            self.add_view(response.record)
        for name in ("records", "results"):
            if name in descriptor.fields_by_name:
                for element in getattr(response, name):
                    if element.DESCRIPTOR.name in ("ResidentView", "FuhyoView"):
                        self.add_view(element)
                    else:
                        self.add_code(getattr(element, "resident_code", ""))
        if "result" in descriptor.fields_by_name and response.HasField("result"):
            self.add_code(response.result.resident_code)
        # an update's count is what it applied (住基法 30条の15 statistics): replays applied nothing
        if "replayed" in descriptor.fields_by_name and response.replayed:
            self.count = max(0, self.count - 1)
        if "replayed_count" in descriptor.fields_by_name:
            self.count = max(0, self.count - response.replayed_count)
        if "my_number" in descriptor.fields_by_name and response.my_number:  # the restricted link's answer
            self.items.add("my_number")
            self.count += 1

    # --- streamed provisions in parts (BatchProvide chunks) -------------------------------------------

    def _add_chunk(self, request: Any) -> None:
        """The residents a chunk's conditions name by 住民票コード (BatchProvideRequest.conditions)."""
        for condition in getattr(request, "conditions", ()):
            self.add_code(getattr(condition, "resident_code", ""))

    def part_due(self, response: Any) -> bool:
        """Whether a streamed provision's response is written as a part entry before it is sent: a chunk's
        results (`results`), or — for results sent one a message — once MAX_SUBJECTS subjects are pending."""
        if self.method not in PROVISION_METHODS:
            return False
        return is_chunk(response) or len(self.resident_codes) >= MAX_SUBJECTS

    def take_part(self, response: Any) -> CallFacts:
        """The part entry of `response` (see part_due): the subjects added since the last part (the
        conditions' residents) and those of the response's records, their items, the results' count. The
        subjects leave this call's facts, so its memory stays bounded whatever the stream's length; once the
        part is written (part_written) the call's count and items cover it too: the call's own entry counts
        every result, once."""
        self._parts += 1
        part = CallFacts(self.method, caller=self.caller, purpose=self.purpose, request_id=self.request_id)
        part.part, part.started = self._parts, self.started
        part.resident_codes, part._seen = self.resident_codes, self._seen
        self.resident_codes, self._seen = [], set()
        if is_chunk(response):
            for result in response.results:
                if result.HasField("record"):
                    part.add_view(result.record)
                else:
                    part.count += 1
        else:  # results sent one a message, already counted here (and their items: the call's so far)
            part.count, part.items = self.count - self._parted, set(self.items)
        return part

    def part_written(self, part: CallFacts, response: Any) -> None:
        if is_chunk(response):
            self.count += part.count
            self.items |= part.items
        self._parted = self.count

    def part_unwritten(self, part: CallFacts, response: Any) -> None:
        """A part whose entry could not be written, so nothing of it is sent: its subjects go back to the
        call's own entry, its response is not counted."""
        self.resident_codes, self._seen = part.resident_codes, part._seen
        if not is_chunk(response):
            self.count -= 1


def is_chunk(response: Any) -> bool:
    """A streamed response answering a chunk of conditions (BatchProvideResult.results)."""
    return "results" in response.DESCRIPTOR.fields_by_name and len(response.results) > 0


def _checked(value: str, form: re.Pattern[str]) -> str:
    """A caller's value as the trail may record it: itself when of its form, else INVALID ("" stays "")."""
    if not value or (len(value) <= 64 and form.fullmatch(value)):
        return value
    return INVALID


def bounded_method(method: str) -> str:
    """The name of a method a caller asked for, for the trail: itself when it has the form of a gRPC
    method name (whether served or not), else INVALID."""
    return method if len(method) <= 202 and _METHOD.fullmatch(method) else INVALID


def _valid_spiffe_id(text: str) -> str:
    """`text` when it is a well-formed SPIFFE ID, else "" (nothing unchecked reaches the trail)."""
    try:
        return SpiffeId.parse(text).uri
    except ValueError:
        return ""
