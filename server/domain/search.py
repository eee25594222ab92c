"""4情報 search (SPEC §6.3): kana name (清音化かな prefix), birth date (exact or range), sex, address prefix.

At least two of the four are required. The most selective index is scanned (name, then date of birth, then
address); other criteria filter the entries. A request examines at most `scan_limit` index entries and a
search returns at most `max_results` in all, so every call is bounded; page tokens are sealed so that they
reveal nothing about the index, and bound to the search, the caller and the purpose.

The common queries are bounded in work by composite keys, at any store size (SPEC §6.3, fast at 10
million): kana prefix + exact date of birth seeks 清音化かな + NUL + YYYYMMDD in idx_name, and kana prefix +
sex (+ address prefix) seeks 清音化かな + NUL + sex + address in idx_name_address — once per distinct name
that begins with the prefix, so the entries examined are the matches plus at most two other keys per such
name, not everyone who bears the name. Results come in the order they always had (idx_name's: name, date
of birth, 住民票コード; a name's matches in idx_name_address are sorted into it) and page tokens hold idx_name
keys, so a token issued before these plans goes on after them. A name whose idx_name_address matches do
not fit in `scan_limit` is scanned in idx_name as before (the entries read to find that out are counted
in `SearchPage.examined`, which may then exceed the limit: at most about three times it).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from juki.v1 import prefecture_pb2, records_pb2

from server.domain import validation as val
from server.domain.errors import DomainError, ErrorKind, FieldViolation, Violations
from server.domain.kana import search_kana
from server.domain.limits import check_message
from server.storage.record_file import (
    ADDRESS_KEY_BYTES,
    NAME_KEY_BYTES,
    IndexHit,
    RecordFile,
    RecordTxn,
    index_text,
    name_address_within,
)

_INDEXES = ("idx_name", "idx_birth", "idx_address")
_TOKEN_HEAD = struct.Struct(">16sBI")


@dataclass(frozen=True)
class SearchQuery:
    kana: str
    birth_from: bytes
    birth_to: bytes
    sex: int
    address_prefix: str
    include_removed: bool

    def digest(self) -> bytes:
        parts = (self.kana, self.birth_from.decode(), self.birth_to.decode(), str(self.sex))
        text = "\x1f".join((*parts, self.address_prefix, str(self.include_removed)))
        return hashlib.sha256(text.encode()).digest()[:16]


@dataclass(frozen=True)
class Cursor:
    index: int
    returned: int
    last_key: bytes


@dataclass(frozen=True)
class SearchPage:
    records: list[records_pb2.ResidentRecord]
    next_cursor: Cursor | None
    capped: bool
    examined: int = 0  # index entries looked at for this page
    at_limit: bool = False  # stopped because `scan_limit` entries were examined (not for the page's end)


# index entries a search may read on the event loop before a worker thread takes it: the bounded plans fit
# (at 10M residents 998 of 1,000 sample kana + sex + 市町村 searches, at most 1.7 ms; kana + birth date all)
ON_LOOP_EXAMINED = 256
_NAME_DONE = b"\xff"  # after name + NUL in a cursor: every entry of that name is behind it


class _Work:
    """Entries read besides those the scan yields (a name's group read again, or too large to sort)."""

    def __init__(self) -> None:
        self.extra = 0


def parse_query(request: prefecture_pb2.SearchRequest, *, today: dt.date) -> SearchQuery:
    """Validate a search request and fold it into a query; refuse fewer than two of the four."""
    v = Violations()
    check_message(v, request)
    kana = ""
    if request.name_kana:
        val.check_kana(v, "name_kana", request.name_kana)
        kana = search_kana(request.name_kana)
    birth_from = birth_to = b""
    if request.birth_date:
        if request.birth_date_from or request.birth_date_to:
            v.add("birth_date", "give either birth_date or a range, not both")
        val.check_date(v, "birth_date", request.birth_date, today=today)
        birth_from = birth_to = request.birth_date.replace("-", "").encode()
    elif request.birth_date_from or request.birth_date_to:
        val.check_date(v, "birth_date_from", request.birth_date_from, today=today)
        val.check_date(v, "birth_date_to", request.birth_date_to, today=today)
        birth_from = request.birth_date_from.replace("-", "").encode()
        birth_to = request.birth_date_to.replace("-", "").encode()
        if birth_from > birth_to:
            v.add("birth_date_to", "must not be before birth_date_from")
    val.check_sex(v, "sex", request.sex, required=False)
    val.check_text(v, "address_prefix", request.address_prefix, max_len=200, required=False)
    if request.page_size > 100:
        v.add("page_size", "at most 100")
    given = sum(bool(x) for x in (kana, birth_from, request.sex, request.address_prefix))
    if given < 2:
        v.add("name_kana", "at least two of name_kana, date of birth, sex and address_prefix are required")
    v.raise_if_any()
    return SearchQuery(
        kana, birth_from, birth_to, request.sex, request.address_prefix, request.include_removed
    )


def _plan(query: SearchQuery) -> tuple[int, bytes, bytes | None]:
    """(index, key prefix, stop key) of the most selective index for this query."""
    if query.kana:
        return 0, index_text(query.kana, NAME_KEY_BYTES), None
    if query.birth_from:
        if query.birth_from == query.birth_to:
            sex = bytes((query.sex,)) if query.sex else b""
            return 1, query.birth_from + sex, None
        return 1, b"", query.birth_to + b"\xff"
    return 2, index_text(query.address_prefix, ADDRESS_KEY_BYTES), None


def _entries(
    tx: RecordTxn, query: SearchQuery, start: bytes, scan_limit: int, work: _Work
) -> Iterator[tuple[bytes, IndexHit | None]]:
    """(key of the plan's index, hit) for each index entry looked at, in that index's order; hit None for a
    key that only ends a name's range."""
    index, prefix, stop = _plan(query)
    if index == 0 and query.birth_from and query.birth_from == query.birth_to:
        return tx.scan_by_name("idx_name", start, prefix, query.birth_from)
    if index == 0 and query.sex:
        return _by_name_and_address(tx, query, prefix, start, scan_limit, work)
    return ((hit.key, hit) for hit in tx.scan(_INDEXES[index], start, prefix, stop))


def _by_name_and_address(
    tx: RecordTxn, query: SearchQuery, prefix: bytes, start: bytes, scan_limit: int, work: _Work
) -> Iterator[tuple[bytes, IndexHit | None]]:
    """kana + sex (+ address prefix): name by name, the name's entries of idx_name_address with that sex
    and address, sorted into idx_name's order and given with their idx_name keys (the cursor's keys)."""
    nul = start.find(b"\x00")
    after = b"" if nul < 0 else start  # a cursor: go on after this idx_name key, inside its name
    seek = prefix if nul < 0 else start[: nul + 1]
    if nul >= 0 and start[nul + 1 :] == _NAME_DONE:
        seek, after = start[:nul] + b"\x01", b""

    def within(name: bytes) -> bytes:
        return name_address_within(name, query.sex, query.address_prefix)

    while (group := tx.name_group("idx_name_address", seek, prefix, within, scan_limit)) is not None:
        base = group.name + b"\x00"
        seek = group.name + b"\x01"
        if group.overflow:  # too many to sort in one request: this name as idx_name has it
            work.extra += group.looked
            for hit in tx.scan("idx_name", max(after, base), base, seek):
                yield hit.key, hit
        else:
            ordered = sorted((base + hit.birth + hit.resident_code.encode(), hit) for hit in group.hits)
            for key, hit in ordered:
                if key > after:
                    yield key, hit
                else:
                    work.extra += 1
            for _ in range(group.looked - len(group.hits)):
                yield base + _NAME_DONE, None
        after = b""


def run_search(
    tx: RecordTxn,
    query: SearchQuery,
    cursor: Cursor | None,
    *,
    page_size: int,
    scan_limit: int,
    max_results: int,
) -> SearchPage:
    index, prefix, _ = _plan(query)
    start = cursor.last_key if cursor else (query.birth_from if index == 1 and not prefix else prefix)
    returned = cursor.returned if cursor else 0
    records: list[records_pb2.ResidentRecord] = []
    examined = 0
    work = _Work()
    last_key = start
    for key, hit in _entries(tx, query, start, scan_limit, work):
        if returned + len(records) >= max_results:
            return SearchPage(records, None, capped=True, examined=examined + work.extra)
        if examined >= scan_limit:
            next_cursor = Cursor(index, returned + len(records), last_key)
            return SearchPage(
                records, next_cursor, capped=True, examined=examined + work.extra, at_limit=True
            )
        examined += 1
        last_key = key
        if hit is None:
            continue
        if hit.removed and not query.include_removed:
            continue
        if query.sex and hit.sex != query.sex:
            continue
        if query.birth_from and not (query.birth_from <= hit.birth <= query.birth_to):
            continue
        record = tx.get(hit.resident_code)
        if record is None:
            continue
        if query.kana and not record.search_kana.startswith(query.kana):
            continue
        if query.address_prefix and not record.four_info.address.startswith(query.address_prefix):
            continue
        records.append(record)
        if len(records) >= page_size:
            next_cursor = Cursor(index, returned + len(records), last_key)
            return SearchPage(records, next_cursor, capped=False, examined=examined + work.extra)
    return SearchPage(records, None, capped=False, examined=examined + work.extra)


@dataclass(frozen=True)
class Searcher:
    """One 4情報 search request, start to finish, for any record server (the prefectural and the 附票)."""

    tokens: PageTokens
    page_size: int = 20
    scan_limit: int = 50_000
    max_results: int = 1000

    def search(
        self, store: RecordFile[Any], request: prefecture_pb2.SearchRequest, *, caller: str, today: dt.date
    ) -> tuple[list[records_pb2.ResidentRecord], str, bool]:
        """(records, next page token, capped); DomainError (INVALID_ARGUMENT) for a bad request or token.
        A scan (up to `scan_limit` index entries, see the module): call it in a worker thread, not on the
        event loop (`answer` decides).

        `caller` (SPIFFE ID) and the request's purpose are bound into the page token: another caller, or the
        same one under another purpose, cannot go on with it."""
        found = self._page(store, request, caller, today, self.scan_limit)
        assert found is not None  # the whole scan_limit: a page, always
        return found

    def search_within(
        self,
        store: RecordFile[Any],
        request: prefecture_pb2.SearchRequest,
        *,
        caller: str,
        today: dt.date,
        budget: int,
    ) -> tuple[list[records_pb2.ResidentRecord], str, bool] | None:
        """`search` examining at most `budget` index entries (fit for the event loop); None when the page
        needs more (then `search` in a thread, from the start)."""
        return self._page(store, request, caller, today, min(budget, self.scan_limit))

    async def answer(
        self, store: RecordFile[Any], request: prefecture_pb2.SearchRequest, *, caller: str, today: dt.date
    ) -> tuple[list[records_pb2.ResidentRecord], str, bool]:
        """`search` for a handler: on the event loop while it examines at most ON_LOOP_EXAMINED entries (the
        bounded plans: kana + birth date, kana + sex + 市町村 — the bearers of a name in one place), else
        again from the start in a worker thread, so no scan stalls the loop."""
        found = self.search_within(store, request, caller=caller, today=today, budget=ON_LOOP_EXAMINED)
        if found is None:
            found = await asyncio.to_thread(self.search, store, request, caller=caller, today=today)
        return found

    def _page(
        self,
        store: RecordFile[Any],
        request: prefecture_pb2.SearchRequest,
        caller: str,
        today: dt.date,
        limit: int,
    ) -> tuple[list[records_pb2.ResidentRecord], str, bool] | None:
        query = parse_query(request, today=today)
        v = Violations()
        val.check_request_id(v, "request_id", request.request_id)
        v.raise_if_any()
        bound = (caller, request.purpose)
        cursor = self.tokens.open(query, request.page_token, *bound) if request.page_token else None
        with store.reader() as tx:
            page = run_search(
                tx,
                query,
                cursor,
                page_size=request.page_size or self.page_size,
                scan_limit=limit,
                max_results=self.max_results,
            )
        if page.at_limit and limit < self.scan_limit:
            return None  # over the budget: the whole search belongs in a thread
        token = self.tokens.seal(query, page.next_cursor, *bound) if page.next_cursor else ""
        return page.records, token, page.capped


class PageTokens:
    """Seals cursors into opaque page tokens (AES-256-GCM), bound to their query, to the caller and to the
    purpose it stated (associated data: a token opens only for the same three)."""

    def __init__(self, secret: bytes) -> None:
        self._aead = AESGCM(hmac.digest(secret, b"juki search page token v1", "sha256"))

    @staticmethod
    def _bound(caller: str, purpose: str) -> bytes:
        return b"juki page token\x1f" + caller.encode() + b"\x1f" + purpose.encode()

    def seal(self, query: SearchQuery, cursor: Cursor, caller: str, purpose: str) -> str:
        body = _TOKEN_HEAD.pack(query.digest(), cursor.index, cursor.returned) + cursor.last_key
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, body, self._bound(caller, purpose))
        return base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, query: SearchQuery, token: str, caller: str, purpose: str) -> Cursor:
        """The cursor of a token of this query, caller and purpose; anything else is INVALID_ARGUMENT,
        with one message whatever differs."""
        invalid = DomainError(
            ErrorKind.INVALID_ARGUMENT,
            "page_token is not a token of this search",
            reason="INVALID_FIELDS",
            violations=[FieldViolation("page_token", "not a token of this search")],
        )
        try:
            raw = base64.urlsafe_b64decode(token.encode())
            body = self._aead.decrypt(raw[:12], raw[12:], self._bound(caller, purpose))
        except (ValueError, InvalidTag) as exc:
            raise invalid from exc
        if len(body) < _TOKEN_HEAD.size:
            raise invalid
        digest, index, returned = _TOKEN_HEAD.unpack(body[: _TOKEN_HEAD.size])
        if digest != query.digest() or index >= len(_INDEXES):
            raise invalid
        return Cursor(index, returned, body[_TOKEN_HEAD.size :])
