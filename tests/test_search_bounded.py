"""SPEC §6.3 "fast at 10 million records": the common 4情報 queries — kana prefix + date of birth, kana + sex
(+ address prefix) — examine a number of index entries that does not grow with the store, and answer what
a scan of every bearer of the name answers, in the same order and pages. idx_name_address is written with
the record, in its transaction, and a store from before it gets it built once when opened.

Every store here is a real LMDB environment on disk."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import itertools
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from juki.v1 import prefecture_pb2, records_pb2

from server.app import open_fuhyo_store, open_store, open_store_readonly
from server.domain.kana import search_kana
from server.domain.search import (
    ON_LOOP_EXAMINED,
    Cursor,
    PageTokens,
    Searcher,
    SearchPage,
    SearchQuery,
    parse_query,
    run_search,
)
from server.domain.updates import apply_notice, validate_notice
from server.settings import Settings
from server.storage.fuhyo_file import FuhyoFile
from server.storage.record_file import NAME_KEY_BYTES, RecordFile, RecordTxn, index_entries, index_text
from server.storage.residents import ResidentFile, ResidentStore, ResidentTxn
from tests.conftest import Server
from tests.notices import Municipality, fresh_resident

R = records_pb2
TODAY = dt.date(2026, 12, 1)
# Names that begin with サトウ (folded): the prefix of the queries; and one that does not.
NAMES = ("サトウ　ハナコ", "サトウ　タロウ", "サトウ　ハナ", "サトウラ　ユイ", "スズキ　ハナコ")
TARGET_DOB, TARGET_TOWN = "1971-03-04", "三重県津市広明町"
_codes = itertools.count(10_000_000_000)


def _record(name: str, birth: str, sex: int, address: str, removed: bool = False) -> R.ResidentRecord:
    return R.ResidentRecord(
        resident_code=str(next(_codes)),
        municipality_code="242012",
        state=R.RECORD_STATE_REMOVED if removed else R.RECORD_STATE_ACTIVE,
        deleted_flag=removed,
        removed_date="2020-01-01" if removed else "",
        four_info=R.FourInfo(
            name_kanji="合成　太郎", name_kana=name, birth_date=birth, sex=sex, address=address
        ),
    )


def _targets() -> list[R.ResidentRecord]:
    """The people the queries find: every name, born on the target day, both sexes, in the target town."""
    return [
        _record(name, TARGET_DOB, sex, f"{TARGET_TOWN}{n}番地")
        for name in NAMES
        for n, sex in enumerate((R.SEX_FEMALE, R.SEX_MALE, R.SEX_FEMALE))
    ]


def _fillers(count: int) -> Iterator[R.ResidentRecord]:
    """People with the same names whom neither query matches: born another day, and living elsewhere."""
    for n in range(count):
        birth = (dt.date(1940, 1, 1) + dt.timedelta(days=1 + n % 20_000)).isoformat()
        if birth == TARGET_DOB:
            birth = "1971-03-05"
        sex = (R.SEX_MALE, R.SEX_FEMALE)[n % 2]
        yield _record(NAMES[n % len(NAMES)], birth, sex, f"三重県四日市市諏訪町{n % 50}番地")


def _add(store: ResidentFile, records: Iterable[R.ResidentRecord]) -> None:
    chunk = list(records)

    def write(tx: Any) -> None:
        for record in chunk:
            tx.put_record(record, "")

    store.apply_sync(write)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ResidentStore]:
    opened = open_store(Settings(home=tmp_path))
    yield opened
    opened.env.close()


QUERIES: dict[str, dict[str, Any]] = {
    "kana prefix + birth date": {"name_kana": "さとう", "birth_date": TARGET_DOB},
    "full kana + birth date": {"name_kana": "サトウ　ハナコ", "birth_date": TARGET_DOB},
    "kana prefix + sex + address prefix": {
        "name_kana": "サトウ",
        "sex": R.SEX_FEMALE,
        "address_prefix": TARGET_TOWN,
    },
}


def _query(criteria: dict[str, Any]) -> SearchQuery:
    return parse_query(prefecture_pb2.SearchRequest(purpose="identity-check", **criteria), today=TODAY)


def _search(
    store: RecordFile[Any], criteria: dict[str, Any], cursor: Cursor | None = None, **limits: int
) -> SearchPage:
    with store.reader() as tx:
        return run_search(
            tx,
            _query(criteria),
            cursor,
            page_size=limits.get("page_size", 100),
            scan_limit=limits.get("scan_limit", 50_000),
            max_results=limits.get("max_results", 1000),
        )


def _walk(store: RecordFile[Any], criteria: dict[str, Any], **limits: int) -> list[str]:
    """Every page of a search, in order: the codes found."""
    seen: list[str] = []
    cursor: Cursor | None = None
    for _ in range(10_000):
        page = _search(store, criteria, cursor, **limits)
        seen += [r.resident_code for r in page.records]
        cursor = page.next_cursor
        if cursor is None:
            return seen
    raise AssertionError("the pages never ended")


def _brute_force(records: Iterable[R.ResidentRecord], query: SearchQuery) -> list[str]:
    """What scanning every record finds, in idx_name's order (name, date of birth, code): the order every
    kana search has always answered in."""
    found = []
    for r in records:
        info, kana = r.four_info, search_kana(r.four_info.name_kana)
        birth = info.birth_date.replace("-", "").encode()
        if (
            kana.startswith(query.kana)
            and (not query.birth_from or query.birth_from <= birth <= query.birth_to)
            and (not query.sex or info.sex == query.sex)
            and info.address.startswith(query.address_prefix)
            and (query.include_removed or not r.deleted_flag)
        ):
            found.append((index_text(kana, NAME_KEY_BYTES), birth, r.resident_code))
    return [code for *_, code in sorted(found)]


@pytest.mark.parametrize("name", list(QUERIES))
def test_entries_examined_do_not_grow_with_the_store(store: ResidentStore, name: str) -> None:
    criteria = QUERIES[name]
    targets = _targets()
    _add(store, targets)
    _add(store, _fillers(300))
    small = _search(store, criteria)
    _add(store, _fillers(3000))  # eleven times the people, the same names
    large = _search(store, criteria)

    expected = _brute_force(targets, _query(criteria))
    assert expected and [r.resident_code for r in large.records] == expected
    assert [r.resident_code for r in small.records] == expected
    assert large.examined == small.examined
    # the work is the matches plus at most two other keys per name that begins with the prefix
    assert large.examined <= len(expected) + 2 * len(NAMES)


def test_a_query_the_composite_keys_do_not_cover_still_scans_every_bearer(store: ResidentStore) -> None:
    """The control: kana + a range of dates scans every bearer of the name (so the test above measures
    something); the bounded queries do not."""
    criteria = {"name_kana": "さとう", "birth_date_from": "1971-01-01", "birth_date_to": "1971-12-31"}
    _add(store, _targets())
    _add(store, _fillers(300))
    small = _search(store, criteria)
    _add(store, _fillers(3000))
    assert _search(store, criteria).examined > 5 * small.examined


@pytest.mark.parametrize("name", list(QUERIES))
@pytest.mark.parametrize(
    "limits", [{"page_size": 2}, {"scan_limit": 3}, {"scan_limit": 1}], ids=["pages", "scan-3", "scan-1"]
)
def test_pages_of_a_bounded_query_walk_every_match_once_in_order(
    store: ResidentStore, name: str, limits: dict[str, int]
) -> None:
    criteria = QUERIES[name]
    targets = _targets()
    _add(store, targets)
    _add(store, _fillers(500))
    assert _walk(store, criteria, **limits) == _brute_force(targets, _query(criteria))


def test_kana_sex_and_address_answer_in_the_order_of_name_and_date_of_birth(store: ResidentStore) -> None:
    """idx_name_address sorts a name's people by address; the answer keeps idx_name's order (name, date of
    birth, code), as it always had, on one page and across pages."""
    older = _record("サトウ　ハナコ", "1960-01-01", R.SEX_FEMALE, "三重県津市広明町9番地")
    younger = _record("サトウ　ハナコ", "1990-01-01", R.SEX_FEMALE, "三重県津市広明町1番地")
    other = _record("サトウ　ハナ", "2000-01-01", R.SEX_FEMALE, "三重県津市広明町5番地")
    _add(store, [younger, older, other])
    criteria = {"name_kana": "さとう", "sex": R.SEX_FEMALE, "address_prefix": "三重県津市"}
    expected = [other.resident_code, older.resident_code, younger.resident_code]  # サトウハナ < サトウハナコ
    assert _brute_force([older, younger, other], _query(criteria)) == expected
    assert _walk(store, criteria) == _walk(store, criteria, page_size=1) == expected


_KANA = ("サトウ　ハナコ", "サトウ　ハナ", "サトウ", "サド　ケン", "ｻﾄｳ ﾀﾛｳ", "スズキ　イチロウ", "ア" * 100)
_TOWNS = ("三重県津市広明町", "三重県津市丸之内", "三重県四日市市諏訪町", "三" * 163)
_DATES = ("1971-03-04", "1971-03-05", "1980-01-01")
_people = st.builds(
    lambda name, birth, sex, town, n, removed: _record(name, birth, sex, f"{town}{n}番地", removed),
    st.sampled_from(_KANA),
    st.sampled_from(_DATES),
    st.sampled_from((R.SEX_MALE, R.SEX_FEMALE)),
    st.sampled_from(_TOWNS),
    st.integers(1, 3),
    st.booleans(),
)
_DATE = st.sampled_from(_DATES)
_SEX = st.sampled_from((R.SEX_MALE, R.SEX_FEMALE))
_ADDRESS = st.sampled_from(("三重県津市", "三重県津市広明町2", "三重県四日市", "三三三"))
_criteria = st.tuples(
    st.sampled_from(("さとう", "サトウ　ハナ", "さ", "ｽｽﾞｷ", "あああ")),
    st.one_of(  # the second criterion or more: each plan of a kana search
        st.fixed_dictionaries({"birth_date": _DATE}, optional={"sex": _SEX, "address_prefix": _ADDRESS}),
        st.fixed_dictionaries({"sex": _SEX}, optional={"address_prefix": _ADDRESS}),
        st.fixed_dictionaries(
            {"sex": _SEX, "birth_date_from": st.just("1971-03-05"), "birth_date_to": st.just("1990-01-01")}
        ),
        st.fixed_dictionaries({"address_prefix": _ADDRESS}),
    ),
    st.booleans(),
).map(lambda t: {"name_kana": t[0], **t[1], "include_removed": t[2]})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    people=st.lists(_people, min_size=20, max_size=60),
    criteria=_criteria,
    limits=st.sampled_from(({}, {"page_size": 1}, {"page_size": 3, "scan_limit": 2}, {"scan_limit": 1})),
)
def test_every_kana_search_answers_what_a_scan_of_every_record_answers(
    tmp_path_factory: pytest.TempPathFactory,
    people: list[R.ResidentRecord],
    criteria: dict[str, Any],
    limits: dict[str, int],
) -> None:
    """Whatever the people, the criteria, the page size and the scan limit (which sends a name with more
    matches than it to idx_name): the pages hold exactly the matches, once each, in idx_name's order."""
    store = open_store(Settings(home=tmp_path_factory.mktemp("h")))
    try:
        _add(store, people)
        assert _walk(store, criteria, **limits) == _brute_force(people, _query(criteria))
    finally:
        store.env.close()


