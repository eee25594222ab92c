"""SPEC §4.4, issue 14: for a call that writes, its audit record is durable before the write commits, and a
call whose entry cannot be written returns no data — exactly: the first call that does not fit, not only the
ones after it. Health and Ping still answer (NOT_SERVING) while the trail is down. On a real, really full
filesystem (tmpfs), and on a real transient I/O error of the store (the LD_PRELOAD shim)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from juki.v1 import prefecture_pb2, records_pb2

from clients.channel import error_details, secure_channel
from server.identity.pki import Pki
from tests.conftest import Server, make_server
from tests.notices import Municipality, fresh_resident
from tests.test_audit_calls import entries, small_disk
from tests.test_background_faults import faulty_server, shim

__all__ = ["faulty_server", "shim", "small_disk"]  # fixtures used here

P = prefecture_pb2
R = records_pb2
TOBA = "242110"
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def full_trail(tmp_path: Path, pki_dir: Path, small_disk: Path) -> Iterator[tuple[Server, Path]]:
    srv = make_server(
        tmp_path / "srv", pki_dir, seeded=100, with_national=False, audit_dir=small_disk / "trail"
    )
    srv.start()
    try:
        yield srv, small_disk / "filler"
    finally:
        srv.stop_all()


def _fill(filler: Path) -> None:
    with filler.open("wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())


def _health(srv: Server, service: str = "") -> int:
    channel = secure_channel(Pki(srv.settings.pki_path), "monitor/monitor-01", srv.settings.prefecture_target)
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
        return int(reply.status)
    finally:
        channel.close()


def _until(condition: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_no_notice_is_applied_without_its_entry_on_a_full_audit_disk(full_trail: tuple[Server, Path]) -> None:
    srv, filler = full_trail
    town = Municipality(TOBA)
    stub = srv.stub(f"municipal-cs/{TOBA}")
    _fill(filler)
    refused: Any = None
    for _ in range(200):  # the trail's last page may still take an entry or two
        code, number = fresh_resident()
        notice = town.notice(code, R.CHANGE_REASON_SHUSSEI, my_number=number)
        try:
            stub.ApplyUpdate(P.ApplyUpdateRequest(notice=notice), timeout=10)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            refused = notice
            break
    assert refused is not None, "the full disk never refused a write"
    # health and Ping answer while the trail is down, and say so
    _until(lambda: _health(srv) == NOT_SERVING, "health to say NOT_SERVING")
    srv.stub("monitor/monitor-01").Ping(P.PingRequest(), timeout=5)
    filler.unlink()
    _until(lambda: _health(srv) == SERVING, "health to come back")
    again = stub.ApplyUpdate(P.ApplyUpdateRequest(notice=refused), timeout=10)
    store = srv.open_reader()
    try:
        with store.reader() as tx:
            applied = tx.last_sequence(TOBA)
    finally:
        store.env.close()
    trail = entries(srv)
    intents = [
        e
        for e in trail
        if e["method"] == "/juki.v1.Prefecture/ApplyUpdate"
        and e["outcome"] == "INTENT"
        and e["caller"].endswith(f"/{TOBA}")
    ]
    if again.replayed:  # the refused call had written: then its intent entry was durable before it did
        assert len(intents) >= applied
    else:  # the refused call wrote nothing: the notice applies now, for the first time
        assert applied == refused.sequence
        assert len(intents) >= applied
    assert applied == refused.sequence


def test_the_first_lookup_whose_entry_does_not_fit_returns_nothing(full_trail: tuple[Server, Path]) -> None:
    """Every Lookup answered with a record has its OK entry: the first entry that fails is not treated as
    written (that mutation of the chain fails this test, not only the calls after it)."""
    srv, filler = full_trail
    code = next(r.record.resident_code for r in _seeded() if r.record.state == R.RECORD_STATE_ACTIVE)
    stub = srv.stub("agency/police")
    lookup = P.LookupRequest(purpose="bt6-police-driving-licence", resident_code=code)
    answered = 0
    _fill(filler)
    for _ in range(200):
        try:
            stub.Lookup(lookup, timeout=5)
            answered += 1
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert code not in (error.details() or "")
            break
    filler.unlink()
    _until(lambda: _health(srv) == SERVING, "health to come back")
    ok = [e for e in entries(srv) if e["method"] == "/juki.v1.Prefecture/Lookup" and e["outcome"] == "OK"]
    assert len(ok) == answered


def test_a_failing_store_is_unavailable_with_a_generic_message_and_health_says_so(
    faulty_server: tuple[Server, Path],
) -> None:
    srv, trigger = faulty_server
    town = Municipality(TOBA)
    stub = srv.stub(f"municipal-cs/{TOBA}")
    trigger.touch()  # data.mdb's fdatasync fails: no commit can be durable
    code, number = fresh_resident()
    notice = town.notice(code, R.CHANGE_REASON_SHUSSEI, my_number=number)
    with pytest.raises(grpc.RpcError) as info:
        stub.ApplyUpdate(P.ApplyUpdateRequest(notice=notice), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    text = (info.value.details() or "") + repr(error_details(info.value))
    for leak in ("lmdb", "Error", "class", "mdb_", "Input/output", code, number):
        assert leak not in text
    _until(lambda: _health(srv) == NOT_SERVING, "health to report the store's trouble")
    trigger.unlink()
    _until(lambda: _health(srv) == SERVING, "health to recover with the store")
    assert not stub.ApplyUpdate(P.ApplyUpdateRequest(notice=notice), timeout=10).replayed


def _seeded() -> list[Any]:
    from server.seed.population import generate

    return list(generate(100, 1))
