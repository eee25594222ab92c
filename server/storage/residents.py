"""The prefectural server's resident store on LMDB (都道府県知事保存本人確認情報ファイル).

Named databases of one environment:

  records          住民票コード → ResidentRecord (protobuf, My Number cleared)
  my_numbers       住民票コード → sealed My Number (AES-256-GCM)
  my_number_index  HMAC-SHA-256(My Number) → 住民票コード
  history          住民票コード + u64 counter → previous version (sealed My Number + ResidentRecord)
  idx_name         清音化かな + NUL + YYYYMMDD + 住民票コード → state, sex, YYYYMMDD
  idx_birth        YYYYMMDD + sex + 住民票コード → the same
  idx_address      address + NUL + 住民票コード → the same
  idx_name_address 清音化かな + NUL + sex + address + NUL + 住民票コード → the same (kana + sex + address
                   prefix searches seek it once per distinct name: server.domain.search; the kana cut as in
                   idx_name, the address to what is left of the key's 511 bytes)
                   (the kana cut to NAME_KEY_BYTES, the address to ADDRESS_KEY_BYTES of UTF-8, at a
                   character: every key fits LMDB's 511 bytes whatever NFKC makes of a name, and a key
                   that fitted before is unchanged; a search filters on the record, so a longer name or
                   address is still found by its whole prefix)
  idx_municipality 市町村コード + 住民票コード → "" (整合: record digests are computed when asked, from the
                   record and its opened My Number, never stored: a plain hash over the items would give
                   the My Number away to brute force)
  idx_removed      removal date YYYYMMDD + 住民票コード → "" (消除者, for the 150-year retention)
  sequences        市町村コード → last applied 更新順番号 (u64)
  applied          市町村コード + u64 sequence → keyed notice digest (HMAC, MyNumberSealer.keyed_digest) +
                   ApplyResult (for idempotent replay)
  outbox           u64 counter → applied ChangeNotice (sealed), for the national server (SPEC §6.2)
  outbox_aside     stream + NUL + outbox key → a change set aside by the relay (refused for good by the
                   national server, or held behind such a change of its stream): times, reason, the change
                   sealed as it was in the outbox (server.propagation.relay)
  meta             counters and the schema version

Schema 3 (this one) adds idx_name_address; schema 2 keyed the applied digests and dropped the record
digests. An older store is migrated when opened for writing, in one transaction (schema 1 by
`migrate_schema_1`, then schema 2 by `RecordFile.build_name_address_index`). docs/data-at-rest.md lists
every database of every server.

Nothing here knows about gRPC; the domain layer decides what a change may do.
"""

from __future__ import annotations

import functools
import logging
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from juki.v1 import records_pb2

from server.domain.kana import search_kana
from server.domain.reconcile import record_digest
from server.storage.record_file import (
    ADDRESS_KEY_BYTES,
    MAX_KEY_BYTES,
    NAME_KEY_BYTES,
    SHARED_DB_NAMES,
    AsideChange,
    IndexHit,
    RecordFile,
    RecordTxn,
    dob_key,
    index_keys,
    index_text,
    u64,
)

log = logging.getLogger(__name__)

DB_NAMES = ("records", "my_numbers", "my_number_index", "history", *SHARED_DB_NAMES)
SCHEMA_VERSION = b"3"
_U16 = struct.Struct(">H")
__all__ = [
    "ADDRESS_KEY_BYTES",
    "DB_NAMES",
    "MAX_KEY_BYTES",
    "NAME_KEY_BYTES",
    "AsideChange",
    "IndexHit",
    "ResidentFile",
    "ResidentStore",
    "ResidentTxn",
    "index_text",
]


_u64 = u64
_dob_key = dob_key
_index_keys = index_keys


def _without_my_number(record: records_pb2.ResidentRecord) -> bytes:
    """The record serialized with My Number cleared (and no field outside the schema: defence in depth
    behind the chain, which discards unknown fields of every request), leaving the My Number as it was."""
    record.DiscardUnknownFields()
    if not record.my_number:
        return bytes(record.SerializeToString())
    number = record.my_number
    record.my_number = ""
    try:
        return bytes(record.SerializeToString())
    finally:
        record.my_number = number


