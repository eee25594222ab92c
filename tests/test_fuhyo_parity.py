"""SPEC §5.2: the 附票 server's BatchProvide, Disclose, Reconcile and QueryNational, with the semantics,
limits and audit of their prefectural counterparts (the same code), on real processes; never a My Number."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from juki.v1 import fuhyo_pb2, prefecture_pb2, records_pb2

from clients.channel import error_details
from clients.fuhyo_cmds import fuhyo_stub
from clients.reconcile_cmd import reconcile
from server.audit.query import query
from server.seed.fuhyo import generate_fuhyo, generate_fuhyo_elsewhere
from tests.conftest import Server, make_server
from tests.test_batch_provide import approve as approve_at
from tests.test_batch_provide import batch_requests

SEEDED = 1500
ELSEWHERE = 40
THRESHOLD = 5
TSU = "242012"
POLICE = ("agency/police", "bt6-police-driving-licence")
P = prefecture_pb2
F = fuhyo_pb2
R = records_pb2


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path) -> Iterator[Server]:
    server = make_server(
        tmp_path_factory.mktemp("fuhyo-parity"), pki_dir, seeded=SEEDED, elsewhere=0, with_fuhyo=True,
        fuhyo_elsewhere=ELSEWHERE, batch_threshold=THRESHOLD,
    )  # fmt: skip
    server.start()
    yield server
    server.stop_all()


@pytest.fixture(scope="module")
def people() -> list[Any]:
    return list(generate_fuhyo(SEEDED, 1))


def run_cli(srv: Server, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "clients", "--config", str(srv.config), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


# --- BatchProvide ---------------------------------------------------------------------------------------


def batch(
    srv: Server, identity: str, purpose: str, conditions: list[dict[str, Any]], **first: Any
) -> list[Any]:
    requests = batch_requests(purpose, conditions, **first)
    return list(fuhyo_stub(srv.settings, identity).BatchProvide(requests, timeout=30))


def approve(srv: Server, caller: str, purpose: str, max_count: int) -> str:
    """An approval issued by the 附票 server's own admin (its own registry)."""
    return approve_at(srv, caller, purpose, max_count, target=srv.settings.fuhyo_target)


def test_batch_gives_each_condition_its_result_in_order_and_never_a_my_number(
    srv: Server, people: list[Any]
) -> None:
    abroad = next(p for p in people if p.state_kind == R.FUHYO_STATE_ABROAD)
    home = next(p for p in people if p.state_kind == R.FUHYO_STATE_DOMESTIC)
    conditions = [
        {"resident_code": abroad.resident_code},
        {"resident_code": "00000000000"},
        {"my_number": "123456789018"},  # a purpose allowing My Number changes nothing: none is held here
        {"four_info": P.FourInfoQuery(name_kana=home.name_kana, birth_date=home.birth_date)},
        {"resident_code": "bad"},
    ]
    results = batch(srv, *POLICE, conditions)
    assert [r.condition_id for r in results] == [f"c{i}" for i in range(5)]
    assert results[0].outcome == P.BATCH_OUTCOME_FOUND
    assert (results[0].record.abroad, results[0].record.address) == (True, abroad.last_address)
    assert results[1].outcome == P.BATCH_OUTCOME_NOT_FOUND and not results[1].HasField("record")
    assert results[2].outcome == P.BATCH_OUTCOME_REFUSED and not results[2].HasField("record")
    assert (
        results[3].outcome == P.BATCH_OUTCOME_FOUND and results[3].record.resident_code == home.resident_code
    )
    assert results[4].outcome == P.BATCH_OUTCOME_REFUSED
    entries = list(
        query(srv.settings.path(srv.settings.fuhyo_audit_dir), method="/juki.v1.Fuhyo/BatchProvide")
    )
    assert entries and entries[-1]["outcome"] == "OK"


def test_a_batch_chunk_gets_its_fuhyo_results_in_one_message_and_its_part_entry_first(
    srv: Server, people: list[Any]
) -> None:
    abroad = next(p for p in people if p.state_kind == R.FUHYO_STATE_ABROAD)
    chunk = [
        P.BatchCondition(condition_id="a", resident_code=abroad.resident_code),
        P.BatchCondition(condition_id="n", my_number="123456789018"),  # never a My Number here
        P.BatchCondition(condition_id="z", resident_code="00000000000"),
    ]
    first = P.BatchProvideRequest(purpose=POLICE[1], declared_count=3, conditions=chunk)
    [answer] = fuhyo_stub(srv.settings, POLICE[0]).BatchProvide(iter([first]), timeout=30)
    assert isinstance(answer, F.FuhyoBatchProvideResult)
    outcomes = [(r.condition_id, r.outcome) for r in answer.results]
    assert outcomes == [
        ("a", P.BATCH_OUTCOME_FOUND),
        ("n", P.BATCH_OUTCOME_REFUSED),
        ("z", P.BATCH_OUTCOME_NOT_FOUND),
    ]
    assert answer.results[0].record.abroad and not answer.results[1].HasField("record")
    entries = [
        e
        for e in query(srv.settings.path(srv.settings.fuhyo_audit_dir), method="/juki.v1.Fuhyo/BatchProvide")
        if e["outcome"] != "INTENT"
    ]
    assert [(e.get("part"), e["count"]) for e in entries[-2:]] == [(1, 3), (None, 3)]


