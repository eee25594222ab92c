"""What a call concerned and returned, for its audit entry (the readers that fill it are declared per method
in server.services.audited).

Only resident codes leave this module (the auditor hashes them with its key before anything is written),
plus the names of the items returned — never their values. Nothing a caller typed is recorded unchecked:
a purpose, request id, requester or method name that is not of its documented form (server/domain/limits.py)
is recorded as INVALID, a resident code that is not 11 digits not at all — so a refused call adds a
bounded entry to the trail whatever it carried.
"""

from __future__ import annotations

import re
import time
from typing import Any

from server.domain.codes import is_valid_resident_code
from server.identity.pki import SpiffeId

INVALID = "<invalid>"  # what the trail records of a caller's value that is not of its documented form
PURPOSE_FORM = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
REQUEST_ID_FORM = re.compile(r"[A-Za-z0-9._:-]{1,64}")
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

# View field → the SPEC §3.3 item it carries
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
_VIEW_ITEMS: dict[str, tuple[tuple[str, str], ...]] = {}  # view type → the items it can carry


class CallFacts:
    """One call's facts, filled by the chain and the method's declared readers."""

    __slots__ = (
        "_cap",
        "_parted",
        "_parts",
        "_seen",
        "applied",
        "caller",
        "claimed",
        "count",
        "items",
        "meter",
        "method",
        "outcome",
        "part",
        "purpose",
        "request_id",
        "requester",
        "resident_codes",
        "serial",
        "source",
        "started",
    )

    def __init__(self, method: str, *, meter: Any = None) -> None:
        self.method = method
        self.caller: SpiffeId | None = None
        self.claimed: SpiffeId | None = None  # a refused certificate's identity (never authenticated) …
        self.serial: int | None = None  # … and its serial
        self.purpose = ""
        self.request_id = ""
        self.requester = ""  # on whose behalf a server calls, when a valid SPIFFE ID
        self.outcome = "OK"
        self.resident_codes: list[str] = []
        self.items: set[str] = set()
        self.source = ""
        self.count = 0
        self.applied: int | None = None  # set by a call that applies notices: what it applied (its count)
        self.started = time.perf_counter()
        self.meter = meter  # the method's metrics (observability.calls.MethodMetrics)
        self._seen: set[str] | None = None
        # a provision's entry names every resident provided; other calls name at most MAX_SUBJECTS
        self._cap = None if method in PROVISION_METHODS else MAX_SUBJECTS
        self.part = 0  # n ≥ 1: these facts are the n-th part entry of a streamed provision (take_part)
        self._parts = 0  # part entries taken so far …
        self._parted = 0  # … and this call's count when the last was taken

    def add_code(self, code: str) -> None:
        if not is_valid_resident_code(code):
            return  # nothing names a resident but 11 digits; anything else is no subject
        codes = self.resident_codes
        if not codes:
            codes.append(code)
            return
        seen = self._seen
        if seen is None:
            seen = self._seen = set(codes)
        if code not in seen and (self._cap is None or len(codes) < self._cap):
            seen.add(code)
            codes.append(code)

    def add_view(self, view: Any) -> None:
        """A record returned (a ResidentView or a FuhyoView): its resident, the names of its items."""
        self.add_code(view.resident_code)
        self.count += 1
        kind = view.DESCRIPTOR.full_name
        items = _VIEW_ITEMS.get(kind)
        if items is None:
            names = view.DESCRIPTOR.fields_by_name
            items = _VIEW_ITEMS[kind] = tuple((f, i) for f, i in _ITEMS if f in names)
        for name, item in items:
            if getattr(view, name):
                self.items.add(item)

    # --- streamed provisions in parts (BatchProvide chunks) -------------------------------------------

    def part_due(self, response: Any) -> bool:
        """Whether a streamed provision's response is written as a part entry before it is sent: a chunk's
        results (`results`), or — for results sent one a message — once MAX_SUBJECTS subjects are pending."""
        return is_chunk(response) or len(self.resident_codes) >= MAX_SUBJECTS

    def take_part(self, response: Any) -> CallFacts:
        """The part entry of `response` (see part_due): the subjects added since the last part (the
        conditions' residents) and those of the response's records, their items, the results' count. The
        subjects leave this call's facts, so its memory stays bounded whatever the stream's length; once the
        part is written (part_written) the call's count and items cover it too: the call's own entry counts
        every result, once."""
        self._parts += 1
        part = CallFacts(self.method)
        part.caller, part.purpose, part.request_id = self.caller, self.purpose, self.request_id
        part.part, part.started = self._parts, self.started
        part.resident_codes, part._seen = self.resident_codes, self._seen
        self.resident_codes, self._seen = [], None
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
    """A BatchProvide answer to a chunk of conditions (its `results`; a single condition's has none)."""
    return len(response.results) > 0


def checked(value: str, form: re.Pattern[str]) -> str:
    """A caller's value as the trail may record it: itself when of its form, else INVALID ("" stays "")."""
    if not value or (len(value) <= 64 and form.fullmatch(value)):
        return value
    return INVALID


def bounded_method(method: str) -> str:
    """The name of a method a caller asked for, for the trail: itself when it has the form of a gRPC
    method name (whether served or not), else INVALID."""
    return method if len(method) <= 202 and _METHOD.fullmatch(method) else INVALID


def valid_spiffe_id(text: str) -> str:
    """`text` when it is a well-formed SPIFFE ID, else "" (nothing unchecked reaches the trail)."""
    try:
        return SpiffeId.parse(text).uri
    except ValueError:
        return ""
