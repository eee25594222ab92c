"""一括提供 in chunks (issue 18 item 2): a BatchProvideRequest may carry up to 1000 conditions, answered by
one result message whose `results` are in condition order; each chunk's provision is in the audit trail (a
part entry) before its results are sent, and the call's own entry follows with its outcome and count."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from juki.v1 import admin_pb2, admin_pb2_grpc, prefecture_pb2

from clients.channel import error_details, secure_channel
from server.audit.keys import AuditorKeys
from server.audit.query import query
from server.domain.limits import MAX_BATCH_CHUNK
from server.identity.pki import Pki
from server.seed.population import generate
from tests.conftest import Server, make_server
from tests.test_audit_calls import small_disk
from tests.test_batch_provide import approve

THRESHOLD = 5
POLICE = ("agency/police", "bt6-police-driving-licence")
TAX = ("department/tax", "bt5-tax-vehicle")
P = prefecture_pb2
METHOD = "/juki.v1.Prefecture/BatchProvide"
__all__ = ["small_disk"]  # a fixture used here


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("chunks"), pki_dir, seeded=500, batch_threshold=THRESHOLD)
    srv.start()
    yield srv
    srv.stop_all()


@pytest.fixture(scope="module")
def people() -> list[Any]:
    return [e.record for e in generate(500, 1) if not e.record.deleted_flag]


def chunk(conditions: list[dict[str, Any]], start: int = 0) -> list[Any]:
    return [P.BatchCondition(condition_id=f"c{start + i}", **c) for i, c in enumerate(conditions)]


def chunked(purpose: str, chunks: list[list[dict[str, Any]]], **first: Any) -> Iterator[Any]:
    """A BatchProvide stream of chunks: the first message declares every condition (and carries `first`)."""
    declared = first.pop("declared_count", sum(len(c) for c in chunks))
    start = 0
    for i, conditions in enumerate(chunks):
        extra = {"purpose": purpose, "declared_count": declared, **first} if i == 0 else {}
        yield P.BatchProvideRequest(conditions=chunk(conditions, start), **extra)
        start += len(conditions)


def codes(people: list[Any], first: int, n: int) -> list[dict[str, Any]]:
    return [{"resident_code": p.resident_code} for p in people[first : first + n]]


def entries(server: Server) -> list[dict[str, Any]]:
    return list(query(server.settings.path(server.settings.audit_dir)))


def batch_entries(server: Server, since: int = 0) -> list[dict[str, Any]]:
    """The BatchProvide entries from the `since`-th entry of the trail on, but the intents."""
    return [e for e in entries(server)[since:] if e["method"] == METHOD and e["outcome"] != "INTENT"]


def subject(server: Server, code: str) -> str:
    return AuditorKeys.load(server.settings.path(server.settings.auditor_keys_file)).subject_hash(code)


def refusal(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        list(call)
    return info.value


def test_a_chunk_is_answered_by_one_message_with_its_results_in_order(
    server: Server, people: list[Any]
) -> None:
    a, b = people[0], people[1]
    conditions = [
        {"resident_code": a.resident_code},
        {"resident_code": "00000000000"},
        {"my_number": b.my_number},
        {"four_info": P.FourInfoQuery(address_prefix=a.four_info.address[:6], sex=a.four_info.sex)},
        {"resident_code": "bad"},
    ]
    [answer] = server.stub(POLICE[0]).BatchProvide(chunked(POLICE[1], [conditions]), timeout=30)
    assert not answer.condition_id and not answer.HasField("record")
    results = list(answer.results)
    assert [r.condition_id for r in results] == [f"c{i}" for i in range(5)]
    assert results[0].outcome == P.BATCH_OUTCOME_FOUND and results[0].record.my_number == a.my_number
    assert results[1].outcome == P.BATCH_OUTCOME_NOT_FOUND and not results[1].HasField("record")
    assert results[2].outcome == P.BATCH_OUTCOME_FOUND and results[2].record.resident_code == b.resident_code
    assert results[3].outcome in (P.BATCH_OUTCOME_AMBIGUOUS, P.BATCH_OUTCOME_FOUND)
    assert results[4].outcome == P.BATCH_OUTCOME_REFUSED


def test_chunks_and_single_conditions_mix_and_the_declared_count_counts_conditions(
    server: Server, people: list[Any]
) -> None:
    def requests() -> Iterator[Any]:
        yield P.BatchProvideRequest(
            purpose=POLICE[1], declared_count=5, conditions=chunk(codes(people, 0, 2))
        )
        yield P.BatchProvideRequest(condition_id="single", resident_code=people[2].resident_code)
        yield P.BatchProvideRequest(conditions=chunk(codes(people, 3, 2), 3))

    answers = list(server.stub(POLICE[0]).BatchProvide(requests(), timeout=30))
    assert [len(a.results) for a in answers] == [2, 0, 2]
    assert answers[1].condition_id == "single" and answers[1].record.resident_code == people[2].resident_code
    got = [r.record.resident_code for r in [*answers[0].results, *answers[2].results]]
    assert got == [p.resident_code for p in people[:2] + people[3:5]]
    # six conditions against five declared: the stream ends at the chunk that goes beyond
    error = refusal(
        server.stub(POLICE[0]).BatchProvide(
            chunked(POLICE[1], [codes(people, 0, 3), codes(people, 3, 3)], declared_count=5), timeout=30
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in error_details(error)[0]] == ["declared_count"]


def test_over_the_threshold_counts_a_chunks_conditions(server: Server, people: list[Any]) -> None:
    over = [codes(people, 0, THRESHOLD + 1)]
    error = refusal(server.stub(POLICE[0]).BatchProvide(chunked(POLICE[1], over), timeout=30))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    token = approve(server, "spiffe://juki.mie/agency/police", POLICE[1], THRESHOLD + 1)
    [answer] = server.stub(POLICE[0]).BatchProvide(chunked(POLICE[1], over, approval_token=token), timeout=30)
    assert len(answer.results) == THRESHOLD + 1
    error = refusal(server.stub(POLICE[0]).BatchProvide(chunked(POLICE[1], over, approval_token=token)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED  # single use


def test_a_message_with_both_forms_is_invalid_and_consumes_no_approval(
    server: Server, people: list[Any]
) -> None:
    token = approve(server, "spiffe://juki.mie/agency/police", POLICE[1], THRESHOLD + 1)
    both = P.BatchProvideRequest(
        purpose=POLICE[1],
        declared_count=THRESHOLD + 1,
        approval_token=token,
        resident_code=people[0].resident_code,
        conditions=chunk(codes(people, 1, THRESHOLD)),
    )
    error = refusal(server.stub(POLICE[0]).BatchProvide(iter([both]), timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in error_details(error)[0]] == ["requests[0].conditions"]
    # a later message too, named by its index; a condition_id beside a chunk is the single form as well
    later = P.BatchProvideRequest(condition_id="x", conditions=chunk(codes(people, 0, 1)))
    first = P.BatchProvideRequest(purpose=POLICE[1], declared_count=3, conditions=chunk(codes(people, 0, 1)))
    error = refusal(server.stub(POLICE[0]).BatchProvide(iter([first, later]), timeout=30))
    assert [f for f, _ in error_details(error)[0]] == ["requests[1].conditions"]
    # the approval was not consumed by the refused stream
    good = [codes(people, 0, THRESHOLD + 1)]
    [answer] = server.stub(POLICE[0]).BatchProvide(chunked(POLICE[1], good, approval_token=token), timeout=30)
    assert len(answer.results) == THRESHOLD + 1


def test_a_chunk_holds_at_most_the_limit_and_a_bad_condition_id_ends_the_stream(
    server: Server, people: list[Any]
) -> None:
    token = approve(server, "spiffe://juki.mie/agency/police", POLICE[1], MAX_BATCH_CHUNK + 1)
    many = [{"resident_code": people[i % len(people)].resident_code} for i in range(MAX_BATCH_CHUNK + 1)]
    error = refusal(
        server.stub(POLICE[0]).BatchProvide(chunked(POLICE[1], [many], approval_token=token), timeout=30)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in error_details(error)[0]] == ["requests[0].conditions"]
    bad = P.BatchProvideRequest(
        purpose=POLICE[1],
        declared_count=2,
        conditions=[
            P.BatchCondition(condition_id="ok", resident_code=people[0].resident_code),
            P.BatchCondition(condition_id="\x1b[2J", resident_code=people[1].resident_code),
        ],
    )
    error = refusal(server.stub(POLICE[0]).BatchProvide(iter([bad]), timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in error_details(error)[0]] == ["requests[0].conditions[1].condition_id"]


def test_a_chunk_gives_a_my_number_only_when_the_purpose_allows(server: Server, people: list[Any]) -> None:
    conditions = [{"my_number": people[0].my_number}, {"resident_code": people[0].resident_code}]
    [answer] = server.stub("agency/education").BatchProvide(
        chunked("bt6-education-teacher-licence", [conditions]), timeout=30
    )
    refused, found = answer.results
    assert refused.outcome == P.BATCH_OUTCOME_REFUSED and not refused.HasField("record")
    assert found.outcome == P.BATCH_OUTCOME_FOUND and found.record.my_number == ""
    assert found.record.resident_code == people[0].resident_code


def test_each_chunk_has_its_part_entry_and_the_call_its_own(server: Server, people: list[Any]) -> None:
    before = len(entries(server))
    chunks = [codes(people, 10, 3), [{"resident_code": "00000000000"}, *codes(people, 13, 1)]]
    token = approve(server, "spiffe://juki.mie/agency/police", POLICE[1], 5)
    answers = list(
        server.stub(POLICE[0]).BatchProvide(chunked(POLICE[1], chunks, approval_token=token), timeout=30)
    )
    assert [len(a.results) for a in answers] == [3, 2]
    mine = batch_entries(server, before)
    assert [(e.get("part"), e["outcome"], e["count"]) for e in mine] == [
        (1, "OK", 3),
        (2, "OK", 2),
        (None, "OK", 5),  # the call's entry: every result, once; its subjects are in the parts
    ]
    assert all(e["kind"] == "provision" for e in mine)
    assert mine[0]["subjects"] == [subject(server, p.resident_code) for p in people[10:13]]
    # the residents asked for, as a single condition's entry names them, whether found or not
    assert mine[1]["subjects"] == [subject(server, c) for c in ("00000000000", people[13].resident_code)]
    assert mine[2]["subjects"] == [] and "my_number" in mine[2]["items"]


def test_the_call_entry_of_single_conditions_stays_bounded(server: Server, people: list[Any]) -> None:
    """Results sent one a message are written in parts of at most 1000 subjects as they go: the call's own
    entry holds only what no part named (its memory does not grow with the stream)."""
    n = 2500
    token = approve(server, "spiffe://juki.mie/agency/police", POLICE[1], n)
    targets = [f"{90_000_000_000 + i:011d}" for i in range(n)]  # distinct codes, held by nobody

    def requests() -> Iterator[Any]:
        for i, code in enumerate(targets):
            extra = {"purpose": POLICE[1], "declared_count": n, "approval_token": token} if i == 0 else {}
            yield P.BatchProvideRequest(condition_id=str(i), resident_code=code, **extra)

    before = len(entries(server))
    answers = list(server.stub(POLICE[0]).BatchProvide(requests(), timeout=60))
    assert len(answers) == n and all(a.outcome == P.BATCH_OUTCOME_NOT_FOUND for a in answers)
    mine = batch_entries(server, before)
    assert [(e.get("part"), len(e["subjects"]), e["count"]) for e in mine] == [
        (1, 1000, 1000),
        (2, 1000, 1000),
        (None, 500, n),
    ]


def test_a_resident_provided_in_a_chunk_is_disclosed(server: Server, people: list[Any]) -> None:
    code = people[302].resident_code  # in the second chunk
    chunks = [codes(people, 300, 2), codes(people, 302, 2)]
    list(server.stub(TAX[0]).BatchProvide(chunked(TAX[1], chunks, approval_token=_token(server, TAX, 4))))
    disclosed = server.stub("operator/op-0001").Disclose(
        P.DiscloseRequest(purpose="disclosure", resident_code=code), timeout=30
    )
    mine = [p for p in disclosed.provisions if p.method == METHOD and p.purpose == TAX[1]]
    listed = [(p.recipient, p.outcome) for p in mine if p.outcome != "INTENT"]
    assert listed == [("spiffe://juki.mie/department/tax", "OK")]  # its chunk's part entry


def test_a_refused_chunk_names_its_residents_in_the_call_entry(server: Server, people: list[Any]) -> None:
    """A chunk that ends the stream (here: both forms in one message) is answered with nothing; the call's
    entry, INVALID_ARGUMENT, names the residents it asked for, as a refused single condition's would be —
    and the resident's disclosure lists it."""
    code = people[322].resident_code

    def requests() -> Iterator[Any]:
        yield P.BatchProvideRequest(purpose=TAX[1], declared_count=4, conditions=chunk(codes(people, 320, 2)))
        yield P.BatchProvideRequest(condition_id="x", conditions=chunk(codes(people, 322, 2), 2))

    received: list[Any] = []
    with pytest.raises(grpc.RpcError) as info:
        for answer in server.stub(TAX[0]).BatchProvide(requests(), timeout=30):
            received.append(answer)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [len(a.results) for a in received] == [2]
    disclosed = server.stub("operator/op-0001").Disclose(
        P.DiscloseRequest(purpose="disclosure", resident_code=code), timeout=30
    )
    mine = [p.outcome for p in disclosed.provisions if p.method == METHOD and p.purpose == TAX[1]]
    assert mine == ["INVALID_ARGUMENT"]
    call = [e for e in batch_entries(server) if "part" not in e][-1]
    assert (call["outcome"], call["count"]) == ("INVALID_ARGUMENT", 2)
    assert call["subjects"] == [subject(server, p.resident_code) for p in people[322:324]]