def _name_address_agrees_with_records(store: RecordFile[Any]) -> tuple[int, int]:
    """idx_name_address holds exactly the entries the records give (and no other): (entries, records)."""
    with store.reader() as tx:
        held = set(_entries(tx, "idx_name_address"))
        codes = [code for code, _ in _entries(tx, "records")]
        derived: set[tuple[bytes, bytes]] = set()
        for code in codes:
            view = tx.get(code.decode())
            assert view is not None
            derived |= {(k, v) for db, k, v in index_entries(view) if db == "idx_name_address"}
    assert held == derived
    return len(held), len(codes)


def _entries(tx: RecordTxn, db: str) -> Iterator[tuple[bytes, bytes]]:
    with tx._txn.cursor(db=tx._dbs[db]) as cur:
        yield from ((bytes(k), bytes(v)) for k, v in cur)


def test_apply_update_moves_the_name_address_entry_with_the_record(store: ResidentStore) -> None:
    """Every change of name, sex or address, a removal (転出) and the erasure, moves idx_name_address in the
    transaction that changes the record: after each notice the index agrees with the records, and a search
    finds the new 4情報, not the old."""
    town = Municipality("242012")
    code, number = fresh_resident()
    notices = [
        town.notice(code, R.CHANGE_REASON_TENNYU, my_number=number, name_kana="サトウ　ハナコ"),
        town.notice(
            code,
            R.CHANGE_REASON_TENKYO,
            my_number=number,
            name_kana="サトウ　ハナコ",
            address="三重県津市丸之内1番",
        ),
        town.notice(
            code,
            R.CHANGE_REASON_SHIMEI_HENKO,
            my_number=number,
            name_kana="スズキ　ハナコ",
            address="三重県津市丸之内1番",
        ),
        town.notice(
            code,
            R.CHANGE_REASON_SHOKKEN_SHUSEI,
            my_number=number,
            name_kana="スズキ　ハナコ",
            address="三重県津市丸之内1番",
            sex=R.SEX_MALE,
        ),
        town.notice(code, R.CHANGE_REASON_TENSHUTSU),
    ]
    now = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)
    for notice in notices:
        validate_notice(notice, today=TODAY)
        store.apply_sync(functools.partial(_apply, notice, now))
        assert _name_address_agrees_with_records(store) == (1, 1)
    address = "三重県津市丸之内"
    assert not _search(store, {"name_kana": "サトウ", "sex": R.SEX_FEMALE, "address_prefix": address}).records
    found = _search(
        store, {"name_kana": "スズキ", "sex": R.SEX_MALE, "address_prefix": address, "include_removed": True}
    )
    assert [r.resident_code for r in found.records] == [code]
    # 150 years on (SPEC §6.4) the removed person is erased, with every index entry
    assert asyncio.run(store.erase_removed_before("2200-01-01", 10))[0] == 1
    assert _name_address_agrees_with_records(store) == (0, 0)


