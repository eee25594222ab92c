"""The 附票 file (server/storage/fuhyo_file.py): it stores FuhyoRecord itself with its 18 items, has no table
that can hold a My Number, and a store written by the code before it (schema 2: projections onto the
resident store, the records beside them, empty My Number tables) is migrated on open."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import lmdb
import pytest
from juki.v1 import national_pb2, prefecture_pb2, records_pb2

from server.app import open_fuhyo_store
from server.domain.finding import find, parse_condition
from server.settings import Settings
from server.storage import registry
from server.storage.fuhyo_file import DB_NAMES, SCHEMA_2_DB_NAMES, FuhyoFile, FuhyoTxn, four_info_view
from server.storage.lmdbenv import LmdbEnv
from server.storage.residents import DB_NAMES as RESIDENT_DB_NAMES
from server.storage.residents import ResidentStore, ResidentTxn
from server.storage.sealing import DataKeys, MyNumberSealer

R = records_pb2
TODAY_MS = 1_764_000_000_000
TODAY = dt.date(2026, 12, 1)


def every_item(code: str = "90000000077") -> records_pb2.FuhyoRecord:
    """A FuhyoRecord with each of its 18 items set to a value other than the default."""
    record = R.FuhyoRecord(
        resident_code=code,
        name_kanji="附票　全項目",
        name_gaiji_count=2,
        name_kana="フヒョウ　ゼンコウモク",
        birth_date="1975-03-04",
        sex=R.SEX_MALE,
        address_municipality_code="242012",
        address="三重県津市広明町13番地",
        address_gaiji_count=1,
        last_address="三重県四日市市諏訪町1番5号",
        last_address_gaiji_count=3,
        change_date="2024-06-01",
        former_resident_code="90000000078",
        managing_municipality_code="242012",
        state_kind=R.FUHYO_STATE_DOMESTIC,
        gaiji_flag=True,
        gaiji_pattern="QUJD",
        notice_kind=R.FUHYO_NOTICE_KIND_MODIFY,
    )
    assert len(R.FuhyoRecord.DESCRIPTOR.fields) == 18
    for field in R.FuhyoRecord.DESCRIPTOR.fields:
        assert record.HasField(field.name) if field.has_presence else getattr(record, field.name), field.name
    return record


def named_databases(path: Path) -> set[str]:
    """Every named database of an environment, read with lmdb itself (not through our code)."""
    env = lmdb.open(str(path), readonly=True, max_dbs=64, lock=False)
    try:
        with env.begin() as txn:
            return {bytes(key).decode() for key, _ in txn.cursor()}
    finally:
        env.close()


def test_the_fuhyo_environment_has_no_table_that_can_hold_a_my_number(tmp_path: Path) -> None:
    store = open_fuhyo_store(Settings(home=tmp_path))
    store.put_records([every_item()])
    path = store.env.path
    store.close()
    databases = named_databases(path)
    assert databases == set(DB_NAMES) | set(registry.DB_NAMES)
    assert not databases & {"my_numbers", "my_number_index", "fuhyo_records"}
    # nor can the type hold one: no field of the record, no method of the file's transaction
    assert not [f for f in R.FuhyoRecord.DESCRIPTOR.fields if "number" in f.name and "gaiji" not in f.name]
    assert not [name for name in dir(FuhyoTxn) if "my_number" in name]
    assert not hasattr(FuhyoTxn, "put_record")  # the resident file's put takes a My Number: not here


def test_a_fuhyo_record_round_trips_every_one_of_its_18_items(tmp_path: Path) -> None:
    store = open_fuhyo_store(Settings(home=tmp_path))
    try:
        record = every_item()
        store.put_records([record])
        abroad = every_item("90000000079")
        abroad.state_kind, abroad.address, abroad.address_municipality_code = R.FUHYO_STATE_ABROAD, "", ""
        store.apply_sync(lambda tx: tx.put(abroad))
        with store.reader() as tx:
            assert tx.get_fuhyo(record.resident_code) == record
            assert tx.get_fuhyo(abroad.resident_code) == abroad
            view = tx.get(abroad.resident_code)  # what search and finding see
            assert view is not None and view.four_info.address == abroad.last_address and view.retention_flag
            query = prefecture_pb2.FourInfoQuery(name_kana="ふひょう", birth_date=record.birth_date)
            found = find(tx, parse_condition("four_info", "", "", query, today=TODAY))
            assert {r.resident_code for r in found} == {record.resident_code, abroad.resident_code}
    finally:
        store.close()


def write_schema_2(path: Path, keys: Path) -> tuple[list[records_pb2.FuhyoRecord], records_pb2.FuhyoRecord]:
    """A 附票 store as the code before typed record files wrote it: the resident store's databases plus
    `fuhyo_records`, each record projected onto a ResidentRecord (retention_flag: abroad), earlier versions
    as projections in `history`, a removal as a removed projection; a sequence, an applied notice and a
    queued change; schema 2. Returns (the records, the removed one as it was before its removal)."""
    env = LmdbEnv(path, (*RESIDENT_DB_NAMES, *registry.DB_NAMES, "fuhyo_records"))
    store = ResidentStore(env, MyNumberSealer(DataKeys.load_or_create(keys)))
    records = [every_item(f"9000000010{i}") for i in range(3)]
    records[1].state_kind, records[1].address = R.FUHYO_STATE_ABROAD, ""
    gone = records[2]

    def old_projection(record: records_pb2.FuhyoRecord, removed: bool) -> records_pb2.ResidentRecord:
        view = four_info_view(record)
        view.deleted_flag, view.search_kana = removed, ""
        view.state = R.RECORD_STATE_REMOVED if removed else R.RECORD_STATE_ACTIVE
        view.removed_date = "2025-01-01" if removed else ""
        if removed:
            view.change_date = "2025-01-01"
        return view

    def work(tx: ResidentTxn) -> None:
        for record in records:
            tx.put_record(old_projection(record, removed=False), "")
        earlier = R.FuhyoRecord()
        earlier.CopyFrom(records[0])
        earlier.name_kanji = "附票　旧姓"
        tx.add_history(old_projection(earlier, removed=False), "")
        tx.add_history(old_projection(gone, removed=False), "")
        tx.put_record(old_projection(gone, removed=True), "")
        tx.set_last_sequence("242012", 7)
        tx.record_applied("242012", 7, b"\x01" * 32, b"result")
        change = national_pb2.PropagatedChange(file=national_pb2.CHANGE_FILE_FUHYO, applied_at="x")
        tx.enqueue_outbox(change, TODAY_MS)

    store.apply_sync(work)

    def full(txn: object) -> None:
        for record in records:
            txn.put(  # type: ignore[attr-defined]
                record.resident_code.encode(), record.SerializeToString(), db=env.dbs["fuhyo_records"]
            )

    env.write_sync(full)

    def as_schema_2(txn: Any) -> None:  # what that code wrote: its version, and no idx_name_address
        txn.put(b"schema_version", b"2", db=env.dbs["meta"])
        txn.drop(env.dbs["idx_name_address"], delete=True)

    env.write_sync(as_schema_2)
    env.close()
    return records, gone


def test_a_schema_2_fuhyo_store_is_migrated_on_open(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    path, keys = settings.path(settings.fuhyo_data_dir), settings.path(settings.fuhyo_keys_file)
    records, gone = write_schema_2(path, keys)
    assert {"my_numbers", "my_number_index", "fuhyo_records"} <= named_databases(path)

    store = open_fuhyo_store(settings)  # migrates
    try:
        with store.env.read() as txn:
            assert bytes(txn.get(b"schema_version", db=store.env.dbs["meta"])) == b"4"  # and on to 4
        with store.reader() as tx:
            for record in records[:2]:
                assert tx.get_fuhyo(record.resident_code) == record  # all 18 items, from fuhyo_records
            removed = tx.get_fuhyo(gone.resident_code)
            assert removed is not None and removed.notice_kind == R.FUHYO_NOTICE_KIND_REMOVE
            assert removed.change_date == "2025-01-01" and removed.name_kanji == gone.name_kanji
            view = tx.get(gone.resident_code)
            assert view is not None and view.deleted_flag and view.removed_date == "2025-01-01"
            (old,) = tx.history(records[0].resident_code)
            assert (old.name_kanji, old.managing_municipality_code) == ("附票　旧姓", "242012")
            assert tx.last_sequence("242012") == 7 and tx.applied("242012", 7) == (b"\x01" * 32, b"result")
            assert tx.outbox_depth() == 1
            query = prefecture_pb2.FourInfoQuery(name_kana="フヒョウ", birth_date=records[0].birth_date)
            found = find(tx, parse_condition("four_info", "", "", query, today=TODAY))
            assert {r.resident_code for r in found} == {r.resident_code for r in records[:2]}  # indexes kept
        assert asyncio.run(store.municipality_digests("242012"))  # 整合 reads the migrated records
    finally:
        store.close()
    assert not named_databases(path) & set(SCHEMA_2_DB_NAMES)
    again = open_fuhyo_store(settings)  # a migrated store opens as it is
    again.close()


def test_a_store_of_an_unknown_schema_is_refused(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    store = open_fuhyo_store(settings)
    store.env.write_sync(lambda txn: txn.put(b"schema_version", b"9", db=store.env.dbs["meta"]))
    store.close()
    with pytest.raises(RuntimeError, match="schema"):
        open_fuhyo_store(settings)


def test_a_removed_fuhyo_record_past_retention_is_erased_with_its_history(tmp_path: Path) -> None:
    store: FuhyoFile = open_fuhyo_store(Settings(home=tmp_path))
    try:
        record = every_item()
        removed = every_item()
        removed.notice_kind, removed.change_date = R.FUHYO_NOTICE_KIND_REMOVE, "1850-01-01"

        def work(tx: FuhyoTxn) -> None:
            tx.put(record)
            tx.add_history(record)
            tx.put(removed)

        store.apply_sync(work)
        assert asyncio.run(store.erase_removed_before("1876-12-01", 10)) == (1, 1)
        with store.reader() as tx:
            assert tx.get_fuhyo(record.resident_code) is None and tx.count("idx_name") == 0
    finally:
        store.close()
