"""SPEC §6.1: a server killed (SIGKILL) in the middle of an ApplyUpdates stream loses nothing applied, leaves
no half-applied notice, and the municipality resumes at the right sequence."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from juki.v1 import prefecture_pb2, records_pb2

from clients.channel import error_details
from server.storage.residents import ResidentTxn
from tests.conftest import Server, make_server
from tests.notices import Municipality, fresh_resident

R = records_pb2
ISE = "242039"
TOTAL = 3000


def build_notices() -> list[Any]:
    """Creations, with every fourth notice a 転居 of an earlier resident (so notices depend on each other)."""
    town = Municipality(ISE)
    notices: list[Any] = []
    residents: list[tuple[str, str]] = []
    for i in range(TOTAL):
        if i % 4 == 3:
            code, number = residents[i // 2]
            notices.append(
                town.notice(code, R.CHANGE_REASON_TENKYO, my_number=number, address=f"三重県伊勢市{i}番地")
            )
        else:
            code, number = fresh_resident()
            residents.append((code, number))
            notices.append(town.notice(code, R.CHANGE_REASON_SHUSSEI, my_number=number))
    return notices


def expected_after(notices: list[Any], applied: int) -> dict[str, Any]:
    """resident code → the last notice applied for it among the first `applied` (None: not created yet)."""
    state: dict[str, Any] = {n.resident_code: None for n in notices}
    for n in notices[:applied]:
        state[n.resident_code] = n
    return state


def assert_consistent(tx: ResidentTxn, notices: list[Any]) -> int:
    applied = tx.last_sequence(ISE)
    for code, last in expected_after(notices, applied).items():
        record = tx.get(code)
        if last is None:
            assert record is None, "a notice past the last applied sequence left a record"
            continue
        assert record is not None and record.sequence == last.sequence
        assert record.four_info.address == last.four_info.address
        assert tx.my_number(code) == last.my_number
        assert tx.code_by_my_number(last.my_number) == code
        changes = sum(1 for n in notices[:applied] if n.resident_code == code)
        assert len(tx.history(code)) == changes - 1
    for seq in range(1, applied + 1):
        assert tx.applied(ISE, seq) is not None
    assert tx.applied(ISE, applied + 1) is None
    assert tx.outbox_depth() == applied, "every applied notice is queued for the national server, once"
    for db in ("idx_name", "idx_birth", "idx_address"):
        assert tx.count(db) == tx.count("records"), f"{db} out of step with records"
    return int(applied)


@pytest.fixture()
def crash_server(tmp_path: Path, pki_dir: Path) -> Iterator[Server]:
    srv = make_server(tmp_path / "srv", pki_dir, seeded=0, with_national=False, apply_batch_size=50)
    srv.start()
    yield srv
    if srv.proc is not None and srv.proc.poll() is None:
        srv.stop()


def test_sigkill_mid_stream_loses_nothing_and_resumes_at_the_right_sequence(crash_server: Server) -> None:
    notices = build_notices()
    stub = crash_server.stub(f"municipal-cs/{ISE}")
    killed = threading.Event()

    def requests() -> Iterator[Any]:
        for i, notice in enumerate(notices):
            if i == TOTAL // 2:
                time.sleep(0.5)  # let a few batches commit, then kill while more arrive
                assert crash_server.proc is not None
                crash_server.proc.kill()
                killed.set()
            yield prefecture_pb2.ApplyUpdateRequest(notice=notice)

    with pytest.raises(grpc.RpcError) as info:
        stub.ApplyUpdates(requests(), timeout=60)
    assert killed.is_set()
    assert info.value.code() in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
    )
    crash_server.stop()

    crash_server.start()  # same data directory
    store = crash_server.open_reader()
    with store.reader() as tx:
        applied = assert_consistent(tx, notices)
    store.env.close()
    assert 0 < applied < TOTAL

    # The municipality learns where to resume: skipping ahead names the expected sequence …
    stub = crash_server.stub(f"municipal-cs/{ISE}")
    with pytest.raises(grpc.RpcError) as gap:
        stub.ApplyUpdate(prefecture_pb2.ApplyUpdateRequest(notice=notices[applied + 1]), timeout=10)
    assert error_details(gap.value)[1]["expected_sequence"] == str(applied + 1)

    # … and resending everything replays what was applied and applies the rest, once.
    response = stub.ApplyUpdates((prefecture_pb2.ApplyUpdateRequest(notice=n) for n in notices), timeout=120)
    assert response.replayed_count == applied
    assert response.last_applied_sequence == TOTAL
    store = crash_server.open_reader()
    with store.reader() as tx:
        assert assert_consistent(tx, notices) == TOTAL
    store.env.close()