def _apply(notice: prefecture_pb2.ChangeNotice, now: dt.datetime, tx: ResidentTxn) -> object:
    return apply_notice(tx, notice, caller_municipality="242012", now=lambda: now)


def test_a_write_that_fails_leaves_record_and_index_as_they_were(store: ResidentStore) -> None:
    """The record and its idx_name_address entry are one transaction: a write that fails after changing
    both (here an error; a crash is the same to LMDB) leaves neither changed."""
    (person,) = _add_one(store, "サトウ　ハナコ", "三重県津市広明町1番地")
    before = _name_address_agrees_with_records(store)

    def move_then_fail(tx: Any) -> None:
        moved = R.ResidentRecord()
        moved.CopyFrom(person)
        moved.four_info.address, moved.four_info.sex = "三重県四日市市諏訪町1番地", R.SEX_MALE
        tx.put_record(moved, "")
        raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        store.apply_sync(move_then_fail)
    assert _name_address_agrees_with_records(store) == before
    criteria = {"name_kana": "サトウ", "sex": R.SEX_FEMALE, "address_prefix": "三重県津市"}
    assert [r.resident_code for r in _search(store, criteria).records] == [person.resident_code]


def _add_one(store: ResidentFile, name: str, address: str) -> list[R.ResidentRecord]:
    person = _record(name, TARGET_DOB, R.SEX_FEMALE, address)
    _add(store, [person])
    return [person]


