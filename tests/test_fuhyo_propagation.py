"""附票 propagation (seed 1-③, SPEC §5.4, §6.2) with real processes: every applied 附票 change is queued in
its transaction and delivered by the relay to the national server's 附票 file (附票全国サーバ), in order,
once in effect, whatever is killed in between; the national server answers 附票 queries from that file."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from juki.v1 import fuhyo_pb2, national_pb2, records_pb2

from clients.channel import error_details
from clients.fuhyo_cmds import fuhyo_stub
from server.seed.fuhyo import generate_fuhyo_elsewhere
from tests.conftest import Server, make_server
from tests.notices import FuhyoMunicipality, fresh_resident
from tests.test_propagation import national_stub, wait_for

R = records_pb2
F = fuhyo_pb2
OWASE = "242098"
ELSEWHERE = 40


def fuhyo_notices(town: FuhyoMunicipality, count: int) -> list[Any]:
    """Creations; every third notice moves an earlier person abroad, every seventh removes one created
    before (so order matters at the national server)."""
    out: list[Any] = []
    created: list[str] = []
    removed: set[str] = set()
    for i in range(count):
        if i % 7 == 6 and created[i // 7] not in removed:
            code = created[i // 7]
            removed.add(code)
            out.append(town.notice(code, F.FUHYO_CHANGE_KIND_REMOVE))
        elif i % 3 == 2 and created[i // 3] not in removed:
            out.append(
                town.notice(
                    created[i // 3],
                    F.FUHYO_CHANGE_KIND_MODIFY,
                    state_kind=R.FUHYO_STATE_ABROAD,
                    address="",
                    address_municipality_code="",
                    last_address=f"三重県尾鷲市中央町{i}番地",
                )
            )
        else:
            code, _ = fresh_resident()
            created.append(code)
            out.append(town.notice(code, F.FUHYO_CHANGE_KIND_CREATE))
    return out


def apply_all(server: Server, batch: list[Any]) -> None:
    stub = fuhyo_stub(server.settings, f"municipal-cs/{OWASE}")
    requests = (F.FuhyoApplyRequest(notice=n) for n in batch)
    assert stub.ApplyUpdates(requests, timeout=120).last_applied_sequence == batch[-1].sequence


def outbox_depth(server: Server) -> int:
    store = server.open_fuhyo_reader()
    try:
        with store.reader() as tx:
            return tx.outbox_depth()
    finally:
        store.env.close()


def assert_national_holds_each_once(server: Server, batch: list[Any]) -> None:
    """The national 附票 file holds exactly the applied changes: every sequence once, the final records
    right (all 18 items as the prefecture applied them), one history entry per earlier change."""
    store = server.open_national_fuhyo_reader()
    try:
        with store.reader() as tx:
            assert tx.last_sequence(OWASE) == batch[-1].sequence
            held = [seq for seq in range(1, batch[-1].sequence + 2) if tx.applied(OWASE, seq) is not None]
            assert held == [n.sequence for n in batch]
            final: dict[str, Any] = {n.record.resident_code: n for n in batch}
            for code, last in final.items():
                record = tx.get(code)
                assert record is not None
                assert record.deleted_flag == (last.kind == F.FUHYO_CHANGE_KIND_REMOVE)
                full = tx.get_fuhyo(code)
                assert full is not None and full.notice_kind == last.kind
                if last.kind != F.FUHYO_CHANGE_KIND_REMOVE:
                    expected = R.FuhyoRecord()
                    expected.CopyFrom(last.record)
                    expected.change_date, expected.notice_kind = last.change_date, last.kind
                    assert full == expected
                changes = sum(1 for n in batch if n.record.resident_code == code)
                assert len(tx.history(code)) == changes - 1, "a change applied twice would add history"
    finally:
        store.env.close()


@pytest.fixture()
def deployment(tmp_path: Path, pki_dir: Path) -> Iterator[Server]:
    srv = make_server(
        tmp_path / "srv", pki_dir, seeded=0, elsewhere=0, with_fuhyo=True, relay_batch_size=5,
        relay_backoff_max=0.5,
    )  # fmt: skip
    srv.start()
    yield srv
    srv.stop_all()


def test_fuhyo_changes_applied_while_national_is_down_reach_its_fuhyo_file_in_order(
    deployment: Server,
) -> None:
    deployment.stop_national()
    batch = fuhyo_notices(FuhyoMunicipality(OWASE), 15)
    apply_all(deployment, batch)
    assert outbox_depth(deployment) == 15  # queued with each change, kept while the national is down
    deployment.start_national()
    wait_for(lambda: outbox_depth(deployment) == 0, "the 附票 outbox to drain")
    assert_national_holds_each_once(deployment, batch)
    national = deployment.open_national_reader()  # the resident file took none of them
    try:
        with national.reader() as tx:
            assert tx.last_sequence(OWASE) == 0
            assert tx.get(batch[0].record.resident_code) is None
    finally:
        national.env.close()


def test_fuhyo_server_killed_mid_delivery_loses_and_repeats_nothing(deployment: Server) -> None:
    deployment.stop_national()
    batch = fuhyo_notices(FuhyoMunicipality(OWASE), 3000)
    apply_all(deployment, batch)
    deployment.start_national()
    wait_for(lambda: outbox_depth(deployment) < 2950, "delivery to start")
    deployment.stop_fuhyo(9)  # SIGKILL while batches are in flight
    remaining = outbox_depth(deployment)
    assert 0 < remaining < 3000
    deployment.start_fuhyo()
    wait_for(lambda: outbox_depth(deployment) == 0, "the 附票 outbox to drain after restart")
    assert_national_holds_each_once(deployment, batch)


# --- the national server's side -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def national(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path) -> Iterator[Server]:
    srv = make_server(
        tmp_path_factory.mktemp("national-fuhyo"), pki_dir, seeded=0, elsewhere=0, with_fuhyo=True,
        fuhyo_elsewhere=ELSEWHERE, relay_enabled=False,
    )  # fmt: skip
    srv.start()
    yield srv
    srv.stop_all()


def fuhyo_change(notice: Any) -> national_pb2.NotifyUpdatesRequest:
    change = national_pb2.PropagatedChange(file=national_pb2.CHANGE_FILE_FUHYO, fuhyo_notice=notice)
    return national_pb2.NotifyUpdatesRequest(prefecture_code="24", changes=[change])


def test_a_fuhyo_change_is_taken_once_and_a_gap_refused(national: Server) -> None:
    town = FuhyoMunicipality("242152")
    code, _ = fresh_resident()
    stub = national_stub(national, "fuhyo-server/24")
    first = fuhyo_change(town.notice(code, F.FUHYO_CHANGE_KIND_CREATE))
    assert stub.NotifyUpdates(first, timeout=5).accepted == 1
    again = stub.NotifyUpdates(first, timeout=5)
    assert (again.accepted, again.duplicates) == (0, 1)
    town.next_sequence = 5
    with pytest.raises(grpc.RpcError) as info:
        stub.NotifyUpdates(fuhyo_change(town.notice(code, F.FUHYO_CHANGE_KIND_REMOVE)), timeout=5)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(info.value)[1]["expected_sequence"] == "2"
    found = stub.QueryFuhyo(
        national_pb2.NationalQueryRequest(resident_code=code, purpose="identity-check"), timeout=5
    )
    assert [v.resident_code for v in found.records] == [code]


def test_a_fuhyo_change_from_the_prefectural_server_is_refused_and_stores_nothing(national: Server) -> None:
    code, _ = fresh_resident()
    request = fuhyo_change(FuhyoMunicipality("242161").notice(code, F.FUHYO_CHANGE_KIND_CREATE))
    with pytest.raises(grpc.RpcError) as info:
        national_stub(national, "prefectural-server/24").NotifyUpdates(request, timeout=5)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    found = national_stub(national, "fuhyo-server/24").QueryFuhyo(
        national_pb2.NationalQueryRequest(resident_code=code, purpose="identity-check"), timeout=5
    )
    assert not found.records


def test_a_malformed_fuhyo_change_is_invalid_argument_naming_the_field(national: Server) -> None:
    code, _ = fresh_resident()
    notice = FuhyoMunicipality("242179").notice(code, F.FUHYO_CHANGE_KIND_CREATE, name_kana="")
    with pytest.raises(grpc.RpcError) as info:
        national_stub(national, "fuhyo-server/24").NotifyUpdates(fuhyo_change(notice), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "changes[0].fuhyo_notice.record.name_kana" in str(error_details(info.value)[0])


def other_prefecture_record() -> Any:
    return next(r for r in generate_fuhyo_elsewhere(ELSEWHERE) if r.state_kind == R.FUHYO_STATE_DOMESTIC)


def test_national_fuhyo_query_answers_other_prefectures_records_without_a_my_number(national: Server) -> None:
    other = other_prefecture_record()
    stub = national_stub(national, "fuhyo-server/24")
    request = national_pb2.NationalQueryRequest(resident_code=other.resident_code, purpose="identity-check")
    (view,) = stub.QueryFuhyo(request, timeout=5).records
    assert (view.resident_code, view.name_kanji, view.address) == (
        other.resident_code,
        other.name_kanji,
        other.address,
    )
    by_number = national_pb2.NationalQueryRequest(my_number="123456789018", purpose="identity-check")
    with pytest.raises(grpc.RpcError) as info:
        stub.QueryFuhyo(by_number, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("identity", ["prefectural-server/24", "agency/police", "monitor/monitor-01"])
def test_only_the_fuhyo_server_may_query_the_national_fuhyo_file(national: Server, identity: str) -> None:
    request = national_pb2.NationalQueryRequest(
        resident_code=other_prefecture_record().resident_code, purpose="identity-check"
    )
    with pytest.raises(grpc.RpcError) as info:
        national_stub(national, identity).QueryFuhyo(request, timeout=5)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_outbox_status_of_the_fuhyo_server_counts_its_deliveries(national: Server) -> None:
    """`juki outbox status --server fuhyo` reads the 附票 server's outbox (here: relay off, one change)."""
    code, _ = fresh_resident()
    notice = FuhyoMunicipality(OWASE).notice(code, F.FUHYO_CHANGE_KIND_CREATE)
    fuhyo_stub(national.settings, f"municipal-cs/{OWASE}").ApplyUpdate(F.FuhyoApplyRequest(notice=notice))
    config = str(national.config)
    result = subprocess.run(
        [sys.executable, "-m", "clients", "--config", config, "outbox", "status", "--server", "fuhyo"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "outbox depth          1" in result.stdout
