"""The 附票 file (都道府県知事保存附票本人確認情報ファイル) on LMDB, and the national one (附票全国サーバ).

Named databases of one environment:

  records          住民票コード → FuhyoRecord itself (its 18 items; 通知区分 消除: the record is removed)
  history          住民票コード + u64 counter → a previous version (FuhyoRecord)
  idx_name, idx_birth, idx_address, idx_name_address, idx_municipality (附票管理市町村コード), idx_removed,
  sequences, applied, outbox, meta
                   as in the resident file (record_file.SHARED_DB_NAMES), over the record's 4情報 view
                   (`four_info_view`: for a person abroad, the last domestic address)

No table can hold a My Number: FuhyoRecord has no field for one, and this file has neither `my_numbers` nor
`my_number_index` (nor a method that writes either). Schema 4 (this one) adds idx_name_address (search
shares the resident file's plans). An older store is migrated in one transaction when opened for writing:
schema 2 — ResidentRecord projections in `records` and `history`, the FuhyoRecords beside them in
`fuhyo_records`, empty My Number tables — by `migrate_schema_2`, then schema 3 by
`RecordFile.build_name_address_index`.
"""

from __future__ import annotations

import functools
import logging
import struct
from collections.abc import Callable, Iterable
from typing import Any

from juki.v1 import records_pb2

from server.domain.kana import search_kana
from server.domain.reconcile import fuhyo_digest
from server.storage.record_file import SHARED_DB_NAMES, RecordFile, RecordTxn, u64

log = logging.getLogger(__name__)

DB_NAMES = ("records", "history", *SHARED_DB_NAMES)
SCHEMA_VERSION = b"4"
# what schema 2 had besides DB_NAMES (the 附票 store as a projection onto the resident store)
SCHEMA_2_DB_NAMES = ("fuhyo_records", "my_numbers", "my_number_index")
R = records_pb2
_search_kana = functools.lru_cache(maxsize=1 << 16)(search_kana)


def removed(record: records_pb2.FuhyoRecord) -> bool:
    """消除: the last notice of the record removed it."""
    return record.notice_kind == R.FUHYO_NOTICE_KIND_REMOVE


def four_info_view(record: records_pb2.FuhyoRecord) -> records_pb2.ResidentRecord:
    """The record as the shared indexes, search and finding see it: 4情報 (for a person abroad, the last
    domestic address), managing municipality, state; `retention_flag` marks 国外転出者 (the view shows
    `abroad`). Never a My Number: there is none to carry."""
    abroad = record.state_kind == R.FUHYO_STATE_ABROAD
    gone = removed(record)
    out = R.ResidentRecord(
        resident_code=record.resident_code,
        municipality_code=record.managing_municipality_code,
        change_date=record.change_date,
        deleted_flag=gone,
        removed_date=record.change_date if gone else "",
        state=R.RECORD_STATE_REMOVED if gone else R.RECORD_STATE_ACTIVE,
        retention_flag=abroad,
        search_kana=_search_kana(record.name_kana),
    )
    info = out.four_info
    info.name_kanji = record.name_kanji
    info.name_kana = record.name_kana
    info.birth_date = record.birth_date
    info.sex = record.sex
    info.address = record.last_address if abroad else record.address
    return out


def from_view(view: records_pb2.ResidentRecord) -> records_pb2.FuhyoRecord:
    """A FuhyoRecord rebuilt from a schema-2 projection (all that schema kept of earlier versions)."""
    abroad = view.retention_flag
    info = view.four_info
    return R.FuhyoRecord(
        resident_code=view.resident_code,
        name_kanji=info.name_kanji,
        name_kana=info.name_kana,
        birth_date=info.birth_date,
        sex=info.sex,
        address="" if abroad else info.address,
        last_address=info.address if abroad else "",
        change_date=view.removed_date or view.change_date if view.deleted_flag else view.change_date,
        managing_municipality_code=view.municipality_code,
        state_kind=R.FUHYO_STATE_ABROAD if abroad else R.FUHYO_STATE_DOMESTIC,
        notice_kind=R.FUHYO_NOTICE_KIND_REMOVE if view.deleted_flag else R.FUHYO_NOTICE_KIND_UNSPECIFIED,
    )


def _parse(raw: Any) -> records_pb2.FuhyoRecord:
    record = R.FuhyoRecord()
    record.ParseFromString(raw)
    return record


