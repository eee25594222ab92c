"""整合 (consistency check) between a municipality's view of its residents (or of the 附票 records it manages)
and ours (SPEC §5.1, §5.2).

Both sides reduce each resident to a record digest over the compared items, and each range of 住民票コード
(the first `prefix_length` digits) to a range digest; only ranges whose digests differ are compared record
by record, so two nearly equal views of 四日市 (≈305k residents) exchange a few digests and a few records.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from juki.v1 import prefecture_pb2, records_pb2

from server.domain import validation as val
from server.domain.errors import MAX_VIOLATIONS, Violations
from server.domain.limits import check_message

# The items compared, by name (what a difference reports).
ITEMS = (
    "name_kanji",
    "name_kana",
    "birth_date",
    "sex",
    "address",
    "my_number",
    "change_reason",
    "change_date",
    "removed",
)


def record_items(record: records_pb2.ResidentRecord, my_number: str) -> tuple[str, ...]:
    info = record.four_info
    return (
        info.name_kanji,
        info.name_kana,
        info.birth_date,
        str(int(info.sex)),
        info.address,
        my_number,
        str(int(record.change_reason)),
        record.change_date,
        "1" if record.deleted_flag else "0",
    )


def record_digest(record: records_pb2.ResidentRecord, my_number: str) -> bytes:
    """SHA-256 of the compared items (unit separators between them, so no two item lists collide)."""
    return items_digest(record_items(record, my_number))


# The items of a 附票 record compared by the 附票 server's 整合 (its 18 items less the code, which keys it,
# and 通知区分, which says how it changed: whether it is removed is compared instead).
FUHYO_ITEMS = (
    "name_kanji",
    "name_gaiji_count",
    "name_kana",
    "birth_date",
    "sex",
    "address_municipality_code",
    "address",
    "address_gaiji_count",
    "last_address",
    "last_address_gaiji_count",
    "change_date",
    "former_resident_code",
    "managing_municipality_code",
    "state_kind",
    "gaiji_flag",
    "gaiji_pattern",
    "removed",
)


def fuhyo_items(record: records_pb2.FuhyoRecord, removed: bool) -> tuple[str, ...]:
    """The FUHYO_ITEMS of a 附票 record (`removed`: it is removed, 消除)."""
    return (*(str(getattr(record, name)) for name in FUHYO_ITEMS[:-1]), "1" if removed else "0")


def fuhyo_digest(record: records_pb2.FuhyoRecord, removed: bool) -> bytes:
    return items_digest(fuhyo_items(record, removed))


def items_digest(items: tuple[str, ...]) -> bytes:
    return hashlib.sha256("\x1f".join(items).encode()).digest()


def differing_items(
    ours: tuple[str, ...], theirs: tuple[str, ...], names: tuple[str, ...] = ITEMS
) -> list[str]:
    return [name for name, a, b in zip(names, ours, theirs, strict=True) if a != b]


@dataclass(frozen=True)
class RangeSummary:
    prefix: str
    digest: bytes
    count: int


def range_digests(entries: Iterable[tuple[str, bytes]], prefix_length: int) -> Iterator[RangeSummary]:
    """(resident code, record digest) pairs in code order → one digest per range of codes."""
    current = ""
    hasher = hashlib.sha256()
    count = 0
    for code, digest in entries:
        prefix = code[:prefix_length]
        if prefix != current:
            if count:
                yield RangeSummary(current, hasher.digest(), count)
            current, hasher, count = prefix, hashlib.sha256(), 0
        hasher.update(code.encode() + digest)
        count += 1
    if count:
        yield RangeSummary(current, hasher.digest(), count)


def validate_ranges(ranges: prefecture_pb2.ReconcileRanges) -> None:
    """The first message of a 整合: every range a prefix of `prefix_length` ASCII digits, its digest at most
    a SHA-256 (a digest that is not one only differs). One pass over the ranges (a 整合 may carry many)."""
    v = Violations()
    check_message(v, ranges, "ranges", skip=frozenset({"ranges"}))
    length = ranges.prefix_length
    for i, summary in enumerate(ranges.ranges):
        prefix = summary.prefix
        if len(prefix) != length or not (prefix.isascii() and prefix.isdigit()):
            v.add(f"ranges.ranges[{i}].prefix", "the first prefix_length digits of a 住民票コード")
        if len(summary.digest) > 32:
            v.add(f"ranges.ranges[{i}].digest", "at most 32 bytes (a SHA-256)")
        if len(v.items) >= MAX_VIOLATIONS:
            break
    v.raise_if_any()


def validate_record(request: prefecture_pb2.ReconcileRequest) -> None:
    """A record of a 整合 is of the schema and names a resident by a well-formed 住民票コード."""
    v = Violations()
    check_message(v, request.record, "record")
    val.check_resident_code(v, "record.resident_code", request.record.resident_code)
    v.raise_if_any()