def _history_value(sealed: bytes, record: bytes) -> bytes:
    """A history entry: length of the sealed My Number, the sealed My Number, the record without it."""
    return _U16.pack(len(sealed)) + sealed + record


@dataclass(frozen=True, slots=True)
class HistoryVersion:
    record: records_pb2.ResidentRecord
    my_number: str


class ResidentTxn(RecordTxn):
    """Record-level operations on a resident file inside one LMDB transaction (read or write)."""

    _store: ResidentFile

    # reads ---------------------------------------------------------------------------------------
    def get(self, resident_code: str) -> records_pb2.ResidentRecord | None:
        raw = self._txn.get(resident_code.encode(), db=self._dbs["records"])
        if raw is None:
            return None
        record = records_pb2.ResidentRecord()
        record.ParseFromString(raw)
        return record

    def my_number(self, resident_code: str) -> str:
        sealed = self._txn.get(resident_code.encode(), db=self._dbs["my_numbers"])
        return "" if sealed is None else self._store.sealer.open(resident_code, sealed)

    def code_by_my_number(self, my_number: str) -> str | None:
        raw = self._txn.get(self._store.sealer.index_key(my_number), db=self._dbs["my_number_index"])
        return None if raw is None else bytes(raw).decode()

    def history(self, resident_code: str) -> list[HistoryVersion]:
        prefix = resident_code.encode()
        versions: list[HistoryVersion] = []
        with self._txn.cursor(db=self._dbs["history"]) as cur:
            if not cur.set_range(prefix):
                return versions
            for key, value in cur:
                if not key.startswith(prefix):
                    break
                (seal_len,) = struct.unpack(">H", value[:2])
                sealed = bytes(value[2 : 2 + seal_len])
                record = records_pb2.ResidentRecord()
                record.ParseFromString(value[2 + seal_len :])
                number = self._store.sealer.open(resident_code, sealed) if sealed else ""
                versions.append(HistoryVersion(record, number))
        return versions

    def record_digest(self, resident_code: str) -> bytes | None:
        """From the record and its opened My Number (a plain hash of the items stored would give the
        number away to brute force, so none is stored)."""
        record = self.get(resident_code)
        return None if record is None else record_digest(record, self.my_number(resident_code))

    # writes --------------------------------------------------------------------------------------
    def put_record(self, record: records_pb2.ResidentRecord, my_number: str) -> None:
        """Write the current version of a record with its indexes, replacing the previous version's."""
        code = record.resident_code
        key = code.encode()
        previous = self.get(code)
        if previous is not None:
            old_number = self.my_number(code)
            if old_number and old_number != my_number:
                self._txn.delete(self._store.sealer.index_key(old_number), db=self._dbs["my_number_index"])
        record.search_kana = search_kana(record.four_info.name_kana)
        self._txn.put(key, _without_my_number(record), db=self._dbs["records"])
        if my_number:
            self._txn.put(key, self._store.sealer.seal(code, my_number), db=self._dbs["my_numbers"])
            self._txn.put(self._store.sealer.index_key(my_number), key, db=self._dbs["my_number_index"])
        self._reindex(previous, record)

    def erase_person(self, resident_code: str) -> int:
        """Erase a removed person wholly (record, My Number, indexes, history); how many history entries."""
        record = self.get(resident_code)
        if record is None or not record.deleted_flag:
            return 0
        key = resident_code.encode()
        number = self.my_number(resident_code)
        if number:
            self._txn.delete(self._store.sealer.index_key(number), db=self._dbs["my_number_index"])
        self._reindex(record, None)
        self._txn.delete(key, db=self._dbs["my_numbers"])
        self._txn.delete(key, db=self._dbs["records"])
        return self._erase_history(resident_code)

    def add_history(self, record: records_pb2.ResidentRecord, my_number: str) -> None:
        """Keep a previous version (with its sealed My Number) as history."""
        sealed = self._store.sealer.seal(record.resident_code, my_number) if my_number else b""
        value = _history_value(sealed, _without_my_number(record))
        counter = self._next_counter(b"history_counter")
        self._txn.put(record.resident_code.encode() + _u64(counter), value, db=self._dbs["history"])


