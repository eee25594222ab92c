"""Deterministic synthetic population of 三重県 (合成住民データ) for seeding and benchmarks.

`generate(count, seed)` gives a `Population` that streams `SeedEntry` values: the same (count, seed) always
yields the same entries in the same order, and a shorter run is a prefix of a longer one with the same seed.
Memory stays O(1) in `count`: 住民票コード and 個人番号 come from bijective scrambles of the entry's index,
so they are unique without remembering the ones already issued.

Every person is synthetic. Names come from `server.seed.names`; ages follow a rough 2025 age pyramid;
municipalities are weighted by population.
"""

from __future__ import annotations

import datetime as dt
import random
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate, pairwise

from juki.v1 import records_pb2

from server.domain.codes import MIE_MUNICIPALITIES
from server.seed.names import FEMALE_GIVEN_NAMES, MALE_GIVEN_NAMES, SURNAMES, TOWNS

# Approximate populations (2025), used as weights when placing a person (SPEC §2).
MUNICIPALITY_WEIGHTS: dict[str, int] = {
    "242012": 274_000,  # 津市
    "242021": 305_000,  # 四日市市
    "242039": 122_000,  # 伊勢市
    "242047": 159_000,  # 松阪市
    "242055": 140_000,  # 桑名市
    "242071": 196_000,  # 鈴鹿市
    "242080": 76_000,  # 名張市
    "242098": 16_500,  # 尾鷲市
    "242101": 49_000,  # 亀山市
    "242110": 17_000,  # 鳥羽市
    "242128": 15_500,  # 熊野市
    "242144": 44_000,  # いなべ市
    "242152": 46_000,  # 志摩市
    "242161": 87_000,  # 伊賀市
    "243035": 6_000,  # 木曽岬町
    "243248": 25_000,  # 東員町
    "243418": 40_000,  # 菰野町
    "243434": 11_000,  # 朝日町
    "243442": 15_000,  # 川越町
    "244414": 14_000,  # 多気町
    "244422": 22_000,  # 明和町
    "244431": 8_500,  # 大台町
    "244619": 15_000,  # 玉城町
    "244708": 7_800,  # 度会町
    "244716": 7_500,  # 大紀町
    "244724": 11_000,  # 南伊勢町
    "245437": 14_500,  # 紀北町
    "245615": 8_000,  # 御浜町
    "245623": 10_500,  # 紀宝町
}


@dataclass(frozen=True, slots=True)
class SeedEntry:
    """One synthetic resident: the current record and its earlier versions (oldest first)."""

    record: records_pb2.ResidentRecord
    history: tuple[records_pb2.ResidentRecord, ...]


# --- Dates -------------------------------------------------------------------------------------------------

_FIRST_DATE = dt.date(1925, 1, 1)
_LAST_DATE = dt.date(2025, 12, 31)
_FIRST_YEAR, _LAST_YEAR = _FIRST_DATE.year, _LAST_DATE.year
# Day index (days since 1925-01-01) → ISO date; every date of the population is an index into this table.
_DATES: tuple[str, ...] = tuple(
    (_FIRST_DATE + dt.timedelta(days=d)).isoformat() for d in range((_LAST_DATE - _FIRST_DATE).days + 1)
)
_LAST_DAY = len(_DATES) - 1

# Relative number of living people born in a year (a rough 2025 pyramid: the very old are few, the two baby
# booms of 1947–49 and 1971–74 stand out, 1966 丙午 dips, births fall after 2000); linear between anchors.
_BIRTH_YEAR_ANCHORS: tuple[tuple[int, int], ...] = (
    (1925, 20), (1930, 130), (1935, 520), (1940, 1050), (1944, 1400), (1945, 1300), (1946, 1450),
    (1947, 1900), (1949, 1900), (1950, 1750), (1954, 1450), (1965, 1500), (1966, 1200), (1967, 1600),
    (1970, 1600), (1971, 1900), (1974, 1900), (1979, 1500), (1989, 1300), (1999, 1200), (2009, 1080),
    (2015, 1000), (2025, 700),
)  # fmt: skip


