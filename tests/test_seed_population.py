"""The synthetic population (合成住民データ): deterministic, unique codes, plausible records."""

from __future__ import annotations

import datetime as dt
import random
import re
from collections import Counter

import pytest
from juki.v1 import records_pb2

from server.domain.codes import (
    MIE_MUNICIPALITIES,
    is_valid_municipality_code,
    is_valid_resident_code,
    my_number_check_digit,
)
from server.seed import names
from server.seed.population import MUNICIPALITY_WEIGHTS, SeedEntry, _my_number, generate

COUNT = 20_000
_KANA_NAME = re.compile(r"[ァ-ヶー]+\u3000[ァ-ヶー]+")
_KANA = re.compile(r"[ァ-ヶー]+")
_TIMESTAMP = re.compile(r"(\d{4}-\d{2}-\d{2})T\d{2}:\d{2}:\d{2}\+09:00")
_HOUSE_NUMBER = re.compile(r"[1-9][0-9]*丁目[1-9][0-9]*番[1-9][0-9]*号|[1-9][0-9]*番地")
_CREATIONS = {records_pb2.CHANGE_REASON_SHUSSEI, records_pb2.CHANGE_REASON_TENNYU}
_REMOVALS = {records_pb2.CHANGE_REASON_TENSHUTSU, records_pb2.CHANGE_REASON_SHIBOU}


@pytest.fixture(scope="module")
def population() -> list[SeedEntry]:
    return list(generate(COUNT, seed=7))


def _serialized(entries: list[SeedEntry]) -> list[tuple[bytes, ...]]:
    return [
        (
            e.record.SerializeToString(deterministic=True),
            *(h.SerializeToString(deterministic=True) for h in e.history),
        )
        for e in entries
    ]


def test_same_seed_gives_the_same_population(population: list[SeedEntry]) -> None:
    assert _serialized(list(generate(COUNT, seed=7))) == _serialized(population)


def test_shorter_run_is_a_prefix(population: list[SeedEntry]) -> None:
    assert _serialized(list(generate(500, seed=7))) == _serialized(population[:500])


def test_different_seed_gives_a_different_population(population: list[SeedEntry]) -> None:
    other = list(generate(500, seed=8))
    assert [e.record.resident_code for e in other] != [e.record.resident_code for e in population[:500]]
    assert [e.record.four_info.name_kanji for e in other] != [
        e.record.four_info.name_kanji for e in population[:500]
    ]


def test_resident_codes_are_unique_eleven_digits_and_not_sequential(population: list[SeedEntry]) -> None:
    codes = [e.record.resident_code for e in population]
    assert all(is_valid_resident_code(c) for c in codes)
    assert len(set(codes)) == COUNT
    assert codes != sorted(codes)
    assert len({c[0] for c in codes}) == 10  # spread over the whole range
    for entry in population:
        assert all(h.resident_code == entry.record.resident_code for h in entry.history)


def test_my_numbers_are_unique_and_valid(population: list[SeedEntry]) -> None:
    numbers = [e.record.my_number for e in population]
    assert len(set(numbers)) == COUNT
    assert len({n[:11] for n in numbers}) == COUNT
    for number in numbers:
        assert re.fullmatch(r"[0-9]{12}", number)
        assert my_number_check_digit(number[:11]) == int(number[11])


def test_my_number_check_digit_table_matches_the_spec() -> None:
    rng = random.Random(3)
    samples = [rng.randrange(10**11) for _ in range(5000)] + [0, 10**11 - 1, 98320567321]
    for first11 in samples:
        digits = f"{first11:011d}"
        assert _my_number(first11) == f"{digits}{my_number_check_digit(digits)}"
    assert _my_number(98320567321) == "983205673214"  # the valid example of SPEC §2


def test_municipalities_follow_population_weights(population: list[SeedEntry]) -> None:
    counts = Counter(e.record.municipality_code for e in population)
    assert set(counts) <= set(MIE_MUNICIPALITIES)
    assert all(is_valid_municipality_code(c) for c in counts)
    assert (
        counts["242021"] > counts["242012"] > counts["242071"] > counts["243035"]
    )  # 四日市 > 津 > 鈴鹿 > 木曽岬
    total_weight = sum(MUNICIPALITY_WEIGHTS.values())
    for code in ("242021", "242012", "242047"):
        expected = COUNT * MUNICIPALITY_WEIGHTS[code] / total_weight
        assert abs(counts[code] - expected) < 0.1 * expected


def test_weights_and_towns_cover_all_29_municipalities() -> None:
    assert set(MUNICIPALITY_WEIGHTS) == set(MIE_MUNICIPALITIES)
    assert set(names.TOWNS) == set(MIE_MUNICIPALITIES)
    assert all(8 <= len(towns) <= 20 for towns in names.TOWNS.values())
    assert 8 < sum(MUNICIPALITY_WEIGHTS.values()) / 200_000 < 10  # about 1.77 million


def test_name_tables_are_katakana() -> None:
    for kanji, kana, _ in (*names.SURNAMES, *names.MALE_GIVEN_NAMES, *names.FEMALE_GIVEN_NAMES):
        assert kanji
        assert _KANA.fullmatch(kana), kana


def test_names_are_kanji_and_katakana_with_a_full_width_space(population: list[SeedEntry]) -> None:
    for entry in population:
        info = entry.record.four_info
        assert _KANA_NAME.fullmatch(info.name_kana), info.name_kana
        assert info.name_kanji.count("\u3000") == 1
        assert entry.record.search_kana == ""