def test_statistics_count_a_chunked_batch_once(server: Server, people: list[Any]) -> None:
    caller, purpose = "department/health", "bt5-health-statistics"
    month = time.strftime("%Y-%m", time.gmtime(time.time() + 9 * 3600))
    key = f"spiffe://juki.mie/{caller} {purpose} OK"
    before = _provisions(server, month).get(key, 0)
    chunks = [codes(people, 100, 3), codes(people, 103, 3), [{"resident_code": "00000000000"}]]
    token = _token(server, (caller, purpose), 7)
    answers = list(server.stub(caller).BatchProvide(chunked(purpose, chunks, approval_token=token)))
    assert sum(len(a.results) for a in answers) == 7
    assert _provisions(server, month).get(key, 0) - before == 7  # every result once, as one entry did


def _token(server: Server, who: tuple[str, str], count: int) -> str:
    return approve(server, f"spiffe://juki.mie/{who[0]}", who[1], count)


def _provisions(server: Server, month: str) -> dict[str, int]:
    channel = secure_channel(
        Pki(server.settings.pki_path), "auditor/auditor-01", server.settings.prefecture_target
    )
    try:
        stub: Any = admin_pb2_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
        stats = stub.Statistics(admin_pb2.StatisticsRequest(month=month), timeout=30)
        return {c.key: c.count for c in stats.provisions}
    finally:
        channel.close()


