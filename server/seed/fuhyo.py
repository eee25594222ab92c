"""The 附票 population consistent with Mie's: the same people (same codes and 4情報); those who moved out
of Mie (転出) are taken as living abroad (国外転出者), with their last domestic address. No My Number.
Other prefectures' 附票 records, for the 附票全国サーバ file of the national server, are made the same way
from the residents of `server.seed.elsewhere`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from juki.v1 import records_pb2

from server.domain.fuhyo import STATE_ABROAD, STATE_DOMESTIC
from server.seed.elsewhere import generate_elsewhere
from server.seed.population import SeedEntry, generate
from server.storage.fuhyo_file import FuhyoFile

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


def load_fuhyo(store: FuhyoFile, records: Iterable[records_pb2.FuhyoRecord], *, batch: int = 20_000) -> int:
    """Write records (with their indexes) in large transactions; the count written."""
    total = 0
    chunk: list[records_pb2.FuhyoRecord] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= batch:
            total += store.put_records(chunk)
            chunk = []
    if chunk:
        total += store.put_records(chunk)
    return total
