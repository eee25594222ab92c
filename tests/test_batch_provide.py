"""一括提供 (BatchProvide): one result per condition in order; above the threshold only with a single-use
approval bound to caller, purpose and count."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from juki.v1 import admin_pb2, admin_pb2_grpc, prefecture_pb2

from clients.channel import secure_channel
from server.identity.pki import Pki
from server.seed.population import generate
from tests.conftest import Server, make_server

THRESHOLD = 5
POLICE = ("agency/police", "bt6-police-driving-licence")
P = prefecture_pb2


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("batch"), pki_dir, seeded=500, batch_threshold=THRESHOLD)
    srv.start()
    yield srv
    srv.stop_all()


@pytest.fixture(scope="module")
def people() -> list[Any]:
    return [e.record for e in generate(500, 1) if not e.record.deleted_flag]


def batch_requests(purpose: str, conditions: list[dict[str, Any]], **first: Any) -> Iterator[Any]:
    """A BatchProvide stream: the first message declares the count (and carries `first`)."""
    for i, condition in enumerate(conditions):
        extra = {"purpose": purpose, "declared_count": len(conditions), **first} if i == 0 else {}
        yield P.BatchProvideRequest(condition_id=f"c{i}", **condition, **extra)


def batch(
    server: Server, identity: str, purpose: str, conditions: list[dict[str, Any]], **first: Any
) -> list[Any]:
    return list(server.stub(identity).BatchProvide(batch_requests(purpose, conditions, **first), timeout=30))


def approve(server: Server, caller: str, purpose: str, max_count: int, *, target: str = "") -> str:
    """An approval issued by the admin of the server at `target` (default: the prefectural server)."""
    channel = secure_channel(
        Pki(server.settings.pki_path), "admin/admin-01", target or server.settings.prefecture_target
    )
    try:
        stub = admin_pb2_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
        request = admin_pb2.IssueApprovalRequest(caller=caller, purpose=purpose, max_count=max_count)
        return str(stub.IssueApproval(request, timeout=5).token)
    finally:
        channel.close()


def test_each_condition_gets_its_result_in_order(server: Server, people: list[Any]) -> None:
    a, b = people[0], people[1]
    twins = [
        p
        for p in people
        if p.four_info.sex == a.four_info.sex and p.four_info.address[:6] == a.four_info.address[:6]
    ]
    conditions = [
        {"resident_code": a.resident_code},
        {"resident_code": "00000000000"},
        {"my_number": b.my_number},
        {"four_info": P.FourInfoQuery(address_prefix=a.four_info.address[:6], sex=a.four_info.sex)},
        {"resident_code": "bad"},
    ]
    results = batch(server, *POLICE, conditions)
    assert [r.condition_id for r in results] == [f"c{i}" for i in range(5)]
    assert results[0].outcome == P.BATCH_OUTCOME_FOUND and results[0].record.my_number == a.my_number
    assert results[1].outcome == P.BATCH_OUTCOME_NOT_FOUND and not results[1].HasField("record")
    assert results[2].outcome == P.BATCH_OUTCOME_FOUND and results[2].record.resident_code == b.resident_code
    assert results[3].outcome == (P.BATCH_OUTCOME_AMBIGUOUS if len(twins) > 1 else P.BATCH_OUTCOME_FOUND)
    assert results[4].outcome == P.BATCH_OUTCOME_REFUSED


def test_a_my_number_condition_without_a_my_number_purpose_is_refused(
    server: Server, people: list[Any]
) -> None:
    results = batch(
        server,
        "agency/education",
        "bt6-education-teacher-licence",
        [{"my_number": people[0].my_number}, {"resident_code": people[0].resident_code}],
    )
    assert results[0].outcome == P.BATCH_OUTCOME_REFUSED and not results[0].HasField("record")
    assert results[1].outcome == P.BATCH_OUTCOME_FOUND and results[1].record.my_number == ""


def test_over_the_threshold_without_a_token_is_refused_before_any_result(
    server: Server, people: list[Any]
) -> None:
    conditions = [{"resident_code": p.resident_code} for p in people[: THRESHOLD + 1]]
    with pytest.raises(grpc.RpcError) as info:
        batch(server, *POLICE, conditions)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_token_works_once(server: Server, people: list[Any]) -> None:
    conditions = [{"resident_code": p.resident_code} for p in people[: THRESHOLD + 3]]
    token = approve(server, "spiffe://juki.mie/agency/police", POLICE[1], THRESHOLD + 3)
    results = batch(server, *POLICE, conditions, approval_token=token)
    assert [r.record.resident_code for r in results] == [c["resident_code"] for c in conditions]
    with pytest.raises(grpc.RpcError) as info:
        batch(server, *POLICE, conditions, approval_token=token)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("caller", "purpose", "max_count", "identity"),
    [
        ("spiffe://juki.mie/agency/police", POLICE[1], THRESHOLD + 3, "department/tax"),  # another caller
        ("spiffe://juki.mie/agency/police", POLICE[1], THRESHOLD + 1, "agency/police"),  # count too small
    ],
)
def test_a_token_is_bound_to_caller_and_count(
    server: Server, people: list[Any], caller: str, purpose: str, max_count: int, identity: str
) -> None:
    token = approve(server, caller, purpose, max_count)
    conditions = [{"resident_code": p.resident_code} for p in people[: THRESHOLD + 3]]
    own_purpose = POLICE[1] if identity == "agency/police" else "bt5-tax-vehicle"
    with pytest.raises(grpc.RpcError) as info:
        batch(server, identity, own_purpose, conditions, approval_token=token)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_more_conditions_than_declared_ends_the_stream(server: Server, people: list[Any]) -> None:
    def requests() -> Iterator[Any]:
        yield P.BatchProvideRequest(
            purpose=POLICE[1], declared_count=1, resident_code=people[0].resident_code
        )
        yield P.BatchProvideRequest(resident_code=people[1].resident_code)

    with pytest.raises(grpc.RpcError) as info:
        list(server.stub(POLICE[0]).BatchProvide(requests(), timeout=10))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_approvals_are_issued_only_for_granted_purposes(server: Server) -> None:
    with pytest.raises(grpc.RpcError) as info:
        approve(server, "spiffe://juki.mie/agency/police", "bt5-tax-vehicle", 10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_the_csv_client_streams_conditions_to_result_rows(
    server: Server, people: list[Any], tmp_path: Path
) -> None:
    import csv
    import json
    import subprocess
    import sys

    def juki(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "clients", "--config", str(server.config), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    source = tmp_path / "conditions.csv"
    rows = [{"id": f"r{i}", "resident_code": p.resident_code} for i, p in enumerate(people[: THRESHOLD + 2])]
    rows.append({"id": "missing", "resident_code": "00000000000"})
    rows.append({"id": "bynumber", "my_number": people[9].my_number})
    with source.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "resident_code", "my_number"])
        writer.writeheader()
        writer.writerows(rows)
    approval = json.loads(juki("admin", "approve", "--caller", "agency/police", "--purpose", POLICE[1],
                               "--max-count", str(len(rows))))  # fmt: skip
    target = tmp_path / "results.csv"
    files = ["--in", str(source), "--out", str(target)]
    juki("agency", "batch", "--as", POLICE[0], "--purpose", POLICE[1], *files, "--token", approval["token"])
    with target.open(encoding="utf-8") as f:
        results = list(csv.DictReader(f))
    assert [r["id"] for r in results] == [r["id"] for r in rows]
    assert results[0]["outcome"] == "FOUND" and results[0]["my_number"] == people[0].my_number
    assert results[-2]["outcome"] == "NOT_FOUND" and results[-1]["resident_code"] == people[9].resident_code


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_ten_thousand_mixed_conditions_in_order_with_bounded_memory(
    server: Server, people: list[Any]
) -> None:
    conditions: list[dict[str, Any]] = []
    expected: list[tuple[int, str]] = []
    for i in range(10_000):
        person = people[i % len(people)]
        kind = i % 4
        if kind == 0:
            conditions.append({"resident_code": person.resident_code})
            expected.append((P.BATCH_OUTCOME_FOUND, person.resident_code))
        elif kind == 1:
            conditions.append({"my_number": person.my_number})
            expected.append((P.BATCH_OUTCOME_FOUND, person.resident_code))
        elif kind == 2:
            conditions.append({"resident_code": f"{90_000_000_000 + i:011d}"})
            expected.append((P.BATCH_OUTCOME_NOT_FOUND, ""))
        else:
            conditions.append({"resident_code": "1234"})  # malformed: refused, the batch goes on
            expected.append((P.BATCH_OUTCOME_REFUSED, ""))
    token = approve(server, "spiffe://juki.mie/agency/police", POLICE[1], len(conditions))
    assert server.proc is not None
    before = _rss_kib(server.proc.pid)

    def requests() -> Iterator[Any]:
        for i, condition in enumerate(conditions):
            extra = (
                {"purpose": POLICE[1], "declared_count": len(conditions), "approval_token": token}
                if i == 0
                else {}
            )
            yield P.BatchProvideRequest(condition_id=str(i), **condition, **extra)

    count = 0
    peak = before
    for i, result in enumerate(server.stub(POLICE[0]).BatchProvide(requests(), timeout=120)):
        assert result.condition_id == str(i)
        assert (result.outcome, result.record.resident_code) == expected[i]
        count += 1
        if i % 1000 == 0:
            peak = max(peak, _rss_kib(server.proc.pid))
    assert count == len(conditions)
    assert peak - before < 64 * 1024, f"server RSS grew by {(peak - before) // 1024} MiB"