def test_a_bulk_load_writes_the_entries_a_record_write_does(tmp_path: Path) -> None:
    from server.seed.load import load
    from server.seed.population import generate

    bulk = open_store(Settings(home=tmp_path / "bulk"))
    each = open_store(Settings(home=tmp_path / "each"))
    try:
        load(bulk, generate(400, 5), worker=False)
        load(each, itertools.chain([next(iter(generate(1, 9)))], generate(400, 5)))  # not empty: per record
        entries, records = _name_address_agrees_with_records(bulk)
        assert entries == records == 400
        with bulk.reader() as a, each.reader() as b:
            assert set(_entries(a, "idx_name_address")) <= set(_entries(b, "idx_name_address"))
    finally:
        bulk.env.close()
        each.env.close()


def _as_older_schema(store: RecordFile[Any], version: bytes) -> None:
    """The file as the code before idx_name_address left it: that version, no such database."""

    def work(txn: Any) -> None:
        txn.put(b"schema_version", version, db=store.env.dbs["meta"])
        txn.drop(store.env.dbs["idx_name_address"], delete=True)

    store.env.write_sync(work)
    store.env.close()


def test_a_store_from_before_the_name_address_index_gets_it_built_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_ = Settings(home=tmp_path)
    store = open_store(settings_)
    targets = _targets()
    _add(store, [*targets, *_fillers(200)])
    criteria = QUERIES["kana prefix + sex + address prefix"]
    before = _search(store, criteria)
    _as_older_schema(store, b"2")

    builds: list[int] = []
    build = RecordFile.build_name_address_index

    def counted(self: RecordFile[Any], txn: Any, **kw: int) -> dict[str, int]:
        builds.append(1)
        return build(self, txn, progress_every=50)

    monkeypatch.setattr(RecordFile, "build_name_address_index", counted)
    for _ in range(2):  # the second opening finds schema 3: nothing to build
        reopened = open_store(settings_)
        try:
            with reopened.env.read() as txn:
                assert bytes(txn.get(b"schema_version", db=reopened.env.dbs["meta"])) == b"3"
            assert _name_address_agrees_with_records(reopened) == (len(targets) + 200,) * 2
            after = _search(reopened, criteria)
            assert [r.resident_code for r in after.records] == [r.resident_code for r in before.records]
            assert after.examined == before.examined
        finally:
            reopened.env.close()
    assert builds == [1]
    readonly = open_store_readonly(settings_)  # a status command beside the server sees the index too
    try:
        assert _search(readonly, criteria).records == after.records
    finally:
        readonly.env.close()


