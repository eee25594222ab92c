"""SPEC §5, §6.1, §6.3: bad input gets INVALID_ARGUMENT naming every bad field, and changes nothing.

Every refused notice is checked against the store the server writes (opened read-only from the test
process): the municipality's sequence, the record counts, the My Number index and the outbox are unchanged,
the resident code is not held, and the corrected notice with the same sequence is then applied.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from juki.v1 import prefecture_pb2, records_pb2

from clients.channel import error_details
from server.domain.codes import my_number_check_digit
from server.storage.residents import ResidentStore
from tests.conftest import Server, make_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki_dir: Any) -> Iterator[Server]:
    """No national peer here: the outbox must stay still so that "nothing written" can count it."""
    srv = make_server(tmp_path_factory.mktemp("srv"), pki_dir, with_national=False)
    srv.start()
    yield srv
    srv.stop_all()


MUNICIPALITY = "242012"
CS = f"municipal-cs/{MUNICIPALITY}"
OPERATOR = "operator/op-0001"
PURPOSE = "identity-check"
VALID_MY_NUMBER = "983205673214"

Notice = prefecture_pb2.ChangeNotice
Mutation = Callable[[Notice], None]

_serial = itertools.count(1)


# --- helpers ---------------------------------------------------------------------------------------------


def my_number_for(first11: str) -> str:
    return first11 + str(my_number_check_digit(first11))


def wrong_check_digit(my_number: str) -> str:
    return my_number[:11] + str((int(my_number[11]) + 1) % 10)


def valid_notice(sequence: int) -> Notice:
    """A valid 出生 notice for a new resident: code 9000000xxxx and a My Number no seeded resident has."""
    n = next(_serial)
    return Notice(
        municipality_code=MUNICIPALITY,
        sequence=sequence,
        resident_code=f"9{n:010d}",
        change_reason=records_pb2.CHANGE_REASON_SHUSSEI,
        change_date="2020-01-02",
        four_info=records_pb2.FourInfo(
            name_kanji="三重　花子",
            name_kana="ミエ　ハナコ",
            birth_date="2020-01-02",
            sex=records_pb2.SEX_FEMALE,
            address="三重県津市広明町13番地",
        ),
        my_number=my_number_for(f"8{n:010d}"),
        oaza_code="1001",
        operator_id="op-0001",
        terminal_id="term-01",
        timestamp="2020-01-03T09:30:00+09:00",
    )


@dataclass(frozen=True)
class Snapshot:
    """What any write would move: the sequence, every table a notice writes, the outbox."""

    last_sequence: int
    records: int
    history: int
    my_number_index: int
    applied: int
    outbox: int


def snapshot(store: ResidentStore) -> Snapshot:
    with store.reader() as tx:
        return Snapshot(
            last_sequence=tx.last_sequence(MUNICIPALITY),
            records=tx.count("records"),
            history=tx.count("history"),
            my_number_index=tx.count("my_number_index"),
            applied=tx.count("applied"),
            outbox=tx.outbox_depth(),
        )


def next_sequence(store: ResidentStore) -> int:
    return snapshot(store).last_sequence + 1


def is_held(store: ResidentStore, resident_code: str) -> bool:
    with store.reader() as tx:
        return tx.get(resident_code) is not None


def refused(call: Callable[..., Any], request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=10)
    return info.value


def violated(error: grpc.RpcError) -> set[str]:
    violations, _, _ = error_details(error)
    return {field for field, _ in violations}


def assert_invalid(error: grpc.RpcError, fields: set[str]) -> None:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert violated(error) == fields
    _, _, reason = error_details(error)
    assert reason == "INVALID_FIELDS"


def assert_no_echo(error: grpc.RpcError, *values: str) -> None:
    """Neither the message nor any trailing metadata (text or binary) carries a submitted value."""
    trailing: Any = error.trailing_metadata() or ()
    text = (error.details() or "") + repr(trailing)
    blobs = b"".join(value for _, value in trailing if isinstance(value, bytes))
    for value in values:
        if len(value) < 4:  # too short to mean anything (could match a number in a description)
            continue
        assert value not in text
        assert value.encode() not in blobs


def assert_nothing_written(store: ResidentStore, before: Snapshot, *resident_codes: str) -> None:
    assert snapshot(store) == before
    for code in resident_codes:
        assert not is_held(store, code)


def apply(server: Server, notice: Notice) -> Any:
    return server.stub(CS).ApplyUpdate(prefecture_pb2.ApplyUpdateRequest(notice=notice), timeout=10)


def assert_applies(server: Server, store: ResidentStore, notice: Notice) -> None:
    response = apply(server, notice)
    assert not response.replayed
    assert response.result.sequence == notice.sequence
    assert snapshot(store).last_sequence == notice.sequence
    with store.reader() as tx:
        record = tx.get(notice.resident_code)
        assert record is not None
        assert tx.my_number(notice.resident_code) == notice.my_number


def put(path: str, value: Any) -> Mutation:
    """A mutation setting one (possibly nested: "four_info.sex") field of a notice."""

    def mutate(notice: Notice) -> None:
        *parents, name = path.split(".")
        target: Any = notice
        for parent in parents:
            target = getattr(target, parent)
        setattr(target, name, value)

    return mutate


def wrong_my_number_check_digit(notice: Notice) -> None:
    notice.my_number = wrong_check_digit(notice.my_number)


def drop_four_info(notice: Notice) -> None:
    notice.ClearField("four_info")


def bad_former_surname(notice: Notice) -> None:
    notice.former_surname.CopyFrom(records_pb2.FormerSurname(kanji="旧姓", kana="Smith"))


@pytest.fixture(scope="module")
def store(server: Server) -> Iterator[ResidentStore]:
    reader = server.open_reader()
    yield reader
    reader.env.close()


# --- ApplyUpdate -----------------------------------------------------------------------------------------

N = "notice"
F = "notice.four_info"
BAD_NOTICES: list[tuple[str, Mutation, set[str]]] = [
    ("resident_code-10-digits", put("resident_code", "9000000000"), {f"{N}.resident_code"}),
    ("resident_code-12-digits", put("resident_code", "900000000001"), {f"{N}.resident_code"}),
    ("resident_code-letters", put("resident_code", "9000000000A"), {f"{N}.resident_code"}),
    ("resident_code-full-width", put("resident_code", "９００００００００１２"), {f"{N}.resident_code"}),
    ("resident_code-empty", put("resident_code", ""), {f"{N}.resident_code"}),
    ("my_number-check-digit", wrong_my_number_check_digit, {f"{N}.my_number"}),
    ("my_number-11-digits", put("my_number", VALID_MY_NUMBER[:11]), {f"{N}.my_number"}),
    ("my_number-full-width", put("my_number", "９８３２０５６７３２１４"), {f"{N}.my_number"}),
    ("my_number-missing", put("my_number", ""), {f"{N}.my_number"}),
    ("municipality-check-digit", put("municipality_code", "242013"), {f"{N}.municipality_code"}),
    ("municipality-not-in-mie", put("municipality_code", "131016"), {f"{N}.municipality_code"}),
    ("municipality-5-digits", put("municipality_code", "24201"), {f"{N}.municipality_code"}),
    ("municipality-full-width", put("municipality_code", "２４２０１２"), {f"{N}.municipality_code"}),
    ("sequence-0", put("sequence", 0), {f"{N}.sequence"}),
    ("change_reason-unspecified", put("change_reason", 0), {f"{N}.change_reason"}),
    ("change_reason-unknown", put("change_reason", 99), {f"{N}.change_reason"}),
    ("change_date-not-iso", put("change_date", "2020/01/02"), {f"{N}.change_date"}),
    ("change_date-no-dashes", put("change_date", "20200102"), {f"{N}.change_date"}),
    ("change_date-not-a-day", put("change_date", "2020-02-30"), {f"{N}.change_date"}),
    ("change_date-full-width", put("change_date", "２０２０-０１-０２"), {f"{N}.change_date"}),
    ("change_date-missing", put("change_date", ""), {f"{N}.change_date"}),
    ("change_date-future", put("change_date", "2999-01-01"), {f"{N}.change_date"}),
    ("change_date-before-birth", put("change_date", "2020-01-01"), {f"{N}.change_date"}),
    ("four_info-missing-on-creation", drop_four_info, {f"{N}.four_info"}),
    ("birth_date-future", put("four_info.birth_date", "2999-01-01"), {f"{F}.birth_date", f"{N}.change_date"}),
    ("birth_date-before-1850", put("four_info.birth_date", "1849-12-31"), {f"{F}.birth_date"}),
    ("name_kana-latin", put("four_info.name_kana", "Taro"), {f"{F}.name_kana"}),
    ("name_kana-kanji", put("four_info.name_kana", "三重　花子"), {f"{F}.name_kana"}),
    ("name_kana-only-spaces", put("four_info.name_kana", "\u3000 "), {f"{F}.name_kana"}),
    ("name_kana-101", put("four_info.name_kana", "ア" * 101), {f"{F}.name_kana"}),
    ("name_kanji-101", put("four_info.name_kanji", "三" * 101), {f"{F}.name_kanji"}),
    ("name_kanji-missing", put("four_info.name_kanji", ""), {f"{F}.name_kanji"}),
    ("sex-unspecified", put("four_info.sex", records_pb2.SEX_UNSPECIFIED), {f"{F}.sex"}),
    ("sex-unknown-code", put("four_info.sex", 9), {f"{F}.sex"}),
    ("address-newline", put("four_info.address", "三重県津市\n広明町13番地"), {f"{F}.address"}),
    ("address-nul", put("four_info.address", "三重県津市\x00広明町13番地"), {f"{F}.address"}),
    ("address-bidi-override", put("four_info.address", "三重県津市\u202e広明町13番地"), {f"{F}.address"}),
    ("address-201", put("four_info.address", "三" * 201), {f"{F}.address"}),
    ("timestamp-not-a-time", put("timestamp", "yesterday at noon"), {f"{N}.timestamp"}),
    ("timestamp-no-offset", put("timestamp", "2020-01-03T09:30:00"), {f"{N}.timestamp"}),
    ("timestamp-bad-hour", put("timestamp", "2020-01-03T25:30:00+09:00"), {f"{N}.timestamp"}),
    ("oaza_code-letters", put("oaza_code", "10a1"), {f"{N}.oaza_code"}),
    ("oaza_code-13-digits", put("oaza_code", "1" * 13), {f"{N}.oaza_code"}),
    ("operator_id-not-ascii", put("operator_id", "山田"), {f"{N}.operator_id"}),
    ("terminal_id-space", put("terminal_id", "term 01"), {f"{N}.terminal_id"}),
    ("name_gaiji_count-1000", put("name_gaiji_count", 1000), {f"{N}.name_gaiji_count"}),
    ("former_surname-kana", bad_former_surname, {f"{N}.former_surname.kana"}),
]


@pytest.mark.parametrize(
    ("mutation", "fields"), [c[1:] for c in BAD_NOTICES], ids=[c[0] for c in BAD_NOTICES]
)
def test_bad_notice_is_refused_naming_the_field_and_changes_nothing(
    server: Server, store: ResidentStore, mutation: Mutation, fields: set[str]
) -> None:
    before = snapshot(store)
    good = valid_notice(before.last_sequence + 1)
    bad = Notice()
    bad.CopyFrom(good)
    mutation(bad)
    assert bad != good

    error = refused(server.stub(CS).ApplyUpdate, prefecture_pb2.ApplyUpdateRequest(notice=bad))

    assert_invalid(error, fields)
    assert_no_echo(
        error, bad.four_info.name_kanji, bad.four_info.name_kana, bad.my_number, bad.four_info.address
    )
    assert_nothing_written(store, before, good.resident_code)
    # The sequence did not move and nothing of the code or the My Number was kept: the corrected notice,
    # same sequence, same resident code, same My Number, is applied as a creation.
    assert_applies(server, store, good)


def test_every_bad_field_is_named_at_once(server: Server, store: ResidentStore) -> None:
    before = snapshot(store)
    good = valid_notice(before.last_sequence + 1)
    bad = Notice()
    bad.CopyFrom(good)
    bad.resident_code = "9000000000X"
    bad.my_number = wrong_check_digit(good.my_number)
    bad.sequence = 0
    bad.change_date = "2020-13-01"
    bad.four_info.name_kana = "Hanako Mie"
    bad.four_info.sex = records_pb2.SEX_UNSPECIFIED
    bad.four_info.name_kanji = "花" * 101
    bad.four_info.address = "三重県津市\t広明町"
    bad.oaza_code = "oaza"
    bad.timestamp = "not a time"

    error = refused(server.stub(CS).ApplyUpdate, prefecture_pb2.ApplyUpdateRequest(notice=bad))

    assert_invalid(
        error,
        {
            "notice.resident_code",
            "notice.my_number",
            "notice.sequence",
            "notice.change_date",
            "notice.four_info.name_kana",
            "notice.four_info.sex",
            "notice.four_info.name_kanji",
            "notice.four_info.address",
            "notice.oaza_code",
            "notice.timestamp",
        },
    )
    assert_no_echo(
        error, bad.four_info.name_kanji, bad.four_info.name_kana, bad.my_number, bad.four_info.address
    )
    assert_nothing_written(store, before, good.resident_code)
    assert_applies(server, store, good)


def test_removal_of_a_malformed_code_is_refused_and_changes_nothing(
    server: Server, store: ResidentStore
) -> None:
    before = snapshot(store)
    notice = Notice(
        municipality_code=MUNICIPALITY,
        sequence=before.last_sequence + 1,
        resident_code="１２３４５６７８９０１",
        change_reason=records_pb2.CHANGE_REASON_SHIBOU,
        change_date="2024-05-06",
    )
    error = refused(server.stub(CS).ApplyUpdate, prefecture_pb2.ApplyUpdateRequest(notice=notice))
    assert_invalid(error, {"notice.resident_code"})
    assert_nothing_written(store, before)


# Regression: 大字・字コード must be ASCII digits (Python's \d also accepts full-width digits).
@pytest.mark.parametrize("oaza", ["１００１", "١٠٠١"], ids=["full-width", "arabic-indic"])
def test_oaza_code_in_non_ascii_digits_is_refused(server: Server, store: ResidentStore, oaza: str) -> None:
    before = snapshot(store)
    notice = valid_notice(before.last_sequence + 1)
    notice.oaza_code = oaza
    error = refused(server.stub(CS).ApplyUpdate, prefecture_pb2.ApplyUpdateRequest(notice=notice))
    assert_invalid(error, {"notice.oaza_code"})
    assert_nothing_written(store, before, notice.resident_code)


# Regression: timestamps are RFC 3339, not every ISO 8601 form datetime.fromisoformat accepts.
@pytest.mark.parametrize(
    "timestamp",
    ["2020-W01-5T09:30+09:00", "20200103T093000+0900", "2020-01-03T09+09:00"],
    ids=["week-date", "basic-format", "hour-only"],
)
def test_timestamp_that_is_not_rfc3339_is_refused(
    server: Server, store: ResidentStore, timestamp: str
) -> None:
    before = snapshot(store)
    notice = valid_notice(before.last_sequence + 1)
    notice.timestamp = timestamp
    error = refused(server.stub(CS).ApplyUpdate, prefecture_pb2.ApplyUpdateRequest(notice=notice))
    assert_invalid(error, {"notice.timestamp"})
    assert_nothing_written(store, before, notice.resident_code)


# --- ApplyUpdates (client stream) ------------------------------------------------------------------------


def test_stream_applies_the_valid_notices_before_the_first_bad_one(
    server: Server, store: ResidentStore
) -> None:
    before = snapshot(store)
    first = before.last_sequence + 1
    valid = [valid_notice(first + i) for i in range(3)]
    bad = valid_notice(first + 3)
    bad.my_number = wrong_check_digit(bad.my_number)
    bad.four_info.name_kana = "Hanako"
    requests = [prefecture_pb2.ApplyUpdateRequest(notice=n) for n in (*valid, bad)]

    error = refused(server.stub(CS).ApplyUpdates, iter(requests))

    assert_invalid(error, {"notices[3].my_number", "notices[3].four_info.name_kana"})
    assert_no_echo(error, bad.my_number, bad.four_info.name_kanji, bad.four_info.name_kana)
    _, metadata, _ = error_details(error)
    assert metadata["last_applied_sequence"] == str(first + 2)
    assert metadata["applied_in_stream"] == "3"
    after = snapshot(store)
    assert after.last_sequence == before.last_sequence + 3
    assert after.records == before.records + 3
    assert after.outbox == before.outbox + 3
    for notice in valid:
        assert is_held(store, notice.resident_code)
    assert not is_held(store, bad.resident_code)
    # The refused notice did not take its sequence: the corrected one is applied with it.
    bad.my_number, bad.four_info.name_kana = my_number_for(bad.my_number[:11]), "ミエ　ハナコ"
    assert_applies(server, store, bad)


def test_stream_whose_first_notice_is_bad_applies_nothing(server: Server, store: ResidentStore) -> None:
    before = snapshot(store)
    bad = valid_notice(before.last_sequence + 1)
    bad.four_info.sex = records_pb2.SEX_UNSPECIFIED
    good = valid_notice(before.last_sequence + 2)
    requests = [prefecture_pb2.ApplyUpdateRequest(notice=n) for n in (bad, good)]

    error = refused(server.stub(CS).ApplyUpdates, iter(requests))

    assert_invalid(error, {"notices[0].four_info.sex"})
    _, metadata, _ = error_details(error)
    assert metadata["last_applied_sequence"] == str(before.last_sequence)
    assert metadata["applied_in_stream"] == "0"
    assert_nothing_written(store, before, bad.resident_code, good.resident_code)


# --- Lookup ----------------------------------------------------------------------------------------------

BAD_LOOKUPS: list[tuple[str, dict[str, str], set[str]]] = [
    ("resident_code-10-digits", {"resident_code": "1234567890"}, {"resident_code"}),
    ("resident_code-letters", {"resident_code": "1234567890a"}, {"resident_code"}),
    ("resident_code-full-width", {"resident_code": "１２３４５６７８９０１"}, {"resident_code"}),
    ("resident_code-empty", {"resident_code": ""}, {"resident_code"}),
    ("my_number-check-digit", {"my_number": wrong_check_digit(VALID_MY_NUMBER)}, {"my_number"}),
    ("my_number-11-digits", {"my_number": VALID_MY_NUMBER[:11]}, {"my_number"}),
    ("my_number-full-width", {"my_number": "９８３２０５６７３２１４"}, {"my_number"}),
    ("no-key", {}, {"key"}),
    ("request_id-space", {"resident_code": "12345678901", "request_id": "req 1"}, {"request_id"}),
    ("two-bad-fields", {"resident_code": "12345", "request_id": "x" * 65}, {"resident_code", "request_id"}),
]


@pytest.mark.parametrize(("key", "fields"), [c[1:] for c in BAD_LOOKUPS], ids=[c[0] for c in BAD_LOOKUPS])
def test_malformed_lookup_is_invalid_argument(server: Server, key: dict[str, str], fields: set[str]) -> None:
    request = prefecture_pb2.LookupRequest(purpose=PURPOSE, **key)
    error = refused(server.stub(OPERATOR).Lookup, request)
    assert_invalid(error, fields)
    assert_no_echo(error, *key.values())


# --- Search ----------------------------------------------------------------------------------------------

FEMALE = records_pb2.SEX_FEMALE
BAD_SEARCHES: list[tuple[str, dict[str, Any], set[str]]] = [
    ("birth_date-malformed", {"birth_date": "2020-13-01", "sex": FEMALE}, {"birth_date"}),
    ("birth_date-not-iso", {"birth_date": "1980/01/02", "sex": FEMALE}, {"birth_date"}),
    ("birth_date-future", {"birth_date": "2999-01-01", "sex": FEMALE}, {"birth_date"}),
    (
        "range-from-after-to",
        {"birth_date_from": "2000-01-01", "birth_date_to": "1990-01-01", "sex": FEMALE},
        {"birth_date_to"},
    ),
    ("range-without-end", {"birth_date_from": "1990-01-01", "sex": FEMALE}, {"birth_date_to"}),
    (
        "range-malformed",
        {"birth_date_from": "1990-1-1", "birth_date_to": "2000-01-01", "sex": FEMALE},
        {"birth_date_from"},
    ),
    (
        "date-and-range",
        {
            "birth_date": "1990-01-01",
            "birth_date_from": "1980-01-01",
            "birth_date_to": "2000-01-01",
            "sex": FEMALE,
        },
        {"birth_date"},
    ),
    ("page_size-101", {"name_kana": "ヤマダ", "sex": FEMALE, "page_size": 101}, {"page_size"}),
    ("only-name_kana", {"name_kana": "ヤマダ　ハナコ"}, {"name_kana"}),
    ("only-sex", {"sex": FEMALE}, {"name_kana"}),
    ("only-birth_date", {"birth_date": "1980-01-02"}, {"name_kana"}),
    ("nothing", {}, {"name_kana"}),
    ("name_kana-latin", {"name_kana": "Yamada", "sex": FEMALE}, {"name_kana"}),
    ("address_prefix-control", {"address_prefix": "三重県\n津市", "sex": FEMALE}, {"address_prefix"}),
    ("sex-unknown-code", {"sex": 5, "birth_date": "1980-01-02"}, {"sex"}),
    (
        "request_id-too-long",
        {"sex": FEMALE, "birth_date": "1980-01-02", "request_id": "r" * 65},
        {"request_id"},
    ),
]


@pytest.mark.parametrize(
    ("criteria", "fields"), [c[1:] for c in BAD_SEARCHES], ids=[c[0] for c in BAD_SEARCHES]
)
def test_malformed_search_is_invalid_argument(
    server: Server, criteria: dict[str, Any], fields: set[str]
) -> None:
    request = prefecture_pb2.SearchRequest(purpose=PURPOSE, **criteria)
    error = refused(server.stub(OPERATOR).Search, request)
    assert_invalid(error, fields)
    assert_no_echo(error, *(v for v in criteria.values() if isinstance(v, str)))


def first_page(server: Server, **criteria: Any) -> Any:
    request = prefecture_pb2.SearchRequest(purpose=PURPOSE, page_size=1, **criteria)
    return server.stub(OPERATOR).Search(request, timeout=10)


@pytest.fixture(scope="module")
def page_token(server: Server) -> str:
    page = first_page(server, sex=FEMALE, address_prefix="三重県")
    assert len(page.results) == 1 and page.next_page_token
    return str(page.next_page_token)


def tampered(token: str) -> str:
    middle = len(token) // 2
    return token[:middle] + ("B" if token[middle] != "B" else "C") + token[middle + 1 :]


FORGERIES: list[tuple[str, Callable[[str], str]]] = [
    ("tampered", tampered),
    ("truncated", lambda t: t[: len(t) // 2]),
    ("garbage", lambda t: "not-a-page-token!"),
    ("short-base64", lambda t: "AAAA"),
    ("empty-after-decode", lambda t: "===="),
    ("non-ascii", lambda t: "ページ"),
]


@pytest.mark.parametrize("forge", [f[1] for f in FORGERIES], ids=[f[0] for f in FORGERIES])
def test_forged_page_token_is_invalid_argument(
    server: Server, page_token: str, forge: Callable[[str], str]
) -> None:
    request = prefecture_pb2.SearchRequest(
        purpose=PURPOSE, page_size=1, sex=FEMALE, address_prefix="三重県", page_token=forge(page_token)
    )
    error = refused(server.stub(OPERATOR).Search, request)
    assert_invalid(error, {"page_token"})


def test_page_token_of_another_search_is_invalid_argument(server: Server, page_token: str) -> None:
    request = prefecture_pb2.SearchRequest(
        purpose=PURPOSE, page_size=1, sex=records_pb2.SEX_MALE, address_prefix="三重県", page_token=page_token
    )
    error = refused(server.stub(OPERATOR).Search, request)
    assert_invalid(error, {"page_token"})


def test_genuine_page_token_still_pages(server: Server, page_token: str) -> None:
    """The control for the forgeries: the untouched token of the same search is accepted."""
    request = prefecture_pb2.SearchRequest(
        purpose=PURPOSE, page_size=1, sex=FEMALE, address_prefix="三重県", page_token=page_token
    )
    second = server.stub(OPERATOR).Search(request, timeout=10)
    first = first_page(server, sex=FEMALE, address_prefix="三重県")
    assert len(second.results) == 1
    assert second.results[0].resident_code != first.results[0].resident_code
