"""The schema of every request at the boundary (SPEC §4.2): each string and bytes field of every request
message of every service has a length in characters and bytes and an alphabet; each enum field takes only
its defined values; repeated strings have a maximum count.

`check_message` applies the table to a decoded request, at every depth, and adds one field violation per
field that breaks it; the domain rules (check digits, dates, what a change may touch…) come on top, in the
same list of violations. A field the table does not know is refused: nothing unchecked goes further.
docs/limits.md is this table, rendered by `markdown_table` (a test keeps the two equal).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from server.domain.errors import Violations

_CONTROL = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
_SPACES = frozenset(" \u3000")


@dataclass(frozen=True)
class Alphabet:
    name: str
    doc: str
    bytes_per_char: int  # the most a character of this alphabet takes in UTF-8
    allows: Callable[[str], bool]


def _ascii(pattern: str) -> Callable[[str], bool]:
    compiled = re.compile(f"[{pattern}]*")
    return lambda value: compiled.fullmatch(value) is not None


def _text(value: str) -> bool:
    return (value.isascii() and value.isprintable()) or not any(
        unicodedata.category(ch) in _CONTROL for ch in value
    )


def _is_kana_char(ch: str) -> bool:
    code = ord(ch)
    return 0x3041 <= code <= 0x309F or 0x30A0 <= code <= 0x30FF or 0x31F0 <= code <= 0x31FF or ch in _SPACES


def _kana(value: str) -> bool:
    return all(_is_kana_char(c) for ch in value for c in unicodedata.normalize("NFKC", ch))


DIGITS = Alphabet("digits", "ASCII digits 0–9", 1, _ascii("0-9"))
DATE = Alphabet("date", "YYYY-MM-DD: ASCII digits and -", 1, _ascii("0-9-"))
MONTH = Alphabet("month", "YYYY-MM: ASCII digits and -", 1, _ascii("0-9-"))
TIMESTAMP = Alphabet(
    "rfc3339", "RFC 3339 time: ASCII digits, T t (or a space), Z z : + - .", 1, _ascii("0-9TtZz:+. -")
)
ASCII_ID = Alphabet("ascii-id", "A–Z a–z 0–9 . _ : -", 1, _ascii("A-Za-z0-9._:-"))
OPERATOR_ID = Alphabet(
    "operator-id", "A–Z a–z 0–9 . _ - (a SPIFFE ID's last segment)", 1, _ascii("A-Za-z0-9._-")
)
PURPOSE = Alphabet("purpose", "a–z 0–9 . _ - (a purpose id of the policy file)", 1, _ascii("a-z0-9._-"))
SPIFFE = Alphabet("spiffe-id", "spiffe://<trust-domain>/<role>/<id>: A–Z a–z 0–9 . _ - : /", 1,
                  _ascii("A-Za-z0-9._:/-"))  # fmt: skip
METHOD = Alphabet("method", "<Service>.<Method> or /juki.v1.<Service>/<Method>: A–Z a–z 0–9 . _ /", 1,
                  _ascii("A-Za-z0-9._/"))  # fmt: skip
BASE64URL = Alphabet("base64url", "A–Z a–z 0–9 - _ =", 1, _ascii("A-Za-z0-9_=-"))
BASE64 = Alphabet("base64", "A–Z a–z 0–9 + / =", 1, _ascii("A-Za-z0-9+/="))
TEXT = Alphabet(
    "text",
    "Unicode text without control, format, surrogate, private-use or line/paragraph separator characters "
    "(categories Cc Cf Cs Co Zl Zp: no NUL, ESC, newline, tab, bidi override…)",
    3,
    _text,
)
KANA = Alphabet(
    "kana",
    "hiragana, katakana (full or half width, as NFKC folds them), ー, ・, spaces (U+0020, U+3000)",
    3,
    _kana,
)
BINARY = Alphabet("bytes", "any bytes", 1, lambda value: True)


@dataclass(frozen=True)
class Limit:
    """A field's size in characters and UTF-8 bytes (for bytes fields: bytes), its alphabet, and why."""

    chars: int
    alphabet: Alphabet
    why: str
    bytes: int = 0

    def __post_init__(self) -> None:
        if not self.bytes:
            object.__setattr__(self, "bytes", self.chars * self.alphabet.bytes_per_char)