# What a bulk load writes for one resident, prepared without keys (so another process may do it), in two
# parts. PreparedRecord: resident code, record (My Number cleared), My Number, idx_removed key (or None),
# and per earlier version (resident code, My Number, record with My Number cleared): BulkLoad seals the
# numbers. IndexEntries: the keys of idx_name, idx_birth, idx_address and idx_name_address, the value they
# share, the idx_municipality key (its value is empty): IndexLists sorts them, in whichever process
# prepared them.
PreparedRecord = tuple[bytes, bytes, str, bytes | None, tuple[tuple[bytes, str, bytes], ...]]
IndexEntries = tuple[bytes, bytes, bytes, bytes, bytes, bytes]
INDEX_DATABASES = ("idx_name", "idx_birth", "idx_address", "idx_name_address", "idx_municipality")

# Folding is pure and names repeat (a population has far fewer distinct names than people).
_search_kana_cached = functools.lru_cache(maxsize=1 << 16)(search_kana)


def prepare_resident(
    record: records_pb2.ResidentRecord,
    my_number: str,
    history: Sequence[records_pb2.ResidentRecord] = (),
) -> tuple[PreparedRecord, IndexEntries]:
    """Everything `BulkLoad` writes for a resident that needs no key. Sets the record's search_kana, as
    `put_record` does."""
    code = record.resident_code.encode()
    info = record.four_info
    kana = _search_kana_cached(info.name_kana)
    record.search_kana = kana
    removed = record.deleted_flag
    name, birth, address, name_address, value = _index_keys(
        kana, info.birth_date, info.sex, info.address, removed, code
    )
    older = (
        tuple((old.resident_code.encode(), old.my_number, _without_my_number(old)) for old in history)
        if history
        else ()
    )
    return (
        (
            code,
            _without_my_number(record),
            my_number,
            _dob_key(record.removed_date) + code if removed else None,
            older,
        ),
        (
            name,
            birth,
            address,
            name_address,
            value,
            record.municipality_code.encode() + code,
        ),
    )


_Entry = tuple[bytes, bytes]
_BY_KEY = itemgetter(0)


class IndexLists:
    """The entries of the 4情報 and municipality indexes (INDEX_DATABASES) of a bulk load, gathered and then
    sorted, here or in the process that prepared them."""

    def __init__(self) -> None:
        self._lists: tuple[list[_Entry], ...] = tuple([] for _ in INDEX_DATABASES)

    def add(self, residents: Iterable[IndexEntries]) -> None:
        idx_name, idx_birth, idx_address, idx_name_address, idx_municipality = self._lists
        for name, birth, address, name_address, value, municipality in residents:
            idx_name.append((name, value))
            idx_birth.append((birth, value))
            idx_address.append((address, value))
            idx_name_address.append((name_address, value))
            idx_municipality.append((municipality, b""))

    def sorted(self) -> Iterator[list[_Entry]]:
        """Each database's entries sorted by key, in the order of INDEX_DATABASES (and let go of here)."""
        lists, self._lists = list(self._lists), tuple([] for _ in INDEX_DATABASES)
        for n, entries in enumerate(lists):
            lists[n] = []
            entries.sort(key=_BY_KEY)
            yield entries