# --- fail closed ----------------------------------------------------------------------------------------


def test_a_chunk_whose_entry_cannot_be_written_is_not_sent(
    tmp_path: Path, pki_dir: Path, small_disk: Path
) -> None:
    """The trail fills up between two chunks: the second chunk's part entry fails, so the stream ends
    UNAVAILABLE and none of that chunk's results leave the server."""
    srv = make_server(
        tmp_path / "srv", pki_dir, seeded=100, with_national=False, audit_dir=small_disk / "trail"
    )
    srv.start()
    try:
        held = [e.record.resident_code for e in generate(100, 1) if not e.record.deleted_flag]
        first = [{"resident_code": c} for c in held[:3]]
        second = [{"resident_code": held[i % len(held)]} for i in range(500)]  # an entry of ~20 kB
        go = threading.Event()

        def requests() -> Iterator[Any]:
            for i, message in enumerate(chunked(POLICE[1], [first, second])):
                if i == 1:
                    go.wait(30)
                yield message

        stream = srv.stub(POLICE[0]).BatchProvide(requests(), timeout=60)
        received = [next(stream)]
        assert [r.record.resident_code for r in received[0].results] == held[:3]
        filler = small_disk / "filler"
        with filler.open("wb") as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()
                os.fsync(f.fileno())
        go.set()
        with pytest.raises(grpc.RpcError) as info:
            received.extend(stream)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert len(received) == 1  # nothing of the second chunk
        filler.unlink()
        parts = [e.get("part") for e in batch_entries(srv) if "part" in e]
        assert parts == [1]  # the first chunk's entry was written before it was sent; the second's never
    finally:
        srv.stop_all()


