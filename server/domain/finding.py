"""Finding the person a condition names: 住民票コード, 個人番号 or 4情報 (Provide, Lookup, national Query)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from juki.v1 import prefecture_pb2, records_pb2

from server.domain import validation as val
from server.domain.errors import DomainError, ErrorKind, Violations
from server.domain.search import SearchQuery, parse_query, run_search
from server.storage.record_file import RecordTxn
from server.storage.residents import ResidentTxn

MAX_MATCHES = 10


@dataclass(frozen=True)
class Condition:
    """A validated condition: exactly one of the three kinds."""

    kind: str  # "resident_code" | "my_number" | "four_info"
    value: str = ""
    query: SearchQuery | None = None

    def uses_my_number(self) -> bool:
        return self.kind == "my_number"

    def scans(self) -> bool:
        """A 4情報 condition walks an index (up to the scan limit): found in a worker thread, never on the
        event loop; a key lookup takes microseconds."""
        return self.kind == "four_info"


def parse_condition(
    kind: str | None,
    resident_code: str,
    my_number: str,
    four_info: prefecture_pb2.FourInfoQuery,
    *,
    today: dt.date,
    path: str = "",
) -> Condition:
    """Validate the oneof of a request (its WhichOneof name and fields) into a Condition."""
    v = Violations()
    prefix = f"{path}." if path else ""
    if kind == "resident_code":
        val.check_resident_code(v, f"{prefix}resident_code", resident_code)
        v.raise_if_any()
        return Condition(kind, resident_code)
    if kind == "my_number":
        val.check_my_number(v, f"{prefix}my_number", my_number)
        v.raise_if_any()
        return Condition(kind, my_number)
    if kind == "four_info":
        request = prefecture_pb2.SearchRequest(
            name_kana=four_info.name_kana,
            birth_date=four_info.birth_date,
            sex=four_info.sex,
            address_prefix=four_info.address_prefix,
        )
        return Condition(kind, query=parse_query(request, today=today))
    v.add(f"{prefix}condition", "required: resident_code, my_number or four_info")
    v.raise_if_any()
    raise AssertionError("unreachable")


def find(
    tx: RecordTxn, condition: Condition, *, include_removed: bool = False
) -> list[records_pb2.ResidentRecord]:
    """The records the condition names (at most MAX_MATCHES + 1, so a caller can tell 'too many')."""
    if condition.kind == "four_info":
        assert condition.query is not None
        query = condition.query
        if include_removed != query.include_removed:
            query = SearchQuery(
                query.kana, query.birth_from, query.birth_to, query.sex, query.address_prefix, include_removed
            )
        page = run_search(
            tx, query, None, page_size=MAX_MATCHES + 1, scan_limit=50_000, max_results=MAX_MATCHES + 1
        )
        return page.records
    if condition.kind == "resident_code":
        code: str | None = condition.value
    else:  # by My Number: only a resident file holds them (a 附票 file finds nobody)
        code = tx.code_by_my_number(condition.value) if isinstance(tx, ResidentTxn) else None
    record = tx.get(code) if code else None
    if record is None or (record.deleted_flag and not include_removed):
        return []
    return [record]


def too_many() -> DomainError:
    return DomainError(
        ErrorKind.FAILED_PRECONDITION,
        f"more than {MAX_MATCHES} persons match: narrow the 4情報 condition",
        reason="TOO_MANY_MATCHES",
    )