def test_a_fuhyo_store_of_schema_3_gets_the_index_and_answers_the_same(tmp_path: Path) -> None:
    """The 附票 file searches with the same plans, so it has the index too, built when an older one opens."""
    settings_ = Settings(home=tmp_path)
    store = open_fuhyo_store(settings_)
    people = [*_targets(), *_fillers(100)]
    fuhyo = [
        R.FuhyoRecord(
            resident_code=p.resident_code,
            name_kanji=p.four_info.name_kanji,
            name_kana=p.four_info.name_kana,
            birth_date=p.four_info.birth_date,
            sex=p.four_info.sex,
            address=p.four_info.address,
            change_date="2024-05-01",
            managing_municipality_code="242012",
            state_kind=R.FUHYO_STATE_DOMESTIC,
        )
        for p in people
    ]
    store.put_records(fuhyo)
    criteria = QUERIES["kana prefix + sex + address prefix"]
    expected = _brute_force(people, _query(criteria))
    assert [r.resident_code for r in _search(store, criteria).records] == expected
    _as_older_schema(store, b"3")

    reopened: FuhyoFile = open_fuhyo_store(settings_)
    try:
        assert _name_address_agrees_with_records(reopened) == (len(people), len(people))
        page = _search(reopened, criteria)
        assert [r.resident_code for r in page.records] == expected
        assert page.examined <= len(expected) + 2 * len(NAMES)
    finally:
        reopened.env.close()


