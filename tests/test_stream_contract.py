"""Issue 12 item 7: the stream contract of ApplyUpdates (and the same scrutiny for BatchProvide).

Notices before the first failing one are applied and reported (last_applied_sequence, applied_in_stream);
the error names the FIRST failing notice, whether it fails a rule, its validation or does not decode. A
stream cancelled by its client applies only the batches committed before the cancellation: its audit
entry says CANCELLED and counts what was applied, and Statistics counts that too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from threading import Event
from typing import Any

import grpc
import pytest
from juki.v1 import prefecture_pb2, records_pb2

from clients.channel import error_details, secure_channel
from server.audit.query import query
from server.identity.pki import Pki
from tests.conftest import Server, make_server
from tests.notices import Municipality, fresh_resident
from tests.test_statistics_applied import updates_counted

P = prefecture_pb2
R = records_pb2
GARBAGE = b"\x0a\x7f"  # a truncated length-delimited field: no request decodes


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("streams"), pki_dir, relay_enabled=False)
    srv.start()
    yield srv
    srv.stop_all()


def _entries(server: Server) -> list[dict[str, Any]]:
    return list(query(server.settings.path(server.settings.audit_dir)))


def _held(server: Server, codes: list[str]) -> list[str]:
    reader = server.open_reader()
    try:
        with reader.reader() as tx:
            return [c for c in codes if tx.get(c) is not None]
    finally:
        reader.env.close()


def _births(town: Municipality, n: int) -> tuple[list[str], list[P.ChangeNotice]]:
    codes, notices = [], []
    for _ in range(n):
        code, number = fresh_resident()
        codes.append(code)
        notices.append(town.notice(code, R.CHANGE_REASON_SHUSSEI, my_number=number, birth_date="2024-05-01"))
    return codes, notices


def _last_entry(server: Server, caller: str, method: str) -> dict[str, Any]:
    """The caller's last entry for the method (each test's municipality is its own), not the INTENT entry
    a writing call makes before it writes."""
    for _ in range(100):  # a cancelled call's entry is written when the server learns of the cancellation
        mine = [
            e
            for e in _entries(server)
            if e["caller"].endswith(caller) and e["method"].endswith(method) and e["outcome"] != "INTENT"
        ]
        if mine:
            return mine[-1]
        time.sleep(0.05)
    raise AssertionError("no entry")


def test_notices_before_an_undecodable_message_are_applied_and_reported(server: Server) -> None:
    town = Municipality("242021")  # 四日市市
    codes, notices = _births(town, 3)
    raw = [P.ApplyUpdateRequest(notice=n).SerializeToString() for n in notices] + [GARBAGE]
    channel = secure_channel(
        Pki(server.settings.pki_path), "municipal-cs/242021", server.settings.prefecture_target
    )
    call: Any = channel.stream_unary("/juki.v1.Prefecture/ApplyUpdates")
    with pytest.raises(grpc.RpcError) as info:
        call(iter(raw), timeout=10)
    channel.close()
    error = info.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations, metadata, _ = error_details(error)
    assert [f for f, _ in violations] == ["requests[3]"]
    assert metadata["last_applied_sequence"] == "3"
    assert metadata["applied_in_stream"] == "3"
    assert metadata["notice_index"] == "3"
    assert _held(server, codes) == codes
    entry = _last_entry(server, "242021", "ApplyUpdates")
    assert (entry["outcome"], entry["count"]) == ("INVALID_ARGUMENT", 3)
    assert updates_counted(server, "242021") == 3


def test_the_error_names_the_first_failing_notice(server: Server, seeded_records: list[Any]) -> None:
    town = Municipality("242039")  # 伊勢市
    codes, notices = _births(town, 1)
    taken = next(r for r in seeded_records if r.my_number)
    code, _ = fresh_resident()
    notices.append(
        town.notice(code, R.CHANGE_REASON_SHUSSEI, my_number=taken.my_number, birth_date="2024-05-01")
    )
    code3, number3 = fresh_resident()
    bad = town.notice(code3, R.CHANGE_REASON_SHUSSEI, my_number=number3, birth_date="2024-05-01")
    bad.four_info.sex = 9  # type: ignore[assignment]  # not a sex: invalid
    notices.append(bad)
    stub = server.stub("municipal-cs/242039")
    with pytest.raises(grpc.RpcError) as info:
        stub.ApplyUpdates(iter([P.ApplyUpdateRequest(notice=n) for n in notices]), timeout=10)
    error = info.value
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS, error.details()
    _, metadata, _ = error_details(error)
    assert metadata["notice_index"] == "1"
    assert metadata["last_applied_sequence"] == "1"
    assert "notices[1]" in (error.details() or "")
    assert _held(server, [*codes, code, code3]) == codes
    entry = _last_entry(server, "242039", "ApplyUpdates")
    assert (entry["outcome"], entry["count"]) == ("ALREADY_EXISTS", 1)


def test_a_cancelled_stream_applies_nothing_uncommitted_and_its_entry_tells_the_truth(server: Server) -> None:
    town = Municipality("242047")  # 松阪市
    codes, notices = _births(town, 3)
    stub = server.stub("municipal-cs/242047")
    sent = Event()

    def messages() -> Iterator[P.ApplyUpdateRequest]:
        for notice in notices:
            yield P.ApplyUpdateRequest(notice=notice)
        sent.set()
        time.sleep(30)  # never half-closes: the client cancels first

    future = stub.ApplyUpdates.future(messages(), timeout=20)
    assert sent.wait(10)
    time.sleep(0.5)  # the server has read the three notices (not a measurement)
    future.cancel()
    entry = _last_entry(server, "242047", "ApplyUpdates")
    applied = _held(server, codes)
    assert entry["outcome"] == "CANCELLED"
    assert entry["count"] == len(applied) == 0  # the stream's partial batch was not committed
    assert updates_counted(server, "242047") == 0
    # sent again, the CS's notices apply as new
    response = stub.ApplyUpdates(iter([P.ApplyUpdateRequest(notice=n) for n in notices]), timeout=10)
    assert response.last_applied_sequence == 3 and response.replayed_count == 0
    assert updates_counted(server, "242047") == 3


def test_an_idle_stream_cancelled_by_its_client_is_audited_as_cancelled(server: Server) -> None:
    stub = server.stub("municipal-cs/242055")  # 桑名市

    def nothing() -> Iterator[P.ApplyUpdateRequest]:
        time.sleep(30)
        yield from ()

    before = len(_entries(server))
    future = stub.ApplyUpdates.future(nothing(), timeout=20)
    time.sleep(0.3)
    future.cancel()
    for _ in range(100):
        mine = [e for e in _entries(server)[before:] if e["caller"].endswith("242055")]
        if any(e["outcome"] != "INTENT" for e in mine):
            break
        time.sleep(0.05)
    # the durable intent of a writing call, then the call's own entry
    assert [(e["outcome"], e["count"]) for e in mine] == [("INTENT", 0), ("CANCELLED", 0)]


def test_a_batch_provide_ended_by_a_bad_message_keeps_what_was_answered(
    server: Server, seeded_records: list[Any]
) -> None:
    first = [
        P.BatchProvideRequest(
            purpose="bt6-police-driving-licence",
            declared_count=3,
            condition_id=f"c-{i}",
            resident_code=seeded_records[i].resident_code,
        ).SerializeToString()
        for i in range(2)
    ]
    channel = secure_channel(
        Pki(server.settings.pki_path), "agency/police", server.settings.prefecture_target
    )
    call: Any = channel.stream_stream("/juki.v1.Prefecture/BatchProvide")
    before = len(_entries(server))
    received = []
    with pytest.raises(grpc.RpcError) as info:
        for response in call(iter([*first, GARBAGE]), timeout=10):
            received.append(P.BatchProvideResult.FromString(response))
    channel.close()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in error_details(info.value)[0]] == ["requests[2]"]
    assert [r.condition_id for r in received] == ["c-0", "c-1"]
    entry = [e for e in _entries(server)[before:] if e["method"].endswith("BatchProvide")][-1]
    assert (entry["outcome"], entry["count"]) == ("INVALID_ARGUMENT", 2)
