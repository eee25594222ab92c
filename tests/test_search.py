"""SPEC §6.3: 4情報 search with 清音化かな folding, at least two criteria, capped and paged."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from juki.v1 import prefecture_pb2, records_pb2

from server.domain.kana import search_kana
from tests.conftest import Server
from tests.notices import Municipality, fresh_resident

R = records_pb2
OPERATOR = "operator/op-0002"
PURPOSE = "identity-check"

# (stored kana, the ways an operator may type it)
VARIANTS = [
    ("ガッコウ　タロウ", ["かっこう　たろう", "カッコウ タロウ", "ｶﾞｯｺｳ ﾀﾛｳ", "がつこう", "ｶｯｺｳﾀﾛｳ"]),
    ("パンダ　ハナコ", ["ハンダ　ハナコ", "バンダ　ハナコ", "ばんだはなこ", "ﾊﾟﾝﾀﾞ ﾊﾅｺ", "はんた"]),
    ("キョウゴク　ジュン", ["きようごく　じゅん", "キヨウコク　シユン", "ｷｮｳｺﾞｸ ｼﾞｭﾝ", "きょうこく"]),
]


def test_search_kana_folds_voicing_size_script_width_and_spaces() -> None:
    assert search_kana("ガッコウ　タロウ") == "カツコウタロウ"
    assert search_kana("ｶﾞｯｺｳ ﾀﾛｳ") == search_kana("かっこう たろう") == "カツコウタロウ"
    assert search_kana("パン") == search_kana("バン") == search_kana("はん") == "ハン"
    assert search_kana("ャュョァィゥェォヮヵヶ") == "ヤユヨアイウエオワカケ"
    assert search_kana("ヴィ") == "ウイ"


@pytest.fixture(scope="module")
def named(server: Server) -> dict[str, str]:
    """Residents with the names of VARIANTS (and one look-alike born another day), by stored kana."""
    town = Municipality("242047")
    stub = server.stub("municipal-cs/242047")
    codes: dict[str, str] = {}
    for kana, _ in VARIANTS:
        code, number = fresh_resident()
        notice = town.notice(
            code, R.CHANGE_REASON_TENNYU, my_number=number, name_kana=kana, birth_date="1971-03-04"
        )
        stub.ApplyUpdate(prefecture_pb2.ApplyUpdateRequest(notice=notice), timeout=10)
        codes[kana] = code
        other, other_number = fresh_resident()
        twin = town.notice(
            other, R.CHANGE_REASON_TENNYU, my_number=other_number, name_kana=kana, birth_date="1980-01-01"
        )
        stub.ApplyUpdate(prefecture_pb2.ApplyUpdateRequest(notice=twin), timeout=10)
    return codes


def search(server: Server, **criteria: Any) -> Any:
    request = prefecture_pb2.SearchRequest(purpose=PURPOSE, **criteria)
    return server.stub(OPERATOR).Search(request, timeout=10)


@pytest.mark.parametrize(("stored", "typed"), [(k, t) for k, ts in VARIANTS for t in ts])
def test_every_way_of_typing_the_name_finds_the_resident(
    server: Server, named: dict[str, str], stored: str, typed: str
) -> None:
    response = search(server, name_kana=typed, birth_date="1971-03-04")
    assert [v.resident_code for v in response.results] == [named[stored]]


def test_a_date_range_and_sex_narrow_a_name(server: Server, named: dict[str, str]) -> None:
    found = search(server, name_kana="がっこう", birth_date_from="1970-01-01", birth_date_to="1990-12-31")
    assert len(found.results) == 2
    none = search(server, name_kana="がっこう", sex=R.SEX_MALE, birth_date="1971-03-04")
    assert list(none.results) == []  # both were registered as women


def test_one_criterion_is_refused(server: Server) -> None:
    for criteria in ({"name_kana": "がっこう"}, {"birth_date": "1971-03-04"}, {"sex": R.SEX_MALE}, {}):
        with pytest.raises(grpc.RpcError) as info:
            search(server, **criteria)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_search_by_birth_date_and_sex_matches_the_store(server: Server, seeded_records: list[Any]) -> None:
    target = seeded_records[5].four_info
    expected = {
        r.resident_code
        for r in seeded_records
        if r.four_info.birth_date == target.birth_date
        and r.four_info.sex == target.sex
        and r.state == R.RECORD_STATE_ACTIVE
    }
    found = search(server, birth_date=target.birth_date, sex=target.sex, page_size=100)
    assert {v.resident_code for v in found.results} >= expected
    assert all(v.birth_date == target.birth_date and v.sex == target.sex for v in found.results)


def test_address_prefix_with_sex(server: Server, seeded_records: list[Any]) -> None:
    prefix = "三重県尾鷲市"
    found = search(server, address_prefix=prefix, sex=R.SEX_FEMALE, page_size=100)
    expected = {
        r.resident_code
        for r in seeded_records
        if r.four_info.address.startswith(prefix) and r.four_info.sex == R.SEX_FEMALE and not r.deleted_flag
    }
    assert {v.resident_code for v in found.results} == expected


def test_pages_walk_the_whole_result_without_repeats(server: Server, seeded_records: list[Any]) -> None:
    prefix = "三重県津市"
    expected = {
        r.resident_code
        for r in seeded_records
        if r.four_info.address.startswith(prefix) and r.four_info.sex == R.SEX_MALE and not r.deleted_flag
    }
    seen: list[str] = []
    token = ""
    for _ in range(100):
        page = search(server, address_prefix=prefix, sex=R.SEX_MALE, page_size=7, page_token=token)
        assert len(page.results) <= 7
        seen.extend(v.resident_code for v in page.results)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen))
    assert set(seen) >= expected


def test_a_page_token_is_bound_to_its_search(server: Server) -> None:
    page = search(server, address_prefix="三重県津市", sex=R.SEX_MALE, page_size=2)
    assert page.next_page_token
    with pytest.raises(grpc.RpcError) as info:
        search(
            server,
            address_prefix="三重県津市",
            sex=R.SEX_FEMALE,
            page_size=2,
            page_token=page.next_page_token,
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("caller", "purpose"),
    [("operator/op-0001", PURPOSE), (OPERATOR, "disclosure"), ("operator/op-0001", "disclosure")],
)
def test_a_page_token_is_bound_to_its_caller_and_purpose(server: Server, caller: str, purpose: str) -> None:
    """A token handed to another operator, or used under another purpose (both granted the search itself),
    is refused as INVALID_ARGUMENT with no results; the same caller and purpose go on with it."""
    criteria: dict[str, Any] = {"address_prefix": "三重県津市", "sex": R.SEX_MALE, "page_size": 2}
    page = search(server, **criteria)
    assert page.next_page_token
    own = prefecture_pb2.SearchRequest(purpose=purpose, **criteria)
    server.stub(caller).Search(own, timeout=10)  # control: this caller may search for this purpose
    other = prefecture_pb2.SearchRequest(purpose=purpose, page_token=page.next_page_token, **criteria)
    with pytest.raises(grpc.RpcError) as info:
        server.stub(caller).Search(other, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in str(info.value.details())
    again = search(server, page_token=page.next_page_token, **criteria)
    assert again.results and not {v.resident_code for v in again.results} & {
        v.resident_code for v in page.results
    }


def test_results_are_capped(server: Server) -> None:
    """The server's cap (search_max_results) ends a long walk with capped=True."""
    token = ""
    total = 0
    capped = False
    for _ in range(200):
        page = search(server, address_prefix="三重県", sex=R.SEX_MALE, page_size=100, page_token=token)
        total += len(page.results)
        capped = capped or page.capped
        token = page.next_page_token
        if not token:
            break
    assert total <= server.settings.search_max_results
    assert capped and total == server.settings.search_max_results