RESIDENT_CODE = Limit(11, DIGITS, "住民票コード: 11 digits")
MY_NUMBER = Limit(12, DIGITS, "個人番号: 12 digits, the last a check digit")
MUNICIPALITY = Limit(6, DIGITS, "市町村コード: 6 digits, the last a check digit")
DAY = Limit(10, DATE, "a date YYYY-MM-DD")
TIME = Limit(35, TIMESTAMP, "RFC 3339 with up to 9 fraction digits and an offset")
REQUEST_ID = Limit(64, ASCII_ID, "the caller's id of a request (audit trail, temporary area)")
PURPOSE_ID = Limit(64, PURPOSE, "a purpose id (事務) of the policy file; the policy decides which")
NAME_KANJI = Limit(100, TEXT, "氏名 (漢字): the register's 100-character field")
NAME_KANA = Limit(100, KANA, "ふりがな氏名: 100 characters; folded to 清音化かな for the index")
ADDRESS = Limit(200, TEXT, "住所: the register's 200-character field")
ID = Limit(64, ASCII_ID, "an identifier of the municipality's systems")
SPIFFE_ID = Limit(350, SPIFFE, "spiffe:// + trust domain (≤ 255) + role + id (≤ 64)")

LIMITS: dict[str, Limit] = {
    # records.proto (inside notices and 整合)
    "juki.v1.FourInfo.name_kanji": NAME_KANJI,
    "juki.v1.FourInfo.name_kana": NAME_KANA,
    "juki.v1.FourInfo.birth_date": DAY,
    "juki.v1.FourInfo.address": ADDRESS,
    "juki.v1.FormerSurname.kanji": Limit(50, TEXT, "旧氏 (漢字)"),
    "juki.v1.FormerSurname.kana": Limit(50, KANA, "旧氏 (ふりがな)"),
    "juki.v1.ResidentRecord.resident_code": RESIDENT_CODE,
    "juki.v1.ResidentRecord.my_number": MY_NUMBER,
    "juki.v1.ResidentRecord.change_date": DAY,
    "juki.v1.ResidentRecord.search_kana": Limit(600, KANA, "清音化かな: 100 kana, × 6 at most by NFKC (㌖)"),
    "juki.v1.ResidentRecord.municipality_code": MUNICIPALITY,
    "juki.v1.ResidentRecord.oaza_code": Limit(12, DIGITS, "大字・字コード: up to 12 digits"),
    "juki.v1.ResidentRecord.operator_id": ID,
    "juki.v1.ResidentRecord.terminal_id": ID,
    "juki.v1.ResidentRecord.timestamp": TIME,
    "juki.v1.ResidentRecord.notified_date": DAY,
    "juki.v1.ResidentRecord.removed_date": DAY,
    "juki.v1.FuhyoRecord.resident_code": RESIDENT_CODE,
    "juki.v1.FuhyoRecord.name_kanji": NAME_KANJI,
    "juki.v1.FuhyoRecord.name_kana": NAME_KANA,
    "juki.v1.FuhyoRecord.birth_date": DAY,
    "juki.v1.FuhyoRecord.address_municipality_code": MUNICIPALITY,
    "juki.v1.FuhyoRecord.address": ADDRESS,
    "juki.v1.FuhyoRecord.last_address": ADDRESS,
    "juki.v1.FuhyoRecord.change_date": DAY,
    "juki.v1.FuhyoRecord.former_resident_code": RESIDENT_CODE,
    "juki.v1.FuhyoRecord.managing_municipality_code": MUNICIPALITY,
    "juki.v1.FuhyoRecord.gaiji_pattern": Limit(
        4096, BASE64, "外字 glyph data, base64 (about ten 48×48 glyphs)"
    ),
    # prefecture.proto
    "juki.v1.ChangeNotice.municipality_code": MUNICIPALITY,
    "juki.v1.ChangeNotice.resident_code": RESIDENT_CODE,
    "juki.v1.ChangeNotice.change_date": DAY,
    "juki.v1.ChangeNotice.my_number": MY_NUMBER,
    "juki.v1.ChangeNotice.oaza_code": Limit(12, DIGITS, "大字・字コード: up to 12 digits"),
    "juki.v1.ChangeNotice.operator_id": ID,
    "juki.v1.ChangeNotice.terminal_id": ID,
    "juki.v1.ChangeNotice.timestamp": TIME,
    "juki.v1.LookupRequest.resident_code": RESIDENT_CODE,
    "juki.v1.LookupRequest.my_number": MY_NUMBER,
    "juki.v1.LookupRequest.purpose": PURPOSE_ID,
    "juki.v1.LookupRequest.request_id": REQUEST_ID,
    "juki.v1.SearchRequest.name_kana": NAME_KANA,
    "juki.v1.SearchRequest.birth_date": DAY,
    "juki.v1.SearchRequest.birth_date_from": DAY,
    "juki.v1.SearchRequest.birth_date_to": DAY,
    "juki.v1.SearchRequest.address_prefix": ADDRESS,
    "juki.v1.SearchRequest.purpose": PURPOSE_ID,
    "juki.v1.SearchRequest.page_token": Limit(
        1024, BASE64URL, "a sealed cursor: nonce, query digest, index key"
    ),
    "juki.v1.SearchRequest.request_id": REQUEST_ID,
    "juki.v1.FourInfoQuery.name_kana": NAME_KANA,
    "juki.v1.FourInfoQuery.birth_date": DAY,
    "juki.v1.FourInfoQuery.address_prefix": ADDRESS,
    "juki.v1.ProvideRequest.resident_code": RESIDENT_CODE,
    "juki.v1.ProvideRequest.my_number": MY_NUMBER,
    "juki.v1.ProvideRequest.purpose": PURPOSE_ID,
    "juki.v1.ProvideRequest.request_id": REQUEST_ID,
    "juki.v1.BatchProvideRequest.purpose": PURPOSE_ID,
    "juki.v1.BatchProvideRequest.approval_token": Limit(64, BASE64URL, "an approval token (32 characters)"),
    "juki.v1.BatchProvideRequest.condition_id": Limit(
        64, ASCII_ID, "the caller's id of a condition (echoed)"
    ),
    "juki.v1.BatchProvideRequest.resident_code": RESIDENT_CODE,
    "juki.v1.BatchProvideRequest.my_number": MY_NUMBER,
    "juki.v1.BatchCondition.condition_id": Limit(64, ASCII_ID, "the caller's id of a condition (echoed)"),
    "juki.v1.BatchCondition.resident_code": RESIDENT_CODE,
    "juki.v1.BatchCondition.my_number": MY_NUMBER,
    "juki.v1.DiscloseRequest.resident_code": RESIDENT_CODE,
    "juki.v1.DiscloseRequest.purpose": PURPOSE_ID,
    "juki.v1.DiscloseRequest.request_id": REQUEST_ID,
    "juki.v1.RangeDigest.prefix": Limit(6, DIGITS, "the first 1–6 digits of a 住民票コード"),
    "juki.v1.RangeDigest.digest": Limit(32, BINARY, "SHA-256", bytes=32),
    "juki.v1.ReconcileRanges.municipality_code": MUNICIPALITY,
    "juki.v1.QueryNationalRequest.resident_code": RESIDENT_CODE,
    "juki.v1.QueryNationalRequest.my_number": MY_NUMBER,
    "juki.v1.QueryNationalRequest.purpose": PURPOSE_ID,
    "juki.v1.QueryNationalRequest.request_id": REQUEST_ID,
    "juki.v1.FetchMyNumberRequest.resident_code": RESIDENT_CODE,
    "juki.v1.FetchMyNumberRequest.purpose": PURPOSE_ID,
    "juki.v1.FetchMyNumberRequest.requester": SPIFFE_ID,
    "juki.v1.FetchMyNumberRequest.request_id": REQUEST_ID,
    # fuhyo.proto
    "juki.v1.FuhyoNotice.managing_municipality_code": MUNICIPALITY,
    "juki.v1.FuhyoNotice.change_date": DAY,
    "juki.v1.FuhyoLookupRequest.resident_code": RESIDENT_CODE,
    "juki.v1.FuhyoLookupRequest.purpose": PURPOSE_ID,
    "juki.v1.FuhyoLookupRequest.request_id": REQUEST_ID,
    "juki.v1.FuhyoProvideRequest.resident_code": RESIDENT_CODE,
    "juki.v1.FuhyoProvideRequest.purpose": PURPOSE_ID,
    "juki.v1.FuhyoProvideRequest.request_id": REQUEST_ID,
    "juki.v1.RedeliverRequest.request_id": REQUEST_ID,
    "juki.v1.RedeliverRequest.purpose": PURPOSE_ID,
    "juki.v1.AckDeliveryRequest.request_id": REQUEST_ID,
    "juki.v1.AckDeliveryRequest.purpose": PURPOSE_ID,
    # national.proto
    "juki.v1.PropagatedChange.applied_at": TIME,
    "juki.v1.NotifyUpdatesRequest.prefecture_code": Limit(2, DIGITS, "都道府県コード: 2 digits"),
    "juki.v1.NationalQueryRequest.resident_code": RESIDENT_CODE,
    "juki.v1.NationalQueryRequest.my_number": MY_NUMBER,
    "juki.v1.NationalQueryRequest.purpose": PURPOSE_ID,
    "juki.v1.NationalQueryRequest.requester": SPIFFE_ID,
    "juki.v1.NationalQueryRequest.request_id": REQUEST_ID,
    # admin.proto
    "juki.v1.RegisterOperatorRequest.operator_id": Limit(
        64, OPERATOR_ID, "the <id> of spiffe://<td>/operator/<id>"
    ),
    "juki.v1.RegisterOperatorRequest.methods": Limit(
        64, METHOD, "<Service>.<Method> the policy grants operators"
    ),
    "juki.v1.RegisterOperatorRequest.purposes": PURPOSE_ID,
    "juki.v1.RegisterOperatorRequest.note": Limit(
        200, TEXT, "e.g. the operator's section; kept in the registry"
    ),
    "juki.v1.RevokeOperatorRequest.operator_id": Limit(
        64, OPERATOR_ID, "the <id> of spiffe://<td>/operator/<id>"
    ),
    "juki.v1.RevokeOperatorRequest.reason": Limit(200, TEXT, "kept in the registry (棚卸し)"),
    "juki.v1.IssueApprovalRequest.caller": SPIFFE_ID,
    "juki.v1.IssueApprovalRequest.purpose": PURPOSE_ID,
    "juki.v1.StatisticsRequest.month": Limit(7, MONTH, "YYYY-MM (JST), years 2000–2999"),
    "juki.v1.InclusionProofRequest.trail": Limit(8, ASCII_ID, '"" the main trail, or a worker trail "w1", …'),
    "juki.v1.ConsistencyProofRequest.trail": Limit(
        8, ASCII_ID, '"" the main trail, or a worker trail "w1", …'
    ),
}

