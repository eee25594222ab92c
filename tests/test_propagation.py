"""SPEC §5.4, §6.2: every applied change reaches the national server in order, once in effect, whatever
fails in between; the national server takes changes only from record servers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from juki.v1 import national_pb2, national_pb2_grpc, prefecture_pb2, records_pb2

from clients.channel import error_details, secure_channel
from server.identity.pki import Pki
from tests.conftest import Server, make_server
from tests.notices import Municipality, fresh_resident

R = records_pb2
OWASE = "242098"
POLICE_URI = "spiffe://juki.mie/agency/police"


def notices(town: Municipality, count: int) -> list[Any]:
    """Births, and every third notice a 転居 of an earlier one (so order matters at the national server)."""
    out: list[Any] = []
    born: list[tuple[str, str]] = []
    for i in range(count):
        if i % 3 == 2:
            code, number = born[i // 3]
            out.append(
                town.notice(code, R.CHANGE_REASON_TENKYO, my_number=number, address=f"三重県尾鷲市{i}番地")
            )
        else:
            code, number = fresh_resident()
            born.append((code, number))
            out.append(town.notice(code, R.CHANGE_REASON_SHUSSEI, my_number=number))
    return out


def apply_all(server: Server, batch: list[Any]) -> None:
    stub = server.stub(f"municipal-cs/{OWASE}")
    response = stub.ApplyUpdates((prefecture_pb2.ApplyUpdateRequest(notice=n) for n in batch), timeout=120)
    assert response.last_applied_sequence == batch[-1].sequence


def outbox_depth(server: Server) -> int:
    store = server.open_reader()
    try:
        with store.reader() as tx:
            return tx.outbox_depth()
    finally:
        store.env.close()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def assert_national_holds_each_once(server: Server, batch: list[Any]) -> None:
    """The national file holds exactly the applied changes: every sequence once, the final records right."""
    store = server.open_national_reader()
    try:
        with store.reader() as tx:
            assert tx.last_sequence(OWASE) == batch[-1].sequence
            held = [seq for seq in range(1, batch[-1].sequence + 2) if tx.applied(OWASE, seq) is not None]
            assert held == [n.sequence for n in batch]
            final: dict[str, Any] = {n.resident_code: n for n in batch}
            for code, last in final.items():
                record = tx.get(code)
                assert record is not None and record.four_info.address == last.four_info.address
                assert tx.my_number(code) == last.my_number
                births = sum(1 for n in batch if n.resident_code == code)
                assert len(tx.history(code)) == births - 1, "a change applied twice would add history"
    finally:
        store.env.close()


@pytest.fixture()
def deployment(tmp_path: Path, pki_dir: Path) -> Iterator[Server]:
    srv = make_server(tmp_path / "srv", pki_dir, seeded=0, relay_batch_size=5, relay_backoff_max=0.5)
    srv.start()
    yield srv
    srv.stop_all()


def test_changes_applied_while_national_is_down_are_delivered_in_order_once_it_starts(
    deployment: Server,
) -> None:
    deployment.stop_national()
    batch = notices(Municipality(OWASE), 1000)
    apply_all(deployment, batch)
    time.sleep(1.0)  # the relay keeps failing meanwhile …
    assert outbox_depth(deployment) == 1000  # … and keeps every change
    deployment.start_national()
    wait_for(lambda: outbox_depth(deployment) == 0, "the outbox to drain")
    assert_national_holds_each_once(deployment, batch)


def test_prefectural_server_killed_mid_delivery_loses_and_repeats_nothing(deployment: Server) -> None:
    deployment.stop_national()
    batch = notices(Municipality(OWASE), 3000)
    apply_all(deployment, batch)
    deployment.start_national()
    wait_for(lambda: outbox_depth(deployment) < 2950, "delivery to start")
    deployment.kill()  # SIGKILL while batches are in flight
    remaining = outbox_depth(deployment)
    assert 0 < remaining < 3000
    deployment.start()
    wait_for(lambda: outbox_depth(deployment) == 0, "the outbox to drain after restart")
    assert_national_holds_each_once(deployment, batch)


def test_national_server_restarted_mid_stream_loses_and_repeats_nothing(deployment: Server) -> None:
    deployment.stop_national()
    batch = notices(Municipality(OWASE), 3000)
    apply_all(deployment, batch)
    deployment.start_national()
    wait_for(lambda: outbox_depth(deployment) < 2950, "delivery to start")
    deployment.stop_national(9)  # SIGKILL the national server mid-stream
    assert outbox_depth(deployment) > 0
    deployment.start_national()
    wait_for(lambda: outbox_depth(deployment) == 0, "the outbox to drain after the national restart")
    assert_national_holds_each_once(deployment, batch)


def national_stub(server: Server, identity: str) -> Any:
    channel = secure_channel(Pki(server.settings.pki_path), identity, server.settings.national_target)
    server._channels.append(channel)
    return national_pb2_grpc.NationalStub(channel)  # type: ignore[no-untyped-call]


def one_change(sequence: int, municipality: str = "242128") -> Any:
    code, number = fresh_resident()
    notice = Municipality(municipality, sequence).notice(code, R.CHANGE_REASON_SHUSSEI, my_number=number)
    change = national_pb2.PropagatedChange(file=national_pb2.CHANGE_FILE_RESIDENT, notice=notice)
    return national_pb2.NotifyUpdatesRequest(prefecture_code="24", changes=[change])


@pytest.mark.parametrize(
    "identity",
    ["agency/police", "municipal-cs/242128", "monitor/monitor-01", "national/jlis"],  # operators: unknown
)
def test_only_record_servers_may_notify_the_national_server(server: Server, identity: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        national_stub(server, identity).NotifyUpdates(one_change(1), timeout=5)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_record_server_of_another_prefecture_cannot_notify_mie_changes(
    server: Server, pki_dir: Path
) -> None:
    Pki(pki_dir).issue("prefectural-server", "23", overwrite=True)  # 愛知県's server
    with pytest.raises(grpc.RpcError) as info:
        national_stub(server, "prefectural-server/23").NotifyUpdates(one_change(1, "242144"), timeout=5)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_national_server_is_idempotent_and_refuses_gaps(server: Server) -> None:
    stub = national_stub(server, "prefectural-server/24")
    first = one_change(1, "242152")
    assert stub.NotifyUpdates(first, timeout=5).accepted == 1
    again = stub.NotifyUpdates(first, timeout=5)
    assert (again.accepted, again.duplicates) == (0, 1)
    gap = one_change(5, "242152")
    with pytest.raises(grpc.RpcError) as info:
        stub.NotifyUpdates(gap, timeout=5)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(info.value)[1]["expected_sequence"] == "2"


# --- forwarding (機構への照会) --------------------------------------------------------------------------


def elsewhere_record(index: int = 3) -> Any:
    from server.seed.elsewhere import generate_elsewhere

    return list(generate_elsewhere(index + 1))[index].record


def provide(server: Server, identity: str, purpose: str, **condition: Any) -> Any:
    request = prefecture_pb2.ProvideRequest(purpose=purpose, **condition)
    return server.stub(identity).Provide(request, timeout=10)


def test_provide_for_a_resident_of_another_prefecture_is_forwarded_and_marked(server: Server) -> None:
    other = elsewhere_record()
    answer = provide(server, "agency/police", "bt6-police-driving-licence", resident_code=other.resident_code)
    assert answer.source == prefecture_pb2.RECORD_SOURCE_NATIONAL
    (view,) = answer.records
    assert (view.resident_code, view.address, view.my_number) == (
        other.resident_code,
        other.four_info.address,
        other.my_number,
    )
    # the same purpose rules apply to a forwarded answer: no My Number for a purpose without it
    plain = provide(
        server, "agency/education", "bt6-education-teacher-licence", resident_code=other.resident_code
    )
    assert plain.source == prefecture_pb2.RECORD_SOURCE_NATIONAL and plain.records[0].my_number == ""
    by_number = provide(server, "department/tax", "bt5-tax-vehicle", my_number=other.my_number)
    assert by_number.records[0].resident_code == other.resident_code


def test_a_forwarded_provision_is_audited_like_a_local_one(server: Server, seeded_records: list[Any]) -> None:
    from server.audit.query import query

    directory = server.settings.path(server.settings.audit_dir)
    other = elsewhere_record(4)
    mine = next(r for r in seeded_records if not r.deleted_flag)
    for code in (other.resident_code, mine.resident_code):
        provide(server, "agency/police", "bt6-police-driving-licence", resident_code=code, request_id="aud-1")
    forwarded, local = list(query(directory, method="/juki.v1.Prefecture/Provide", caller=POLICE_URI))[-2:]
    assert (forwarded["source"], local["source"]) == ("NATIONAL", "LOCAL")
    for entry in (forwarded, local):
        assert entry["kind"] == "provision" and entry["outcome"] == "OK" and entry["request_id"] == "aud-1"
        assert entry["purpose"] == "bt6-police-driving-licence" and "my_number" in entry["items"]
        assert entry["count"] == 1 and len(entry["subjects"]) == 1
    assert forwarded["subjects"] != local["subjects"]


def test_provide_for_a_mie_resident_is_answered_locally(server: Server, seeded_records: list[Any]) -> None:
    mine = next(r for r in seeded_records if not r.deleted_flag)
    answer = provide(server, "department/health", "bt5-health-welfare", resident_code=mine.resident_code)
    assert answer.source == prefecture_pb2.RECORD_SOURCE_LOCAL
    assert answer.records[0].my_number == mine.my_number


def test_provide_by_four_info_finds_the_person(server: Server, seeded_records: list[Any]) -> None:
    mine = next(r for r in seeded_records if not r.deleted_flag)
    four = prefecture_pb2.FourInfoQuery(
        name_kana=mine.four_info.name_kana, birth_date=mine.four_info.birth_date
    )
    answer = provide(server, "agency/police", "bt6-police-driving-licence", four_info=four)
    assert mine.resident_code in [v.resident_code for v in answer.records]


def test_operator_query_national_is_marked_and_minimised(server: Server) -> None:
    other = elsewhere_record(5)
    request = prefecture_pb2.QueryNationalRequest(purpose="identity-check", resident_code=other.resident_code)
    answer = server.stub("operator/op-0001").QueryNational(request, timeout=10)
    assert answer.source == prefecture_pb2.RECORD_SOURCE_NATIONAL
    assert answer.records[0].resident_code == other.resident_code and answer.records[0].my_number == ""


def test_lookup_of_nobody_is_not_found_and_of_someone_elsewhere_is_forwarded(server: Server) -> None:
    stub = server.stub("operator/op-0001")
    with pytest.raises(grpc.RpcError) as info:
        stub.Lookup(
            prefecture_pb2.LookupRequest(purpose="identity-check", resident_code="00000000000"), timeout=10
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    other = elsewhere_record(7)
    found = stub.Lookup(
        prefecture_pb2.LookupRequest(purpose="identity-check", resident_code=other.resident_code)
    )
    assert (
        found.source == prefecture_pb2.RECORD_SOURCE_NATIONAL
        and found.record.resident_code == other.resident_code
    )


def test_with_the_national_server_down_a_forwarded_provide_is_unavailable_not_not_found(
    tmp_path: Path, pki_dir: Path
) -> None:
    srv = make_server(tmp_path / "down", pki_dir, seeded=50)
    srv.start()
    try:
        srv.stop_national()
        other = elsewhere_record()
        with pytest.raises(grpc.RpcError) as info:
            provide(srv, "agency/police", "bt6-police-driving-licence", resident_code=other.resident_code)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert other.four_info.name_kanji not in (info.value.details() or "")
        # a local person is still answered
        from server.seed.population import generate

        mine = next(e.record for e in generate(50, 1) if not e.record.deleted_flag)
        local = provide(srv, "agency/police", "bt6-police-driving-licence", resident_code=mine.resident_code)
        assert local.source == prefecture_pb2.RECORD_SOURCE_LOCAL
    finally:
        srv.stop_all()
