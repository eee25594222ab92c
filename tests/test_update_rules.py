"""SPEC §6.1: sequence, replay, every logical check, history, removed persons."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from juki.v1 import prefecture_pb2, records_pb2

from clients.channel import error_details
from tests.conftest import Server
from tests.notices import Municipality, fresh_resident

R = records_pb2
TSU, YOKKAICHI = "242012", "242021"


def send(server: Server, notice: Any, caller: str | None = None) -> Any:
    stub = server.stub(f"municipal-cs/{caller or notice.municipality_code}")
    return stub.ApplyUpdate(prefecture_pb2.ApplyUpdateRequest(notice=notice), timeout=10)


def refused(server: Server, notice: Any, caller: str | None = None) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        send(server, notice, caller)
    return info.value


def state(server: Server, code: str) -> tuple[Any, str, list[Any], int]:
    """(record, my number, history, last sequences) as stored."""
    store = server.open_reader()
    try:
        with store.reader() as tx:
            return tx.get(code), tx.my_number(code), tx.history(code), tx.last_sequence(TSU)
    finally:
        store.env.close()


def last_sequence(server: Server, municipality: str) -> int:
    store = server.open_reader()
    try:
        with store.reader() as tx:
            return tx.last_sequence(municipality)
    finally:
        store.env.close()


@pytest.fixture(scope="module")
def tsu() -> Municipality:
    return Municipality(TSU)


@pytest.fixture(scope="module")
def yokkaichi() -> Municipality:
    return Municipality(YOKKAICHI)


def create(server: Server, town: Municipality, **changes: Any) -> tuple[str, str, Any]:
    code, number = fresh_resident()
    notice = town.notice(code, R.CHANGE_REASON_SHUSSEI, my_number=number, **changes)
    send(server, notice)
    return code, number, notice


def test_creation_applies_the_record_and_its_sequence(server: Server, tsu: Municipality) -> None:
    code, number, notice = create(server, tsu, name_kanji="津　一郎", name_kana="ツ　イチロウ")
    record, stored_number, history, last = state(server, code)
    assert record.four_info.name_kanji == "津　一郎"
    assert record.sequence == notice.sequence == last
    assert stored_number == number
    assert record.municipality_code == TSU
    assert history == []


def test_sequence_gap_is_refused_naming_the_expected_sequence(server: Server, tsu: Municipality) -> None:
    code, number = fresh_resident()
    expected = tsu.next_sequence
    tsu.next_sequence += 5
    error = refused(server, tsu.notice(code, R.CHANGE_REASON_SHUSSEI, my_number=number))
    tsu.next_sequence = expected
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"expected sequence {expected}" in (error.details() or "")
    _, metadata, reason = error_details(error)
    assert reason == "SEQUENCE_GAP" and metadata["expected_sequence"] == str(expected)
    assert state(server, code)[0] is None


def test_replay_returns_the_first_result_and_changes_nothing(server: Server, tsu: Municipality) -> None:
    code, _, notice = create(server, tsu)
    first = send(server, notice)  # the same notice again
    before = state(server, code)
    again = send(server, notice)
    assert again.replayed and first.replayed
    assert again.result == first.result
    after = state(server, code)
    assert after[0] == before[0] and after[2] == before[2] and after[3] == before[3]


def test_first_result_is_returned_on_replay(server: Server, tsu: Municipality) -> None:
    code, number = fresh_resident()
    notice = tsu.notice(code, R.CHANGE_REASON_SHUSSEI, my_number=number)
    original = send(server, notice)
    assert not original.replayed
    replay = send(server, notice)
    assert replay.replayed and replay.result == original.result


def test_conflicting_replay_is_refused(server: Server, tsu: Municipality) -> None:
    code, _, notice = create(server, tsu)
    conflicting = prefecture_pb2.ChangeNotice()
    conflicting.CopyFrom(notice)
    conflicting.four_info.address = "三重県津市別の町1番地"
    error = refused(server, conflicting)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    _, metadata, reason = error_details(error)
    assert reason == "CONFLICTING_REPLAY"
    assert metadata["expected_sequence"] == str(tsu.next_sequence)
    assert state(server, code)[0].four_info.address == notice.four_info.address


def rejected_without_trace(server: Server, town: Municipality, notice: Any, code: str) -> grpc.RpcError:
    """The notice is refused, the record and the sequence are as before, and the sequence is reusable."""
    before = state(server, code)
    seq_before = last_sequence(server, town.code)
    error = refused(server, notice)
    after = state(server, code)
    assert after[0] == before[0] and after[1] == before[1] and after[2] == before[2]
    assert last_sequence(server, town.code) == seq_before
    town.next_sequence = notice.sequence  # a refused notice does not consume its sequence
    return error


def test_creating_an_active_code_is_refused(server: Server, tsu: Municipality) -> None:
    code, _, _ = create(server, tsu)
    _, other_number = fresh_resident()
    error = rejected_without_trace(
        server, tsu, tsu.notice(code, R.CHANGE_REASON_TENNYU, my_number=other_number), code
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS


def test_removing_a_missing_record_is_refused(server: Server, tsu: Municipality) -> None:
    code, _ = fresh_resident()
    error = rejected_without_trace(server, tsu, tsu.notice(code, R.CHANGE_REASON_SHIBOU), code)
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_removing_an_already_removed_record_is_refused(server: Server, tsu: Municipality) -> None:
    code, number, _ = create(server, tsu)
    send(server, tsu.notice(code, R.CHANGE_REASON_TENSHUTSU, my_number=number, change_date="2024-06-01"))
    error = rejected_without_trace(
        server, tsu, tsu.notice(code, R.CHANGE_REASON_SHIBOU, my_number=number), code
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(error)[2] == "ALREADY_REMOVED"


def test_tenkyo_changing_anything_but_the_address_is_refused(server: Server, tsu: Municipality) -> None:
    code, number, _ = create(server, tsu)
    notice = tsu.notice(
        code, R.CHANGE_REASON_TENKYO, my_number=number, address="三重県津市新町1番地", name_kanji="別の　名前"
    )
    error = rejected_without_trace(server, tsu, notice, code)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "name_kanji" in (error.details() or "")
    # The address alone is fine.
    send(server, tsu.notice(code, R.CHANGE_REASON_TENKYO, my_number=number, address="三重県津市新町1番地"))
    assert state(server, code)[0].four_info.address == "三重県津市新町1番地"


def test_name_change_changing_anything_but_the_name_is_refused(server: Server, tsu: Municipality) -> None:
    code, number, _ = create(server, tsu)
    notice = tsu.notice(
        code,
        R.CHANGE_REASON_SHIMEI_HENKO,
        my_number=number,
        name_kanji="三重　花",
        address="三重県津市別町2番地",
    )
    error = rejected_without_trace(server, tsu, notice, code)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "address" in (error.details() or "")
    send(server, tsu.notice(code, R.CHANGE_REASON_SHIMEI_HENKO, my_number=number, name_kanji="三重　花"))
    assert state(server, code)[0].four_info.name_kanji == "三重　花"


def test_a_my_number_held_by_someone_else_is_refused(server: Server, tsu: Municipality) -> None:
    _, taken, _ = create(server, tsu)
    code, _ = fresh_resident()
    error = rejected_without_trace(
        server, tsu, tsu.notice(code, R.CHANGE_REASON_SHUSSEI, my_number=taken), code
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_details(error)[2] == "MY_NUMBER_HELD"
    # … and on a My Number change too.
    other, number, _ = create(server, tsu)
    change = tsu.notice(other, R.CHANGE_REASON_KOJIN_BANGO_HENKO, my_number=taken)
    assert rejected_without_trace(server, tsu, change, other).code() == grpc.StatusCode.ALREADY_EXISTS
    assert state(server, other)[1] == number


def test_a_notice_for_another_municipalitys_resident_is_refused(
    server: Server, tsu: Municipality, yokkaichi: Municipality
) -> None:
    code, number, _ = create(server, tsu)
    notice = yokkaichi.notice(
        code, R.CHANGE_REASON_TENKYO, my_number=number, address="三重県四日市市諏訪町1番地"
    )
    error = rejected_without_trace(server, yokkaichi, notice, code)
    # answered as for a code nobody holds, so that a municipal CS cannot test codes (SPEC §4.2)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error_details(error)[2] == "NO_RECORD"


def test_a_municipal_cs_cannot_send_another_municipalitys_notices(server: Server, tsu: Municipality) -> None:
    code, number = fresh_resident()
    notice = tsu.notice(code, R.CHANGE_REASON_SHUSSEI, my_number=number)
    before = last_sequence(server, TSU)
    error = refused(server, notice, caller=YOKKAICHI)
    tsu.next_sequence = notice.sequence
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert last_sequence(server, TSU) == before and state(server, code)[0] is None


def test_history_keeps_every_previous_version(server: Server, tsu: Municipality) -> None:
    code, number, _ = create(server, tsu, address="三重県津市一身田1番地")
    send(server, tsu.notice(code, R.CHANGE_REASON_TENKYO, my_number=number, address="三重県津市一身田2番地"))
    _, new_number = fresh_resident()
    send(
        server,
        tsu.notice(
            code, R.CHANGE_REASON_KOJIN_BANGO_HENKO, my_number=new_number, address="三重県津市一身田2番地"
        ),
    )
    record, stored, history, _ = state(server, code)
    assert [h.record.four_info.address for h in history] == ["三重県津市一身田1番地", "三重県津市一身田2番地"]
    assert [h.my_number for h in history] == [number, number]
    assert history[0].record.change_reason == R.CHANGE_REASON_SHUSSEI
    assert stored == new_number and record.change_reason == R.CHANGE_REASON_KOJIN_BANGO_HENKO
    # the old My Number no longer finds the resident, the new one does
    store = server.open_reader()
    with store.reader() as tx:
        assert tx.code_by_my_number(number) is None
        assert tx.code_by_my_number(new_number) == code
    store.env.close()


def test_removed_persons_are_kept_and_searchable_only_as_removed(server: Server, tsu: Municipality) -> None:
    code, number, _ = create(
        server,
        tsu,
        name_kanji="消除　太郎",
        name_kana="ショウジョ　タロウ",
        birth_date="1950-02-03",
        sex=R.SEX_MALE,
    )
    send(server, tsu.notice(
        code, R.CHANGE_REASON_SHIBOU, change_date="2024-07-01"
    ))  # fmt: skip
    record, stored, history, _ = state(server, code)
    assert (
        record.deleted_flag and record.state == R.RECORD_STATE_REMOVED and record.removed_date == "2024-07-01"
    )
    assert stored == number and len(history) == 1  # kept with its My Number (SPEC §6.4)

    operator = server.stub("operator/op-0001")
    query = {"purpose": "identity-check", "name_kana": "しょうじょ　たろう", "birth_date": "1950-02-03"}
    plain = operator.Search(prefecture_pb2.SearchRequest(**query), timeout=5)
    assert code not in [v.resident_code for v in plain.results]
    with_removed = operator.Search(prefecture_pb2.SearchRequest(include_removed=True, **query), timeout=5)
    found = [v for v in with_removed.results if v.resident_code == code]
    assert len(found) == 1 and found[0].state == R.RECORD_STATE_REMOVED
    assert found[0].change_reason == R.CHANGE_REASON_SHIBOU
    looked_up = operator.Lookup(prefecture_pb2.LookupRequest(purpose="identity-check", resident_code=code))
    assert looked_up.record.state == R.RECORD_STATE_REMOVED


def test_a_removed_code_may_be_created_again(
    server: Server, tsu: Municipality, yokkaichi: Municipality
) -> None:
    """転出 from 津, then 転入 into 四日市 with the same 住民票コード."""
    code, number, _ = create(server, tsu)
    send(server, tsu.notice(code, R.CHANGE_REASON_TENSHUTSU, change_date="2024-08-01"))
    move_in = yokkaichi.notice(
        code,
        R.CHANGE_REASON_TENNYU,
        my_number=number,
        address="三重県四日市市諏訪町1番地",
        change_date="2024-08-02",
    )
    send(server, move_in)
    record, _, history, _ = state(server, code)
    assert record.municipality_code == YOKKAICHI and record.state == R.RECORD_STATE_ACTIVE
    assert [h.record.state for h in history] == [R.RECORD_STATE_ACTIVE, R.RECORD_STATE_REMOVED]


def test_removal_may_not_change_items(server: Server, tsu: Municipality) -> None:
    code, number, _ = create(server, tsu)
    notice = tsu.notice(code, R.CHANGE_REASON_TENSHUTSU, my_number=number, address="三重県津市どこか1番地")
    assert rejected_without_trace(server, tsu, notice, code).code() == grpc.StatusCode.FAILED_PRECONDITION


def test_a_stream_applies_in_order_and_reports_each_result(server: Server, yokkaichi: Municipality) -> None:
    notices = []
    for _ in range(600):  # more than one batch
        code, number = fresh_resident()
        notices.append(
            yokkaichi.notice(code, R.CHANGE_REASON_TENNYU, my_number=number, address="三重県四日市市1番地")
        )
    stub = server.stub(f"municipal-cs/{YOKKAICHI}")
    response = stub.ApplyUpdates((prefecture_pb2.ApplyUpdateRequest(notice=n) for n in notices), timeout=60)
    assert [r.sequence for r in response.results] == [n.sequence for n in notices]
    assert response.last_applied_sequence == notices[-1].sequence and response.replayed_count == 0
    again = stub.ApplyUpdates((prefecture_pb2.ApplyUpdateRequest(notice=n) for n in notices), timeout=60)
    assert again.replayed_count == len(notices) and list(again.results) == list(response.results)


def test_a_stream_stops_at_the_first_refused_notice_keeping_those_before(
    server: Server, yokkaichi: Municipality
) -> None:
    start = last_sequence(server, YOKKAICHI)
    good = [yokkaichi.notice(fresh_resident()[0], R.CHANGE_REASON_SHUSSEI, my_number=fresh_resident()[1])
            for _ in range(3)]  # fmt: skip
    missing = yokkaichi.notice(fresh_resident()[0], R.CHANGE_REASON_SHIBOU)
    after = yokkaichi.notice(fresh_resident()[0], R.CHANGE_REASON_SHUSSEI, my_number=fresh_resident()[1])
    stub = server.stub(f"municipal-cs/{YOKKAICHI}")
    with pytest.raises(grpc.RpcError) as info:
        stub.ApplyUpdates(
            (prefecture_pb2.ApplyUpdateRequest(notice=n) for n in [*good, missing, after]), timeout=10
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    _, metadata, _ = error_details(info.value)
    assert metadata["last_applied_sequence"] == str(start + 3)
    assert last_sequence(server, YOKKAICHI) == start + 3
    yokkaichi.next_sequence = start + 4