# The most conditions one BatchProvideRequest carries in `conditions` (a chunk, answered by one message).
MAX_BATCH_CHUNK = 1000

# Repeated fields of scalars: the most elements a request may carry (repeated messages are bounded by
# their method: NotifyUpdatesRequest.changes ≤ 1000, BatchProvideRequest.conditions ≤ MAX_BATCH_CHUNK, a
# Reconcile's ranges by its own cap).
COUNTS: dict[str, int] = {
    "juki.v1.RegisterOperatorRequest.methods": 64,
    "juki.v1.RegisterOperatorRequest.purposes": 64,
}

_STRINGS = (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES)


def check_value(v: Violations, path: str, value: str | bytes, limit: Limit) -> None:
    """One string (or bytes) value against its limit: size first, then the alphabet."""
    if isinstance(value, bytes):
        if len(value) > limit.bytes:
            v.add(path, f"at most {limit.bytes} bytes")
        return
    if len(value) > limit.chars or (len(value) > limit.bytes // 4 and len(value.encode()) > limit.bytes):
        v.add(path, f"at most {limit.chars} characters ({limit.bytes} bytes in UTF-8)")
    elif not limit.alphabet.allows(value):
        v.add(path, f"only {limit.alphabet.doc}")


def check_message(
    v: Violations, message: Message, path: str = "", *, skip: frozenset[str] = frozenset()
) -> None:
    """Every field set in `message` (and the messages it holds) against the table; `skip` names top-level
    fields the caller checks otherwise."""
    prefix = f"{path}." if path else ""
    for fd, value in message.ListFields():
        if fd.name in skip:
            continue
        name = prefix + fd.name
        repeated = fd.is_repeated
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            if repeated:
                for i, element in enumerate(value):
                    check_message(v, element, f"{name}[{i}]")
            else:
                check_message(v, value, name)
        elif fd.type in _STRINGS:
            limit = LIMITS.get(fd.full_name)
            if limit is None:
                v.add(name, "not a field this server takes")
            elif repeated:
                most = COUNTS.get(fd.full_name, 0)
                if len(value) > most:
                    v.add(name, f"at most {most} elements")
                else:
                    for i, element in enumerate(value):
                        check_value(v, f"{name}[{i}]", element, limit)
            else:
                check_value(v, name, value, limit)
        elif fd.type == FieldDescriptor.TYPE_ENUM and fd.enum_type is not None:
            enum = fd.enum_type
            if any(number not in enum.values_by_number for number in (value if repeated else (value,))):
                v.add(name, "not a defined value of " + enum.name)


def max_bytes(descriptor: Any) -> int:
    """The most bytes a message of this type takes serialized when every field is within the table (a
    stored record is never larger: what is stored was checked). Scalars at their widest varint."""
    total = 0
    for fd in descriptor.fields:
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            one = max_bytes(fd.message_type) + 6  # tag + length
        elif fd.type in _STRINGS:
            limit = LIMITS.get(fd.full_name)
            one = (limit.bytes if limit else 0) + 6
        else:
            one = 2 + 10
        total += one * (COUNTS.get(fd.full_name, 1) if fd.is_repeated else 1)
    return total


def markdown_table() -> str:
    """docs/limits.md's table of fields (kept equal to it by a test)."""
    lines = [
        "| field | characters | bytes (UTF-8) | alphabet | why |",
        "|---|---|---|---|---|",
    ]
    for name, limit in LIMITS.items():
        field_name = name.removeprefix("juki.v1.")
        count = COUNTS.get(name)
        chars = "—" if limit.alphabet is BINARY else str(limit.chars)
        if count:
            chars += f" each, at most {count} elements"
        lines.append(f"| `{field_name}` | {chars} | {limit.bytes} | {limit.alphabet.name} | {limit.why} |")
    lines += ["", "| alphabet | what it admits |", "|---|---|"]
    seen: dict[str, Alphabet] = {}
    for limit in LIMITS.values():
        seen.setdefault(limit.alphabet.name, limit.alphabet)
    lines += [f"| {a.name} | {a.doc} |" for a in seen.values()]
    return "\n".join(lines) + "\n"