class BulkLoad:
    """New residents for a store that holds none yet (seeding a synthetic population).

    It gathers, per database, what `put_record` (after `add_history` for each earlier version) would write;
    `write` sorts each database's entries and appends them in key order, all in one durable transaction.
    Sorted appends fill B-tree pages and write each page once, where puts at random keys touch most pages
    of every tree again at each commit and leave them half full.

    The result is entry for entry what the per-record path writes (only the random nonces of the sealed
    My Numbers differ). Resident codes must be distinct, and so must My Numbers; `write` refuses a store
    that already holds records.
    """

    def __init__(self, store: ResidentFile) -> None:
        self._store = store
        self._databases: dict[str, list[_Entry]] = {
            name: [] for name in ("records", "my_numbers", "my_number_index", "idx_removed")
        }
        # (resident code, n-th history entry of this load, value): the key takes the store's counter later
        self._history: list[tuple[bytes, int, bytes]] = []
        self._indexes = IndexLists()
        self.count = 0

    def add(
        self,
        record: records_pb2.ResidentRecord,
        my_number: str,
        history: Sequence[records_pb2.ResidentRecord] = (),
    ) -> None:
        """A resident's current version and its earlier versions (oldest first, each with the My Number
        it carries), as `put_record` and `add_history` take them."""
        prepared, indexes = prepare_resident(record, my_number, history)
        self.add_prepared((prepared,))
        self.add_indexes((indexes,))

    def add_prepared(self, residents: Iterable[PreparedRecord]) -> None:
        """Residents prepared by `prepare_resident` (first part): seal their My Numbers, keep the entries."""
        sealer = self._store.sealer
        seal, index_key = sealer.seal, sealer.index_key
        records, my_numbers, my_number_index, idx_removed = self._databases.values()
        history = self._history
        added = len(records)
        for code, record, number, removed, older in residents:
            for old_code, old_number, old_record in older:
                sealed = seal(old_code.decode(), old_number) if old_number else b""
                history.append((old_code, len(history), _history_value(sealed, old_record)))
            records.append((code, record))
            if number:
                my_numbers.append((code, seal(code.decode(), number)))
                my_number_index.append((index_key(number), code))
            if removed is not None:
                idx_removed.append((removed, b""))
        self.count += len(records) - added

    def add_indexes(self, residents: Iterable[IndexEntries]) -> None:
        """Residents' index entries (second part of `prepare_resident`), unless they are sorted elsewhere."""
        self._indexes.add(residents)

    def write(self, sorted_indexes: Iterator[list[_Entry]] | None = None) -> int:
        """Write everything in one transaction, durable on return; the number of residents.

        `sorted_indexes` gives the entries of INDEX_DATABASES sorted (in that order) when another process
        gathered and sorted them (half of all entries) while this one sorts and writes the rest: a list
        whose entries lie all over memory, as they were added, costs several times more to sort and to
        write than one just unpacked in key order.
        """
        self._history.sort(key=itemgetter(0, 1))
        for entries in self._databases.values():
            entries.sort(key=_BY_KEY)
        history = [(code, value) for code, _, value in self._history]
        size = sum(_size_estimate(entries, 0) for entries in self._databases.values())
        size += _size_estimate(history, 8)
        # Index entries repeat no more of a resident than its record holds, plus fixed-size parts.
        size += _size_estimate(self._databases["records"], 200)
        # Room for everything up front: a full map would abort the transaction and start it again.
        self._store.env.reserve(2 * size)
        later = _Later(sorted_indexes if sorted_indexes is not None else self._indexes.sorted())
        self._store.env.write_sync(lambda txn: self._write(txn, later))
        return self.count

    def _write(self, txn: Any, later: _Later) -> None:
        tx = ResidentTxn(self._store, txn)
        if tx.count("records"):
            raise ValueError("a bulk load needs a store without records")
        for name, entries in self._databases.items():
            self._append(txn, name, entries)
        first = tx.counter(b"history_counter") + 1
        self._append(txn, "history", [(code + _u64(first + n), value) for code, n, value in self._history])
        for n, name in enumerate(INDEX_DATABASES):
            self._append(txn, name, later.get(n))
        if self._history:
            tx.bump(b"history_counter", len(self._history))
        if self._databases["idx_removed"]:
            tx.bump_signed(b"records_removed", len(self._databases["idx_removed"]))

    def _append(self, txn: Any, name: str, entries: list[_Entry]) -> None:
        db = self._store.env.dbs[name]
        # Append (no search, full pages) when the database is empty, as it is in a new store.
        append = txn.stat(db)["entries"] == 0
        with txn.cursor(db=db) as cursor:
            consumed, added = cursor.putmulti(entries, append=append)
        if added != consumed:
            raise ValueError(f"a bulk load needs distinct keys: {consumed - added} repeated in {name}")