# --- readers of a trail with part entries ---------------------------------------------------------------


def test_readers_count_a_call_in_parts_once(tmp_path: Path) -> None:
    """`juki audit verify` takes part entries; the monthly report counts the call (not its parts) and
    follows its residents; the statistics count the call's own entry only."""
    from server.audit import AuditEvent, AuditKeys, AuditTrail, monthly_report, verify
    from server.services.auditing import monthly_statistics

    keys = AuditKeys.generate()
    directory = tmp_path / "trail"
    police = "spiffe://juki.mie/agency/police"
    with AuditTrail.open(directory, keys) as trail:
        a, b, c = (trail.subject_hash(f"1000000000{i}") for i in range(3))
        search = AuditEvent(caller=police, role="agency", method="/juki.v1.Prefecture/Search",
                            purpose=POLICE[1], outcome="OK", subjects=(c,), count=1)  # fmt: skip
        trail.append(search)
        for part, subjects in ((1, (a, b)), (2, (c,))):
            trail.append(
                AuditEvent(
                    caller=police,
                    role="agency",
                    method=METHOD,
                    purpose=POLICE[1],
                    outcome="OK",
                    subjects=subjects,
                    items=("name",),
                    count=len(subjects),
                    kind="provision",
                    part=part,
                )
            )
        trail.append(
            AuditEvent(
                caller=police,
                role="agency",
                method=METHOD,
                purpose=POLICE[1],
                outcome="OK",
                items=("name",),
                count=3,
                kind="provision",
            )
        )
        month = next(iter(query(directory)))["time"][:7]
    assert verify(directory, keys.public_key).ok
    report = monthly_report(directory, month)
    mine = report.callers[police]
    assert (mine["calls"], mine["provisions"], mine["distinct_subjects"]) == (2, 1, 3)
    assert report.searches[police]["unfollowed"] == 0  # the search's resident was provided (in part 2)
    stats = {s.key: s.count for s in monthly_statistics(directory, month).provisions}
    assert stats == {f"{police} {POLICE[1]} OK": 3}