class FuhyoTxn(RecordTxn):
    """Record-level operations on a 附票 file inside one LMDB transaction (read or write)."""

    # reads ---------------------------------------------------------------------------------------
    def get_fuhyo(self, resident_code: str) -> records_pb2.FuhyoRecord | None:
        """The 附票 record itself, its 18 items."""
        raw = self._txn.get(resident_code.encode(), db=self._dbs["records"])
        return None if raw is None else _parse(raw)

    def get(self, resident_code: str) -> records_pb2.ResidentRecord | None:
        """The record's 4情報 view (`four_info_view`), for search and finding."""
        record = self.get_fuhyo(resident_code)
        return None if record is None else four_info_view(record)

    def history(self, resident_code: str) -> list[records_pb2.FuhyoRecord]:
        prefix = resident_code.encode()
        with self._txn.cursor(db=self._dbs["history"]) as cur:
            if not cur.set_range(prefix):
                return []
            versions = []
            for key, value in cur:
                if not key.startswith(prefix):
                    break
                versions.append(_parse(value))
            return versions

    def record_digest(self, resident_code: str) -> bytes | None:
        record = self.get_fuhyo(resident_code)
        return None if record is None else fuhyo_digest(record, removed(record))

    # writes --------------------------------------------------------------------------------------
    def put(self, record: records_pb2.FuhyoRecord) -> None:
        """Write the current version of a record with its indexes, replacing the previous version's."""
        record.DiscardUnknownFields()  # defence in depth behind the chain: nothing outside the schema
        key = record.resident_code.encode()
        previous = self.get(record.resident_code)
        self._txn.put(key, record.SerializeToString(), db=self._dbs["records"])
        self._reindex(previous, four_info_view(record))

    def add_history(self, record: records_pb2.FuhyoRecord) -> None:
        """Keep a previous version as history."""
        counter = self._next_counter(b"history_counter")
        key = record.resident_code.encode() + u64(counter)
        self._txn.put(key, record.SerializeToString(), db=self._dbs["history"])

    def erase_person(self, resident_code: str) -> int:
        """Erase a removed person wholly (record, indexes, history); how many history entries."""
        view = self.get(resident_code)
        if view is None or not view.deleted_flag:
            return 0
        self._reindex(view, None)
        self._txn.delete(resident_code.encode(), db=self._dbs["records"])
        return self._erase_history(resident_code)


class FuhyoFile(RecordFile[FuhyoTxn]):
    """A 附票 file: opening and migrating its environment, and its domain operations."""

    txn_type = FuhyoTxn
    schema_version = SCHEMA_VERSION

    def _migrations(self) -> dict[bytes, tuple[Callable[[Any], dict[str, int]], str]]:
        message = "附票 store migrated to schema 3 (FuhyoRecords, no My Number table)"
        return {
            b"2": (self.migrate_schema_2, message),
            b"3": (self.build_name_address_index, "附票 store migrated to schema 4 (idx_name_address built)"),
        }

    def migrate_schema_2(self, txn: Any) -> dict[str, int]:
        """Schema 2 kept a ResidentRecord projection in `records` and `history` and the FuhyoRecord in
        `fuhyo_records`. Put each FuhyoRecord (with its 通知区分 消除 when the projection was removed) in
        `records`, turn each history projection into a FuhyoRecord, drop `fuhyo_records` and the My Number
        tables. The indexes are those of the same 4情報 view and stay. One transaction: whole or nothing."""
        dbs = self.env.dbs
        full = self.env.existing_db(txn, "fuhyo_records")
        records = history = 0
        with txn.cursor(db=dbs["records"]) as cur:
            entries = [(bytes(key), bytes(value)) for key, value in cur]
        for key, value in entries:
            view = R.ResidentRecord.FromString(value)
            held = txn.get(key, db=full) if full is not None else None
            record = _parse(held) if held is not None else from_view(view)
            if view.deleted_flag:
                record.notice_kind = R.FUHYO_NOTICE_KIND_REMOVE
                record.change_date = view.removed_date or view.change_date
            txn.put(key, record.SerializeToString(), db=dbs["records"])
            records += 1
        with txn.cursor(db=dbs["history"]) as cur:
            entries = [(bytes(key), bytes(value)) for key, value in cur]
        for key, value in entries:
            (sealed_length,) = struct.unpack(">H", value[:2])  # always 0: no My Number was ever sealed
            view = R.ResidentRecord.FromString(value[2 + sealed_length :])
            txn.put(key, from_view(view).SerializeToString(), db=dbs["history"])
            history += 1
        dropped = 0
        for name in SCHEMA_2_DB_NAMES:
            db = self.env.existing_db(txn, name)
            if db is not None:
                dropped += int(txn.stat(db)["entries"]) if name != "fuhyo_records" else 0
                txn.drop(db, delete=True)
        return {"records": records, "history": history, "my_number_entries_dropped": dropped}

    def put_records(self, records: Iterable[records_pb2.FuhyoRecord]) -> int:
        """Offline (seeding): write records with their indexes, replacing any held, in one durable
        transaction; how many."""
        chunk = list(records)

        def work(tx: FuhyoTxn) -> None:
            for record in chunk:
                tx.put(record)

        self.apply_sync(work)
        return len(chunk)