class _Later:
    """Sorted lists taken from an iterator as they are needed, and kept: a transaction that found the map
    full runs again."""

    def __init__(self, sorted_lists: Iterator[list[_Entry]]) -> None:
        self._sorted = sorted_lists
        self._got: list[list[_Entry]] = []

    def get(self, n: int) -> list[_Entry]:
        while len(self._got) <= n:
            self._got.append(next(self._sorted))
        return self._got[n]


def _size_estimate(entries: list[_Entry], extra: int) -> int:
    """Bytes a database's entries take in full LMDB pages: a sample's mean, `extra` bytes more per entry,
    plus the node header."""
    if not entries:
        return 0
    sample = entries[:: max(1, len(entries) // 1000)]
    return len(entries) * (sum(len(k) + len(v) for k, v in sample) // len(sample) + extra + 16)


class ResidentFile(RecordFile[ResidentTxn]):
    """A resident file (都道府県知事保存本人確認情報ファイル, or the national server's): opening and migrating
    its environment, and its domain operations (RecordFile's, and those below)."""

    txn_type = ResidentTxn
    schema_version = SCHEMA_VERSION

    def _migrations(self) -> dict[bytes, tuple[Callable[[Any], dict[str, int]], str]]:
        return {
            b"1": (self.migrate_schema_1, "store migrated to schema 2 (keyed digests)"),
            b"2": (self.build_name_address_index, "store migrated to schema 3 (idx_name_address built)"),
        }

    def _opened(self, txn: Any) -> None:
        by_municipality = self.env.dbs["idx_municipality"]
        if txn.stat(by_municipality)["entries"] == 0 and txn.stat(self.env.dbs["records"])["entries"]:
            # a store from before the 整合 index: build it once from the records
            with txn.cursor(db=self.env.dbs["records"]) as cur:
                for key, raw in cur:
                    record = records_pb2.ResidentRecord()
                    record.ParseFromString(raw)
                    txn.put(record.municipality_code.encode() + bytes(key), b"", db=by_municipality)
                    if record.deleted_flag:
                        txn.put(
                            _dob_key(record.removed_date) + bytes(key), b"", db=self.env.dbs["idx_removed"]
                        )

    def migrate_schema_1(self, txn: Any) -> dict[str, int]:
        """Schema 1 kept plain SHA-256 digests over data holding My Numbers: of each record's items in
        idx_municipality, of each applied notice in `applied`. Drop the first (computed when asked now) and
        key the second in place (the digest of a notice is all a replay needs: HMAC of it is what schema 2
        stores). One transaction: the store is migrated whole or not at all. Counts, for the log."""
        by_municipality = self.env.dbs["idx_municipality"]
        with txn.cursor(db=by_municipality) as cur:
            keys = [(bytes(key), b"") for key in cur.iternext(keys=True, values=False)]
        txn.drop(by_municipality, delete=False)  # then appended again in key order: full pages
        with txn.cursor(db=by_municipality) as cur:
            cur.putmulti(keys, append=True)
        applied = self.env.dbs["applied"]
        with txn.cursor(db=applied) as cur:
            entries = [(bytes(key), bytes(value)) for key, value in cur]
        for key, value in entries:
            txn.put(key, self.sealer.keyed_digest(value[:32]) + value[32:], db=applied)
        return {"record_digests_dropped": len(keys), "notice_digests_keyed": len(entries)}

    def put_residents(
        self, residents: Iterable[tuple[records_pb2.ResidentRecord, Sequence[records_pb2.ResidentRecord]]]
    ) -> int:
        """Offline: write residents (each with its earlier versions, oldest first; My Numbers in the
        records) with record-level writes, replacing any held, in one durable transaction; how many."""
        chunk = list(residents)

        def work(tx: ResidentTxn) -> None:
            for record, history in chunk:
                for old in history:
                    tx.add_history(old, old.my_number)
                tx.put_record(record, record.my_number)

        self.apply_sync(work)
        return len(chunk)


# The name the resident file had before the typed record files; code written against it keeps working.
ResidentStore = ResidentFile