def test_batch_over_the_threshold_needs_the_fuhyo_servers_approval_once(
    srv: Server, people: list[Any]
) -> None:
    conditions = [{"resident_code": p.resident_code} for p in people[: THRESHOLD + 1]]
    with pytest.raises(grpc.RpcError) as info:
        batch(srv, *POLICE, conditions)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    token = approve(srv, "spiffe://juki.mie/agency/police", POLICE[1], THRESHOLD + 1)
    assert len(batch(srv, *POLICE, conditions, approval_token=token)) == THRESHOLD + 1
    with pytest.raises(grpc.RpcError) as info:  # single use
        batch(srv, *POLICE, conditions, approval_token=token)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_batch_with_more_conditions_than_declared_ends_the_stream(srv: Server, people: list[Any]) -> None:
    with pytest.raises(grpc.RpcError) as info:
        batch(srv, *POLICE, [{"resident_code": p.resident_code} for p in people[:3]], declared_count=2)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in error_details(info.value)[0]] == ["declared_count"]


def test_batch_is_refused_to_an_operator(srv: Server, people: list[Any]) -> None:
    with pytest.raises(grpc.RpcError) as info:
        batch(srv, "operator/op-0001", "identity-check", [{"resident_code": people[0].resident_code}])
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_batch_cli_with_fuhyo_writes_result_rows(srv: Server, people: list[Any], tmp_path: Path) -> None:
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_text(f"id,resident_code\na,{people[0].resident_code}\nb,00000000000\n", encoding="utf-8")
    done = run_cli(
        srv, "agency", "batch", "--as", POLICE[0], "--purpose", POLICE[1], "--in", str(source),
        "--out", str(target), "--fuhyo",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    rows = target.read_text(encoding="utf-8").splitlines()
    assert rows[1].startswith(f"a,FOUND,{people[0].resident_code},") and rows[2].startswith("b,NOT_FOUND,")
    assert "found=1 not_found=1" in done.stdout


# --- Disclose -------------------------------------------------------------------------------------------


def test_disclose_lists_the_provisions_of_a_fuhyo_record_with_proofs(srv: Server, people: list[Any]) -> None:
    person = people[7]
    provided = fuhyo_stub(srv.settings, POLICE[0]).Provide(
        F.FuhyoProvideRequest(resident_code=person.resident_code, purpose=POLICE[1]), timeout=10
    )
    assert provided.records[0].resident_code == person.resident_code
    disclosed = fuhyo_stub(srv.settings, "operator/op-0001").Disclose(
        P.DiscloseRequest(resident_code=person.resident_code, purpose="disclosure"), timeout=10
    )
    assert disclosed.record.resident_code == person.resident_code
    assert not hasattr(disclosed.record, "my_number")
    (entry,) = [p for p in disclosed.provisions if p.method == "/juki.v1.Fuhyo/Provide"]
    assert (entry.recipient, entry.purpose, entry.outcome) == (
        "spiffe://juki.mie/agency/police",
        POLICE[1],
        "OK",
    )
    assert entry.leaf_hash and entry.entry


def test_disclose_of_nobody_is_not_found_and_of_an_agency_refused(srv: Server, people: list[Any]) -> None:
    with pytest.raises(grpc.RpcError) as info:
        fuhyo_stub(srv.settings, "operator/op-0001").Disclose(
            P.DiscloseRequest(resident_code="00000000000", purpose="disclosure"), timeout=10
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        fuhyo_stub(srv.settings, POLICE[0]).Disclose(
            P.DiscloseRequest(resident_code=people[0].resident_code, purpose=POLICE[1]), timeout=10
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_disclose_cli_with_fuhyo_writes_the_page(srv: Server, people: list[Any], tmp_path: Path) -> None:
    out = tmp_path / "d.html"
    done = run_cli(srv, "operator", "disclose", people[1].resident_code, "--out", str(out), "--fuhyo")
    assert done.returncode == 0, done.stdout + done.stderr
    page = out.read_text(encoding="utf-8")
    assert people[1].name_kanji in page and "個人番号" not in page


# --- Reconcile ------------------------------------------------------------------------------------------


def tsu_view(people: list[Any]) -> list[Any]:
    """The 附票 records 津 manages, as its system holds them (what the 附票 server was seeded with)."""
    return [p for p in people if p.managing_municipality_code == TSU]


def write(records: list[Any], path: Path) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json_format.MessageToJson(record, ensure_ascii=False, indent=None) + "\n")
    return path


def test_reconcile_of_identical_fuhyo_views_exchanges_only_digests(
    srv: Server, people: list[Any], tmp_path: Path
) -> None:
    stub = fuhyo_stub(srv.settings, f"municipal-cs/{TSU}")
    differences, summary = reconcile(stub, write(tsu_view(people), tmp_path / "v.jsonl"), TSU, 3, fuhyo=True)
    assert differences == [] and summary.ranges_differing == 0 and summary.records_received == 0
    assert summary.ranges > 10


def test_reconcile_finds_every_injected_fuhyo_difference(
    srv: Server, people: list[Any], tmp_path: Path
) -> None:
    view = [
        R.FuhyoRecord(**json_format.MessageToDict(r, preserving_proto_field_name=True))
        for r in tsu_view(people)
    ]
    dropped = view.pop(3)
    extra = R.FuhyoRecord()
    extra.CopyFrom(view[0])
    extra.resident_code = "99999999901"
    view.append(extra)
    view[5].address += "の2"
    view[6].notice_kind = R.FUHYO_NOTICE_KIND_REMOVE  # the municipality removed it; the server did not
    view[7].state_kind = R.FUHYO_STATE_ABROAD if view[7].state_kind == 1 else R.FUHYO_STATE_DOMESTIC
    stub = fuhyo_stub(srv.settings, f"municipal-cs/{TSU}")
    differences, summary = reconcile(stub, write(view, tmp_path / "v.jsonl"), TSU, 3, fuhyo=True)
    found = {(d.resident_code, d.kind): list(d.items) for d in differences}
    assert found == {
        (dropped.resident_code, P.DIFFERENCE_KIND_MISSING_THERE): [],
        (extra.resident_code, P.DIFFERENCE_KIND_MISSING_HERE): [],
        (view[5].resident_code, P.DIFFERENCE_KIND_ITEMS_DIFFER): ["address"],
        (view[6].resident_code, P.DIFFERENCE_KIND_ITEMS_DIFFER): ["removed"],
        (view[7].resident_code, P.DIFFERENCE_KIND_ITEMS_DIFFER): ["state_kind"],
    }
    assert (summary.missing_here, summary.missing_there, summary.items_differ) == (1, 1, 3)


def test_a_municipality_reconciles_only_the_fuhyo_records_it_manages(
    srv: Server, people: list[Any], tmp_path: Path
) -> None:
    view = write(tsu_view(people), tmp_path / "v.jsonl")
    for identity, municipality in (("municipal-cs/242021", TSU), ("municipal-cs/242021", "242021")):
        with pytest.raises(grpc.RpcError) as info:
            reconcile(fuhyo_stub(srv.settings, identity), view, municipality, 3, fuhyo=True)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_reconcile_cli_with_fuhyo_prints_the_summary(
    srv: Server, people: list[Any], tmp_path: Path
) -> None:
    view = tsu_view(people)
    view[2].name_kanji = "誤記　花子"
    path = write(view, tmp_path / "v.jsonl")
    done = run_cli(srv, "cs", "reconcile", "--as", f"municipal-cs/{TSU}", "--file", str(path), "--fuhyo")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{view[2].resident_code} ITEMS_DIFFER name_kanji" in done.stdout


# --- QueryNational --------------------------------------------------------------------------------------


def elsewhere() -> Any:
    return next(r for r in generate_fuhyo_elsewhere(ELSEWHERE) if r.state_kind == R.FUHYO_STATE_DOMESTIC)


def test_query_national_answers_from_the_national_fuhyo_file(srv: Server) -> None:
    other = elsewhere()
    answer = fuhyo_stub(srv.settings, "operator/op-0001").QueryNational(
        P.QueryNationalRequest(resident_code=other.resident_code, purpose="identity-check"), timeout=10
    )
    assert answer.source == P.RECORD_SOURCE_NATIONAL
    (view,) = answer.records
    assert (view.resident_code, view.address) == (other.resident_code, other.address)
    national = srv.settings.path(srv.settings.national_audit_dir)
    (entry,) = list(query(national, method="/juki.v1.National/QueryFuhyo"))[-1:]
    assert entry["requester"] == "spiffe://juki.mie/operator/op-0001"


def test_query_national_by_my_number_is_invalid_and_asks_nobody(srv: Server) -> None:
    national = srv.settings.path(srv.settings.national_audit_dir)
    before = len(list(query(national, method="/juki.v1.National/QueryFuhyo")))
    with pytest.raises(grpc.RpcError) as info:
        fuhyo_stub(srv.settings, "operator/op-0001").QueryNational(
            P.QueryNationalRequest(my_number="123456789018", purpose="identity-check"), timeout=10
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in error_details(info.value)[0]] == ["my_number"]
    assert len(list(query(national, method="/juki.v1.National/QueryFuhyo"))) == before


def test_query_national_is_refused_to_an_agency(srv: Server) -> None:
    with pytest.raises(grpc.RpcError) as info:
        fuhyo_stub(srv.settings, POLICE[0]).QueryNational(
            P.QueryNationalRequest(resident_code=elsewhere().resident_code, purpose=POLICE[1]), timeout=10
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_query_national_cli_with_fuhyo_prints_the_record(srv: Server) -> None:
    other = elsewhere()
    done = run_cli(srv, "operator", "query-national", other.resident_code, "--fuhyo")
    assert done.returncode == 0, done.stdout + done.stderr
    assert other.resident_code in done.stdout and "RECORD_SOURCE_NATIONAL" in done.stdout
