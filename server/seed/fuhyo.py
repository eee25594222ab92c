"""The 附票 population consistent with Mie's: the same people (same codes and 4情報); those who moved out
of Mie (転出) are taken as living abroad (国外転出者), with their last domestic address. No My Number.
Other prefectures' 附票 records, for the 附票全国サーバ file of the national server, are made the same way
from the residents of `server.seed.elsewhere`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from juki.v1 import records_pb2

from server.domain.fuhyo import FULL_RECORDS, STATE_ABROAD, STATE_DOMESTIC, projection
from server.seed.elsewhere import generate_elsewhere
from server.seed.population import SeedEntry, generate
from server.storage.residents import ResidentStore

R = records_pb2


def generate_fuhyo(count: int, seed: int = 1) -> Iterator[records_pb2.FuhyoRecord]:
    return _fuhyo_records(generate(count, seed))


def generate_fuhyo_elsewhere(count: int) -> Iterator[records_pb2.FuhyoRecord]:
    """附票 records of people of other prefectures (those of `generate_elsewhere(count)` on a 附票)."""
    return _fuhyo_records(generate_elsewhere(count))


def _fuhyo_records(entries: Iterable[SeedEntry]) -> Iterator[records_pb2.FuhyoRecord]:
    for entry in entries:
        person = entry.record
        if person.deleted_flag and person.change_reason != R.CHANGE_REASON_TENSHUTSU:
            continue  # 死亡 etc.: not on a living person's 附票
        info = person.four_info
        abroad = person.deleted_flag
        yield R.FuhyoRecord(
            resident_code=person.resident_code,
            name_kanji=info.name_kanji,
            name_kana=info.name_kana,
            birth_date=info.birth_date,
            sex=info.sex,
            address_municipality_code=person.municipality_code,
            address="" if abroad else info.address,
            last_address=info.address if abroad else "",
            change_date=person.change_date,
            managing_municipality_code=person.municipality_code,
            state_kind=STATE_ABROAD if abroad else STATE_DOMESTIC,
            notice_kind=R.FUHYO_NOTICE_KIND_CREATE,
        )


def load_fuhyo(
    store: ResidentStore, records: Iterator[records_pb2.FuhyoRecord], *, batch: int = 20_000
) -> int:
    """Write records (projection + full record) in large transactions; the count written."""
    total = 0
    chunk: list[records_pb2.FuhyoRecord] = []

    def write(txn: Any) -> None:
        tx = store.bind(txn)
        for record in chunk:
            tx.put_record(projection(record, removed=False), "")
            tx.put_raw(FULL_RECORDS, record.resident_code.encode(), record.SerializeToString())

    for record in records:
        chunk.append(record)
        if len(chunk) >= batch:
            store.env.write_sync(write)
            total += len(chunk)
            chunk = []
    if chunk:
        store.env.write_sync(write)
        total += len(chunk)
    return total