def test_updates_over_grpc_keep_the_index_in_agreement(server: Server) -> None:
    """ApplyUpdate and ApplyUpdates on the running server: after 転入, 転居, 氏名の変更 and 職権修正 of
    sex, the store's idx_name_address agrees with its records (read by another process's view)."""
    town = Municipality("242047")
    stub = server.stub("municipal-cs/242047")
    code, number = fresh_resident()
    first = town.notice(code, R.CHANGE_REASON_TENNYU, my_number=number, name_kana="ヤマダ　ハナコ")
    stub.ApplyUpdate(prefecture_pb2.ApplyUpdateRequest(notice=first), timeout=10)
    later = [
        town.notice(
            code,
            R.CHANGE_REASON_TENKYO,
            my_number=number,
            name_kana="ヤマダ　ハナコ",
            address="三重県四日市市諏訪町1番",
        ),
        town.notice(
            code,
            R.CHANGE_REASON_SHIMEI_HENKO,
            my_number=number,
            name_kana="タナカ　ハナコ",
            address="三重県四日市市諏訪町1番",
        ),
        town.notice(
            code,
            R.CHANGE_REASON_SHOKKEN_SHUSEI,
            my_number=number,
            name_kana="タナカ　ハナコ",
            address="三重県四日市市諏訪町1番",
            sex=R.SEX_MALE,
        ),
    ]
    stub.ApplyUpdates(iter([prefecture_pb2.ApplyUpdateRequest(notice=n) for n in later]), timeout=10)
    store = open_store_readonly(server.settings)
    try:
        _name_address_agrees_with_records(store)
        with store.reader() as tx:
            mine = [k for k, _ in _entries(tx, "idx_name_address") if k.endswith(code.encode())]
        assert mine == [
            "タナカハナコ".encode()
            + b"\x00"
            + bytes((R.SEX_MALE,))
            + "三重県四日市市諏訪町1番".encode()
            + b"\x00"
            + code.encode()
        ]
    finally:
        store.env.close()


def _searcher() -> Searcher:
    return Searcher(PageTokens(b"k" * 32))


@pytest.mark.parametrize("name", list(QUERIES))
def test_a_bounded_search_is_answered_within_the_event_loops_budget(store: ResidentStore, name: str) -> None:
    """The common queries fit ON_LOOP_EXAMINED however large the store, and the page is the one a search
    without a budget gives (so `Searcher.answer` serves them on the loop, the same)."""
    _add(store, _targets())
    _add(store, _fillers(3000))
    request = prefecture_pb2.SearchRequest(purpose="identity-check", **QUERIES[name])
    searcher = _searcher()
    within = searcher.search_within(
        store, request, caller="spiffe://juki.mie/x/y", today=TODAY, budget=ON_LOOP_EXAMINED
    )
    whole = searcher.search(store, request, caller="spiffe://juki.mie/x/y", today=TODAY)
    assert within is not None
    assert [r.resident_code for r in within[0]] == [r.resident_code for r in whole[0]]
    assert (bool(within[1]), within[2]) == (bool(whole[1]), whole[2])  # a token is sealed afresh each time


def test_a_search_over_the_budget_is_given_back_whole_to_a_thread(store: ResidentStore) -> None:
    _add(store, _targets())
    _add(store, _fillers(3000))
    # a range of dates and a town: every bearer of the names is read, and few (here: none of the fillers)
    # match, so the page is not full long after ON_LOOP_EXAMINED entries
    range_query = prefecture_pb2.SearchRequest(
        purpose="identity-check",
        name_kana="サトウ",
        birth_date_from="1900-01-01",
        birth_date_to="2020-12-31",
        address_prefix=TARGET_TOWN,
    )
    searcher = _searcher()
    caller = "spiffe://juki.mie/x/y"
    assert (
        searcher.search_within(store, range_query, caller=caller, today=TODAY, budget=ON_LOOP_EXAMINED)
        is None
    )
    readers: list[int] = []

    class Spy:  # the store, noting which thread each read runs in
        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        def reader(self) -> Any:
            readers.append(threading.get_ident())
            return store.reader()

    spied: Any = Spy()
    answered = asyncio.run(searcher.answer(spied, range_query, caller="spiffe://juki.mie/x/y", today=TODAY))
    here = threading.get_ident()
    assert readers[0] == here and readers[1] != here  # tried within the budget on the loop, then a thread
    whole = searcher.search(store, range_query, caller="spiffe://juki.mie/x/y", today=TODAY)
    assert len(answered[0]) == len(whole[0]) > 0
    assert [r.resident_code for r in answered[0]] == [r.resident_code for r in whole[0]]
