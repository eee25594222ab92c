"""SPEC §5.2, §5.3 with both servers as real processes: the 附票 server serves its records, fetches a
My Number over the restricted link only for a purpose that allows it, keeps it only in the temporary area, and
redelivers it once to the same caller until acknowledged or expired."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from juki.v1 import fuhyo_pb2, prefecture_pb2, records_pb2

from clients.fuhyo_cmds import fuhyo_stub
from server.audit.query import query
from server.seed.fuhyo import generate_fuhyo
from server.seed.population import generate
from tests.conftest import Server, make_server
from tests.notices import fresh_resident

SEEDED = 500
POLICE = ("agency/police", "bt6-police-driving-licence")
F = fuhyo_pb2


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path) -> Iterator[Server]:
    srv = make_server(
        tmp_path_factory.mktemp("fuhyo"), pki_dir, seeded=SEEDED, with_national=False, with_fuhyo=True,
        tempstore_ttl=3.0,
    )  # fmt: skip
    srv.start()
    yield srv
    srv.stop_all()


@pytest.fixture(scope="module")
def people() -> dict[str, Any]:
    """住民票コード → (附票 record, My Number at the prefecture)."""
    numbers = {e.record.resident_code: e.record.my_number for e in generate(SEEDED, 1)}
    return {r.resident_code: (r, numbers[r.resident_code]) for r in generate_fuhyo(SEEDED, 1)}


def domestic(people: dict[str, Any]) -> tuple[Any, str]:
    record, number = next(v for v in people.values() if v[0].state_kind == 1)
    return record, str(number)


def abroad(people: dict[str, Any]) -> tuple[Any, str]:
    """A 国外転出者: the only person the restricted link gives a My Number for (SPEC §5.3)."""
    record, number = next(v for v in people.values() if v[0].state_kind == 2)
    return record, str(number)


def provide(
    srv: Server, who: str, purpose: str, code: str, *, with_number: bool, request_id: str = ""
) -> Any:
    request = F.FuhyoProvideRequest(
        resident_code=code, purpose=purpose, include_my_number=with_number, request_id=request_id
    )
    return fuhyo_stub(srv.settings, who).Provide(request, timeout=10)


def fetches(srv: Server) -> int:
    directory = srv.settings.path(srv.settings.audit_dir)
    return len(list(query(directory, method="/juki.v1.Prefecture/FetchMyNumber")))


def test_a_my_number_purpose_gets_the_record_and_the_right_my_number(
    both: Server, people: dict[str, Any]
) -> None:
    record, number = abroad(people)
    answer = provide(both, *POLICE, record.resident_code, with_number=True, request_id="t1-a")
    (view,) = answer.records
    assert (view.resident_code, view.name_kanji, view.address) == (
        record.resident_code, record.name_kanji, record.last_address,
    )  # fmt: skip
    assert answer.my_number == number


def test_a_person_abroad_is_shown_with_the_last_domestic_address(
    both: Server, people: dict[str, Any]
) -> None:
    record, number = abroad(people)
    answer = provide(both, *POLICE, record.resident_code, with_number=True, request_id="t2-a")
    assert answer.records[0].abroad and answer.records[0].address == record.last_address
    assert answer.my_number == number


def test_another_purpose_gets_no_number_and_the_prefecture_is_not_called(
    both: Server, people: dict[str, Any]
) -> None:
    record, _ = domestic(people)
    before = fetches(both)
    plain = provide(
        both, "agency/education", "bt6-education-teacher-licence", record.resident_code, with_number=False
    )
    assert plain.records[0].resident_code == record.resident_code and plain.my_number == ""
    with pytest.raises(grpc.RpcError) as info:
        education = ("agency/education", "bt6-education-teacher-licence")
        provide(both, *education, record.resident_code, with_number=True, request_id="t3-a")
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert fetches(both) == before


def test_redelivery_once_for_the_same_caller_then_gone(both: Server, people: dict[str, Any]) -> None:
    record, number = abroad(people)
    first = provide(both, *POLICE, record.resident_code, with_number=True, request_id="t4-a")
    police, other = fuhyo_stub(both.settings, POLICE[0]), fuhyo_stub(both.settings, "department/tax")
    again = police.Redeliver(F.RedeliverRequest(request_id="t4-a", purpose=POLICE[1]), timeout=5)
    assert again == first and again.my_number == number
    with pytest.raises(grpc.RpcError) as info:
        other.Redeliver(F.RedeliverRequest(request_id="t4-a", purpose="bt5-tax-vehicle"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and number not in (  # as for an unknown id
        info.value.details() or ""
    )
    police.AckDelivery(F.AckDeliveryRequest(request_id="t4-a", purpose=POLICE[1]), timeout=5)
    with pytest.raises(grpc.RpcError) as info:
        police.Redeliver(F.RedeliverRequest(request_id="t4-a", purpose=POLICE[1]), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_after_the_ttl_redelivery_is_not_found(both: Server, people: dict[str, Any]) -> None:
    record, _ = abroad(people)
    provide(both, *POLICE, record.resident_code, with_number=True, request_id="t5-a")
    time.sleep(both.settings.tempstore_ttl + 2.0)  # the server's own expiry runs every second
    with pytest.raises(grpc.RpcError) as info:
        fuhyo_stub(both.settings, POLICE[0]).Redeliver(
            F.RedeliverRequest(request_id="t5-a", purpose=POLICE[1])
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_no_my_number_in_the_fuhyo_files_logs_metrics_or_backup(
    both: Server, people: dict[str, Any], tmp_path: Path
) -> None:
    from server.backup import BackupKey, create_backup, restore_backup
    from tests.test_metrics_endpoint import scrape

    record, number = abroad(people)
    provide(both, *POLICE, record.resident_code, with_number=True, request_id="t6-a")
    s = both.settings
    needle = number.encode()
    fuhyo_files = [p for p in s.path(s.fuhyo_data_dir).rglob("*") if p.is_file()]
    logs = [both.log.with_name("fuhyo.log")]
    temp_files = [p for p in s.path(s.tempstore_dir).rglob("*") if p.is_file()]
    for path in fuhyo_files + logs + temp_files:
        assert needle not in path.read_bytes(), path
    _, text = scrape(both, "monitor/monitor-01", s.fuhyo_metrics_port)
    assert number not in text
    key = BackupKey.generate().secret
    archive = tmp_path / "fuhyo.jkb"
    create_backup({"fuhyo": s.path(s.fuhyo_data_dir)}, archive, key)
    assert needle not in archive.read_bytes()
    restore_backup(archive, key, tmp_path / "restored")
    for path in (tmp_path / "restored").rglob("*"):
        if path.is_file():
            assert needle not in path.read_bytes()


def test_with_the_prefecture_down_my_number_is_unavailable_and_the_record_still_served(
    tmp_path: Path, pki_dir: Path, people: dict[str, Any]
) -> None:
    srv = make_server(tmp_path / "down", pki_dir, seeded=SEEDED, with_national=False, with_fuhyo=True)
    srv.start()
    try:
        srv.stop()  # the prefectural server only
        record, _ = abroad(people)
        with pytest.raises(grpc.RpcError) as info:
            provide(srv, *POLICE, record.resident_code, with_number=True, request_id="t7-a")
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError) as gone:
            fuhyo_stub(srv.settings, POLICE[0]).Redeliver(
                F.RedeliverRequest(request_id="t7-a", purpose=POLICE[1])
            )
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND  # nothing was left in the temporary area
        plain = provide(srv, "agency/education", "bt6-education-teacher-licence", record.resident_code,
                        with_number=False)  # fmt: skip
        assert plain.records[0].resident_code == record.resident_code
    finally:
        srv.stop_all()


def test_fuhyo_updates_follow_the_rules(both: Server) -> None:
    stub = fuhyo_stub(both.settings, "municipal-cs/242012")
    code, _ = fresh_resident()
    record = records_pb2.FuhyoRecord(
        resident_code=code, name_kanji="附票　花子", name_kana="フヒョウ　ハナコ", birth_date="1980-01-01",
        sex=records_pb2.SEX_FEMALE, address="三重県津市広明町13番地", managing_municipality_code="242012",
        state_kind=1,
    )  # fmt: skip

    def notice(seq: int, kind: int, **changes: Any) -> Any:
        r = records_pb2.FuhyoRecord()
        r.CopyFrom(record)
        for k, v in changes.items():
            setattr(r, k, v)
        change = F.FuhyoNotice(
            managing_municipality_code="242012", sequence=seq, kind=kind, change_date="2024-01-01", record=r
        )
        return F.FuhyoApplyRequest(notice=change)

    assert not stub.ApplyUpdate(notice(1, F.FUHYO_CHANGE_KIND_CREATE)).replayed
    assert stub.ApplyUpdate(notice(1, F.FUHYO_CHANGE_KIND_CREATE)).replayed  # idempotent replay
    with pytest.raises(grpc.RpcError) as info:
        stub.ApplyUpdate(notice(3, F.FUHYO_CHANGE_KIND_MODIFY))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # gap
    stub.ApplyUpdate(
        notice(2, F.FUHYO_CHANGE_KIND_MODIFY, state_kind=2, address="", last_address="三重県津市広明町13番地")
    )
    stub.ApplyUpdate(notice(3, F.FUHYO_CHANGE_KIND_REMOVE))
    with pytest.raises(grpc.RpcError) as info:
        stub.ApplyUpdate(notice(4, F.FUHYO_CHANGE_KIND_REMOVE))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # removing a removed person
    with pytest.raises(grpc.RpcError) as info:  # a municipality touches only what it manages
        fuhyo_stub(both.settings, "municipal-cs/242021").ApplyUpdate(notice(1, F.FUHYO_CHANGE_KIND_CREATE))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    looked = fuhyo_stub(both.settings, "operator/op-0001").Lookup(
        F.FuhyoLookupRequest(resident_code=code, purpose="identity-check")
    )
    assert looked.record.state == records_pb2.RECORD_STATE_REMOVED


def test_fuhyo_search_finds_by_hiragana(both: Server, people: dict[str, Any]) -> None:
    record, _ = domestic(people)
    hiragana = "".join(chr(ord(c) - 0x60) if "ァ" <= c <= "ヶ" else c for c in record.name_kana)
    found = fuhyo_stub(both.settings, "operator/op-0001").Search(
        prefecture_pb2.SearchRequest(
            purpose="identity-check", name_kana=hiragana, birth_date=record.birth_date
        )
    )
    assert record.resident_code in [v.resident_code for v in found.results]