def test_sex_matches_the_given_name(population: list[SeedEntry]) -> None:
    male = {(k, r) for k, r, _ in names.MALE_GIVEN_NAMES}
    female = {(k, r) for k, r, _ in names.FEMALE_GIVEN_NAMES}
    sexes = Counter[int]()
    for entry in population:
        info = entry.record.four_info
        given = (info.name_kanji.split("\u3000")[1], info.name_kana.split("\u3000")[1])
        sexes[info.sex] += 1
        assert given in (male if info.sex == records_pb2.SEX_MALE else female)
    assert set(sexes) == {records_pb2.SEX_MALE, records_pb2.SEX_FEMALE}
    assert 0.4 < sexes[records_pb2.SEX_MALE] / COUNT < 0.6


def test_dates_are_valid_and_ordered(population: list[SeedEntry]) -> None:
    first, last = dt.date(1925, 1, 1), dt.date(2025, 12, 31)
    ages = []
    for entry in population:
        versions = (*entry.history, entry.record)
        birth = dt.date.fromisoformat(entry.record.four_info.birth_date)
        assert first <= birth <= last
        ages.append(2025 - birth.year)
        previous = birth
        for version in versions:
            changed = dt.date.fromisoformat(version.change_date)
            assert previous <= changed <= last
            assert version.notified_date == version.change_date
            stamp = _TIMESTAMP.fullmatch(version.timestamp)
            assert stamp is not None and stamp.group(1) == version.change_date
            previous = changed
        if entry.history:
            assert dt.date.fromisoformat(entry.history[-1].change_date) < previous
    ages.sort()
    assert 35 <= ages[len(ages) // 2] <= 60  # median age of a prefecture in the 2020s
    assert ages[-1] >= 90


def test_addresses_start_with_the_prefecture_and_municipality(population: list[SeedEntry]) -> None:
    for entry in population:
        for version in (*entry.history, entry.record):
            prefix = "三重県" + MIE_MUNICIPALITIES[version.municipality_code]
            address = version.four_info.address
            assert address.startswith(prefix)
            town = names.TOWNS[version.municipality_code][int(version.oaza_code[:4]) - 1]
            assert version.oaza_code.endswith("00")
            assert address[len(prefix) :].startswith(town)
            assert _HOUSE_NUMBER.fullmatch(address[len(prefix) + len(town) :]), address


def test_common_fields(population: list[SeedEntry]) -> None:
    for entry in population:
        for version in (*entry.history, entry.record):
            assert re.fullmatch(r"op-[0-9]{4}", version.operator_id)
            assert re.fullmatch(r"t-[0-9]{4}", version.terminal_id)
            assert version.sequence == 0
            assert version.my_number == entry.record.my_number


def test_most_records_are_active_creations(population: list[SeedEntry]) -> None:
    plain = [e for e in population if not e.history]
    assert len(plain) > 0.9 * COUNT
    for entry in plain:
        assert entry.record.change_reason in _CREATIONS
        assert entry.record.state == records_pb2.RECORD_STATE_ACTIVE
        assert not entry.record.deleted_flag
        assert entry.record.removed_date == ""


def test_removed_persons_keep_their_active_version(population: list[SeedEntry]) -> None:
    removed = [e for e in population if e.record.state == records_pb2.RECORD_STATE_REMOVED]
    assert 0.01 * COUNT < len(removed) < 0.03 * COUNT  # removed_per_mille=20
    reasons = Counter(e.record.change_reason for e in removed)
    assert set(reasons) == _REMOVALS
    for entry in removed:
        record = entry.record
        assert record.deleted_flag
        assert record.removed_date == record.change_date
        assert len(entry.history) == 1
        before = entry.history[0]
        assert before.state == records_pb2.RECORD_STATE_ACTIVE and not before.deleted_flag
        assert before.change_reason in _CREATIONS
        assert before.change_date < record.change_date
        assert before.four_info == record.four_info


def test_moves_within_the_municipality_keep_the_previous_address(population: list[SeedEntry]) -> None:
    moved = [e for e in population if e.record.change_reason == records_pb2.CHANGE_REASON_TENKYO]
    assert 0.02 * COUNT < len(moved) < 0.06 * COUNT
    for entry in moved:
        record, (before,) = entry.record, entry.history
        assert record.state == records_pb2.RECORD_STATE_ACTIVE and not record.deleted_flag
        assert before.change_reason in _CREATIONS
        assert before.change_date < record.change_date
        assert before.four_info.address != record.four_info.address
        assert before.municipality_code == record.municipality_code
        assert before.four_info.name_kanji == record.four_info.name_kanji
        assert before.four_info.birth_date == record.four_info.birth_date


def test_former_surnames_are_mostly_women(population: list[SeedEntry]) -> None:
    with_former = [e.record for e in population if e.record.HasField("former_surname")]
    assert 0.02 * COUNT < len(with_former) < 0.04 * COUNT  # former_surname_per_mille=30
    women = sum(r.four_info.sex == records_pb2.SEX_FEMALE for r in with_former)
    assert women > 0.7 * len(with_former)
    for record in with_former:
        former = record.former_surname
        assert _KANA.fullmatch(former.kana)
        assert former.kanji and former.kanji != record.four_info.name_kanji.split("\u3000")[0]


def test_shares_are_configurable() -> None:
    entries = list(generate(2000, seed=1, removed_per_mille=0, former_surname_per_mille=0))
    assert not any(e.record.state == records_pb2.RECORD_STATE_REMOVED for e in entries)
    assert not any(e.record.HasField("former_surname") for e in entries)
    everyone = list(generate(200, seed=1, removed_per_mille=1000))
    assert all(e.record.state == records_pb2.RECORD_STATE_REMOVED for e in everyone)


def test_bad_arguments_are_refused_at_call_time() -> None:
    with pytest.raises(ValueError):
        generate(-1)
    with pytest.raises(ValueError):
        generate(10, removed_per_mille=1001)
    with pytest.raises(ValueError):
        generate(10, former_surname_per_mille=-1)
