"""Synthetic residents of other prefectures, for the national server (so forwarded queries find someone).

The same generator as Mie's, moved to other municipalities: codes come from Mie's permutation (code_seed 1)
at indexes far beyond any Mie population, so no 住民票コード or 個人番号 is shared with Mie's residents.
"""

from __future__ import annotations

from collections.abc import Iterator

from juki.v1 import records_pb2

from server.domain.codes import MIE_MUNICIPALITIES
from server.seed.population import SeedEntry, generate

# (municipality code with check digit, prefecture name, municipality name)
OTHER_MUNICIPALITIES: tuple[tuple[str, str, str], ...] = (
    ("231002", "愛知県", "名古屋市"),
    ("232025", "愛知県", "岡崎市"),
    ("212016", "岐阜県", "岐阜市"),
    ("212024", "岐阜県", "大垣市"),
    ("292010", "奈良県", "奈良市"),
    ("252018", "滋賀県", "大津市"),
    ("302015", "和歌山県", "和歌山市"),
)
FIRST_INDEX = 5_000_000_000
SEED = 24_000


def _move(record: records_pb2.ResidentRecord, index: int) -> None:
    code, prefecture, city = OTHER_MUNICIPALITIES[index % len(OTHER_MUNICIPALITIES)]
    mie_prefix = "三重県" + MIE_MUNICIPALITIES[record.municipality_code]
    record.four_info.address = prefecture + city + record.four_info.address.removeprefix(mie_prefix)
    record.municipality_code = code


def generate_elsewhere(count: int) -> Iterator[SeedEntry]:
    for i, entry in enumerate(generate(count, SEED, code_seed=1, first_index=FIRST_INDEX)):
        _move(entry.record, i)
        for old in entry.history:
            _move(old, i)
        yield entry