def _birth_year_weights() -> list[int]:
    weights: list[int] = []
    for (y0, w0), (y1, w1) in pairwise(_BIRTH_YEAR_ANCHORS):
        weights.extend(w0 + (w1 - w0) * (y - y0) // (y1 - y0) for y in range(y0, y1))
    weights.append(_BIRTH_YEAR_ANCHORS[-1][1])
    return weights


_YEAR_WEIGHTS = _birth_year_weights()
assert len(_YEAR_WEIGHTS) == _LAST_YEAR - _FIRST_YEAR + 1
_YEAR_CUM = list(accumulate(_YEAR_WEIGHTS))
_YEAR_TOTAL = _YEAR_CUM[-1]
_YEAR_FIRST_DAY = [(dt.date(y, 1, 1) - _FIRST_DATE).days for y in range(_FIRST_YEAR, _LAST_YEAR + 1)]
_YEAR_DAYS = [(dt.date(y + 1, 1, 1) - dt.date(y, 1, 1)).days for y in range(_FIRST_YEAR, _LAST_YEAR + 1)]
# Given-name era by birth year (see names.py): 0 before 1960, 1 for 1960–1994, 2 from 1995.
_ERA_OF_YEAR = [0 if y < 1960 else 1 if y < 1995 else 2 for y in range(_FIRST_YEAR, _LAST_YEAR + 1)]
# A former surname (旧氏) is given to adults only: born in 2005 or earlier.
_ADULT_LAST_YEAR_INDEX = 2005 - _FIRST_YEAR
_ADULT_SHARE = _YEAR_CUM[_ADULT_LAST_YEAR_INDEX] / _YEAR_TOTAL

# Office hours of a municipal counter: timestamps fall between 08:30:00 and 17:29:59 JST.
_HOURS_MINUTES = tuple(f"{m // 60:02d}:{m % 60:02d}" for m in range(8 * 60 + 30, 17 * 60 + 30))
_SECONDS = tuple(f"{s:02d}" for s in range(60))

# --- People and places -------------------------------------------------------------------------------------

_MALE_SHARE = 0.488
_BORN_HERE_SHARE = 0.4  # first record is a 出生 rather than a 転入
_ERA_NAME_SHARE = 0.8  # given name typical of the birth era; otherwise any name of that sex
_TENKYO_SHARE = 0.04  # 転居 within the municipality (a history entry)
_FORMER_SURNAME_FEMALE_SHARE = 0.85
_OPERATORS_PER_MUNICIPALITY = 20
_TERMINALS_PER_MUNICIPALITY = 8

_SURNAME_CUM = list(accumulate(w for _, _, w in SURNAMES))
_SURNAME_TOTAL = _SURNAME_CUM[-1]


def _given_name_pools(names: Sequence[tuple[str, str, int]]) -> tuple[tuple[tuple[str, str], ...], ...]:
    """Pools by era 0, 1, 2, then all names of that sex (index 3)."""
    by_era = tuple(tuple((k, r) for k, r, era in names if era == e) for e in range(3))
    return (*by_era, tuple((k, r) for k, r, _ in names))


_MALE_POOLS = _given_name_pools(MALE_GIVEN_NAMES)
_FEMALE_POOLS = _given_name_pools(FEMALE_GIVEN_NAMES)


@dataclass(frozen=True, slots=True)
class _Town:
    name: str
    oaza_code: str  # 大字・字コード: 4-digit 大字 number + "00"
    chome: bool  # addressed as …丁目…番…号 rather than …番地


@dataclass(frozen=True, slots=True)
class _Municipality:
    code: str
    prefix: str  # "三重県" + municipality name
    towns: tuple[_Town, ...]
    operators: tuple[str, ...]
    terminals: tuple[str, ...]


def _municipalities() -> tuple[_Municipality, ...]:
    result = []
    for n, (code, name) in enumerate(MIE_MUNICIPALITIES.items(), start=1):
        names = TOWNS[code]
        # For a 市 the first half of the list is its centre, addressed by 丁目 (names.py).
        central = len(names) // 2 if name.endswith("市") else 0
        towns = tuple(_Town(t, f"{i + 1:04d}00", i < central) for i, t in enumerate(names))
        operators = tuple(f"op-{n:02d}{j:02d}" for j in range(1, _OPERATORS_PER_MUNICIPALITY + 1))
        terminals = tuple(f"t-{n:02d}{j:02d}" for j in range(1, _TERMINALS_PER_MUNICIPALITY + 1))
        result.append(_Municipality(code, "三重県" + name, towns, operators, terminals))
    return tuple(result)


_MUNICIPALITIES = _municipalities()
_MUNICIPALITY_CUM = list(accumulate(MUNICIPALITY_WEIGHTS[m.code] for m in _MUNICIPALITIES))
_MUNICIPALITY_TOTAL = _MUNICIPALITY_CUM[-1]


def _address(rnd: Callable[[], float], municipality: _Municipality, town: _Town) -> str:
    if town.chome:
        return (
            f"{municipality.prefix}{town.name}{1 + int(rnd() * 5)}丁目"
            f"{1 + int(rnd() * 30)}番{1 + int(rnd() * 25)}号"
        )
    return f"{municipality.prefix}{town.name}{1 + int(rnd() * 3000)}番地"


# --- Codes -------------------------------------------------------------------------------------------------

_HALF = 100_000  # a 10-digit number as two 5-digit halves
_MAX_COUNT = _HALF * _HALF
_FEISTEL_ROUNDS = 4
_MY_NUMBER_SPACE = 10**11


def _digit_sums() -> list[int]:
    """Sum of the decimal digits of 0..99999, for the 住民票コード check digit."""
    sums = [0] * _HALF
    for n in range(1, _HALF):
        sums[n] = sums[n // 10] + n % 10
    return sums


_DIGIT_SUM = _digit_sums()


def _weighted_digit_sums(weights: tuple[int, int, int]) -> list[int]:
    """Σ digit·weight for 000..999, weights from the rightmost digit."""
    return [sum(int(d) * w for d, w in zip(f"{n:03d}"[::-1], weights, strict=True)) for n in range(1000)]


# 個人番号 check digit (SPEC §2) by table: the digit weights from the right are 2,3,4,5,6,7,2,3,4,5,6, so
# the 11 digits split into groups of 3 (from the right) with weights 2,3,4 / 5,6,7 / 2,3,4 / 5,6.
_MY_NUMBER_W234 = _weighted_digit_sums((2, 3, 4))
_MY_NUMBER_W567 = _weighted_digit_sums((5, 6, 7))


def _my_number(first11: int) -> str:
    remainder = (
        _MY_NUMBER_W234[first11 % 1000]
        + _MY_NUMBER_W567[first11 // 1000 % 1000]
        + _MY_NUMBER_W234[first11 // 1_000_000 % 1000]
        + _MY_NUMBER_W567[first11 // 1_000_000_000]
    ) % 11
    return str(first11 * 10 + (0 if remainder <= 1 else 11 - remainder) + 10**12)[1:]  # zero-padded


class _CodeScramble:
    """Index → 住民票コード and 個人番号, bijective so codes never repeat within one population.

    A 4-round Feistel network over the two 5-digit halves of a 10-digit number makes consecutive indexes
    look unrelated; each round adds a function of one half to the other mod 10⁵, so the whole is a
    permutation of 0..10¹⁰−1 whatever the functions. The 住民票コード is the permuted number plus a check
    digit (digit sum mod 10: the official formula is not public, SPEC §2). The 個人番号
    takes a second permutation, widened to 11 digits by an affine map mod 10¹¹ (multiplier coprime to 10).
    """

    __slots__ = ("_my_add", "_my_keys", "_my_mul", "_resident_keys", "_table")

    def __init__(self, rng: random.Random) -> None:
        # Round function with key k: x ↦ table[x + k] (x, k < 10⁵): one random table, one key per round.
        self._table = [rng.getrandbits(32) % _HALF for _ in range(2 * _HALF)]
        self._resident_keys = tuple(rng.randrange(_HALF) for _ in range(_FEISTEL_ROUNDS))
        self._my_keys = tuple(rng.randrange(_HALF) for _ in range(_FEISTEL_ROUNDS))
        multiplier = rng.randrange(10**10, _MY_NUMBER_SPACE)
        while multiplier % 2 == 0 or multiplier % 5 == 0:
            multiplier += 1
        self._my_mul = multiplier
        self._my_add = rng.randrange(_MY_NUMBER_SPACE)

    def pairs(self, first: int, count: int) -> Iterator[tuple[str, str]]:
        """(住民票コード, 個人番号) of indexes first…first+count−1. The two permutations are written out
        inline: codes were a quarter of the generator's time."""
        table, digit_sum, half, my_number = self._table, _DIGIT_SUM, _HALF, _my_number
        r1, r2, r3, r4 = self._resident_keys
        m1, m2, m3, m4 = self._my_keys
        my_mul, my_add, space = self._my_mul, self._my_add, _MY_NUMBER_SPACE
        for index in range(first, first + count):
            high, low = divmod(index, half)
            hi = (high + table[low + r1]) % half
            lo = (low + table[hi + r2]) % half
            hi = (hi + table[lo + r3]) % half
            lo = (lo + table[hi + r4]) % half
            # str() of the number plus a leading 1, then cut: zero-padded, faster than a format spec
            code = str(((hi * half + lo) * 10 + (digit_sum[hi] + digit_sum[lo]) % 10) + 10**11)[1:]
            hi = (high + table[low + m1]) % half
            lo = (low + table[hi + m2]) % half
            hi = (hi + table[lo + m3]) % half
            lo = (lo + table[hi + m4]) % half
            yield code, my_number(((hi * half + lo) * my_mul + my_add) % space)


# --- Generation --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Population:
    """The entries of one synthetic population, by its parameters: iterating generates them (the same entries
    each time), and the object is small enough to hand to another process, which then generates the same
    entries (`server.seed.load` does, to generate while it writes)."""

    count: int
    seed: int
    removed_share: float
    former_share: float
    code_seed: int | None
    first_index: int

    def __iter__(self) -> Iterator[SeedEntry]:
        return _generate(
            self.count, self.seed, self.removed_share, self.former_share, self.code_seed, self.first_index
        )

    def __len__(self) -> int:
        return self.count


def generate(
    count: int,
    seed: int = 1,
    *,
    removed_per_mille: int = 20,
    former_surname_per_mille: int = 30,
    code_seed: int | None = None,
    first_index: int = 0,
) -> Population:
    """Deterministic: the same (count, seed) yields exactly the same entries in the same order.

    About removed_per_mille/1000 of the entries are 消除者 (転出 or 死亡, history = the active version), about
    4 % moved within their municipality (転居, history = the version at the previous address), and about
    former_surname_per_mille/1000 carry a 旧氏, mostly women. search_kana is left empty for the store.

    Codes come from the permutation of `code_seed` (default: `seed`) at indexes `first_index`…: two
    populations with the same code_seed and disjoint index ranges never share a 住民票コード or 個人番号.
    """
    if not count >= 0 or not first_index >= 0 or first_index + count > _MAX_COUNT:
        raise ValueError(f"first_index + count must be between 0 and {_MAX_COUNT}")
    for name, value in (
        ("removed_per_mille", removed_per_mille),
        ("former_surname_per_mille", former_surname_per_mille),
    ):
        if not 0 <= value <= 1000:
            raise ValueError(f"{name} must be between 0 and 1000")
    return Population(
        count, seed, removed_per_mille / 1000, former_surname_per_mille / 1000, code_seed, first_index
    )


def _generate(
    count: int, seed: int, removed_share: float, former_share: float, code_seed: int | None, first_index: int
) -> Iterator[SeedEntry]:
    rng = random.Random(seed)
    # The same seed builds the same permutation whether it comes from `seed` or from `code_seed`.
    codes = _CodeScramble(rng) if code_seed is None else _CodeScramble(random.Random(code_seed))
    rnd = rng.random
    tenkyo_bound = removed_share + min(_TENKYO_SHARE, 1.0 - removed_share)
    # Per-adult probabilities giving former_share overall with the female share wanted.
    former_female = min(1.0, former_share * _FORMER_SURNAME_FEMALE_SHARE / ((1 - _MALE_SHARE) * _ADULT_SHARE))
    former_male = min(1.0, former_share * (1 - _FORMER_SURNAME_FEMALE_SHARE) / (_MALE_SHARE * _ADULT_SHARE))

    dates = _DATES
    last_day = _LAST_DAY
    municipalities, municipality_cum, municipality_total = (
        _MUNICIPALITIES,
        _MUNICIPALITY_CUM,
        _MUNICIPALITY_TOTAL,
    )
    surnames, surname_cum, surname_total = SURNAMES, _SURNAME_CUM, _SURNAME_TOTAL
    year_cum, year_total, year_first_day, year_days = _YEAR_CUM, _YEAR_TOTAL, _YEAR_FIRST_DAY, _YEAR_DAYS
    hours_minutes, seconds = _HOURS_MINUTES, _SECONDS
    n_hours_minutes, n_seconds = len(_HOURS_MINUTES), len(_SECONDS)
    record_cls = records_pb2.ResidentRecord
    male, female = records_pb2.SEX_MALE, records_pb2.SEX_FEMALE
    shussei, tennyu = records_pb2.CHANGE_REASON_SHUSSEI, records_pb2.CHANGE_REASON_TENNYU
    active = records_pb2.RECORD_STATE_ACTIVE
    no_history: tuple[records_pb2.ResidentRecord, ...] = ()

    def timestamp(day: int) -> str:
        hour_minute = hours_minutes[int(rnd() * n_hours_minutes)]
        return f"{dates[day]}T{hour_minute}:{seconds[int(rnd() * n_seconds)]}+09:00"

    for resident_code, my_number in codes.pairs(first_index, count):
        municipality = municipalities[bisect_right(municipality_cum, rnd() * municipality_total)]
        is_male = rnd() < _MALE_SHARE
        year = bisect_right(year_cum, rnd() * year_total)
        birth = year_first_day[year] + int(rnd() * year_days[year])
        surname = surnames[bisect_right(surname_cum, rnd() * surname_total)]
        pools = _MALE_POOLS if is_male else _FEMALE_POOLS
        pool = pools[_ERA_OF_YEAR[year]] if rnd() < _ERA_NAME_SHARE else pools[3]
        given = pool[int(rnd() * len(pool))]

        kind = rnd()
        changes_later = kind < tenkyo_bound
        last_first_change = last_day - 1 if changes_later else last_day
        birth = min(birth, last_first_change)  # leave a day for the later change
        if rnd() < _BORN_HERE_SHARE:
            reason, changed = shussei, birth
        else:
            reason, changed = tennyu, birth + int(rnd() * (last_first_change - birth + 1))

        town = municipality.towns[int(rnd() * len(municipality.towns))]
        former = None
        if year <= _ADULT_LAST_YEAR_INDEX and rnd() < (former_male if is_male else former_female):
            other = surname
            while other is surname:
                other = surnames[bisect_right(surname_cum, rnd() * surname_total)]
            former = other

        # Fields left at their defaults (sequence 0, not deleted) are not set; the 4情報 are set in place,
        # which is cheaper than building a FourInfo to copy in. The draws keep their order.
        record = record_cls(
            resident_code=resident_code,
            my_number=my_number,
            change_reason=reason,
            change_date=dates[changed],
            municipality_code=municipality.code,
            oaza_code=town.oaza_code,
            notified_date=dates[changed],
            state=active,
        )
        info = record.four_info
        info.name_kanji = f"{surname[0]}\u3000{given[0]}"
        info.name_kana = f"{surname[1]}\u3000{given[1]}"
        info.birth_date = dates[birth]
        info.sex = male if is_male else female
        info.address = _address(rnd, municipality, town)
        record.operator_id = municipality.operators[int(rnd() * _OPERATORS_PER_MUNICIPALITY)]
        record.terminal_id = municipality.terminals[int(rnd() * _TERMINALS_PER_MUNICIPALITY)]
        record.timestamp = timestamp(changed)
        if former is not None:
            former_surname = record.former_surname
            former_surname.kanji, former_surname.kana = former[0], former[1]
        if not changes_later:
            yield SeedEntry(record, no_history)
            continue

        later = changed + 1 + int(rnd() * (last_day - changed))
        current = record_cls()
        current.CopyFrom(record)
        current.change_date = dates[later]
        current.notified_date = dates[later]
        current.timestamp = timestamp(later)
        current.operator_id = municipality.operators[int(rnd() * _OPERATORS_PER_MUNICIPALITY)]
        current.terminal_id = municipality.terminals[int(rnd() * _TERMINALS_PER_MUNICIPALITY)]
        if kind < removed_share:
            current.change_reason = _removal_reason(rnd(), year)
            current.state = records_pb2.RECORD_STATE_REMOVED
            current.deleted_flag = True
            current.removed_date = dates[later]
        else:
            current.change_reason = records_pb2.CHANGE_REASON_TENKYO
            address = record.four_info.address
            while address == record.four_info.address:
                town = municipality.towns[int(rnd() * len(municipality.towns))]
                address = _address(rnd, municipality, town)
            current.four_info.address = address
            current.oaza_code = town.oaza_code
        yield SeedEntry(current, (record,))


def _removal_reason(draw: float, year_index: int) -> records_pb2.ChangeReason:
    """死亡 is likelier the older the person, 転出 otherwise."""
    birth_year = _FIRST_YEAR + year_index
    death_share = 0.85 if birth_year < 1945 else 0.4 if birth_year < 1965 else 0.1
    return records_pb2.CHANGE_REASON_SHIBOU if draw < death_share else records_pb2.CHANGE_REASON_TENSHUTSU
