"""Issue 12 item 9: no caller can take the server for itself.

Per-identity rate limits (a token bucket per caller, sized by role in the settings): past it,
RESOURCE_EXHAUSTED with google.rpc.RetryInfo, no data, one audit entry; other callers unaffected. A cap on
concurrent streams per connection (grpc.max_concurrent_streams) and a maximum connection age
(grpc.max_connection_age_ms + grace), so that a long-lived client reconnects.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2
from juki.v1 import prefecture_pb2, prefecture_pb2_grpc

from clients.channel import secure_channel
from server.audit.query import query
from server.identity.pki import Pki, SpiffeId
from server.services.rate_limits import Rate, RateLimiter, parse_rates
from tests.conftest import Server, make_server

P = prefecture_pb2
POLICE = ("agency/police", "bt6-police-driving-licence")
EDUCATION = ("agency/education", "bt6-education-teacher-licence")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path) -> Iterator[Server]:
    srv = make_server(
        tmp_path_factory.mktemp("limits"),
        pki_dir,
        seeded=50,
        rate_limits="agency=2/5,municipal-cs=1/1",
        max_concurrent_streams=2,
    )
    srv.start()
    yield srv
    srv.stop_all()


def _retry_delay(error: grpc.RpcError) -> float:
    trailing: Any = error.trailing_metadata()
    for key, value in trailing or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.RetryInfo()
                if detail.Unpack(info):
                    return float(info.retry_delay.ToNanoseconds()) / 1e9
    raise AssertionError("no RetryInfo")


def test_a_caller_past_its_rate_gets_resource_exhausted_with_retry_info_and_no_data(
    server: Server, seeded_records: list[Any]
) -> None:
    record = next(r for r in seeded_records if not r.deleted_flag)
    request = P.LookupRequest(purpose=POLICE[1], resident_code=record.resident_code)
    police = server.stub(POLICE[0])
    answered = 0
    refusal: grpc.RpcError | None = None
    for _ in range(20):  # a burst of 5 at 2 per second: the burst passes, then the bucket is empty
        try:
            assert police.Lookup(request, timeout=5).record.resident_code == record.resident_code
            answered += 1
        except grpc.RpcError as error:
            refusal = error
            break
    assert refusal is not None and 5 <= answered < 20
    assert refusal.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    delay = _retry_delay(refusal)
    assert 0 < delay <= 0.5
    seen = (refusal.details() or "") + repr(refusal.trailing_metadata())
    for item in (record.resident_code, record.four_info.name_kanji, record.four_info.address):
        assert item not in seen
    entry = list(query(server.settings.path(server.settings.audit_dir)))[-1]
    assert (entry["caller"], entry["outcome"]) == (f"spiffe://juki.mie/{POLICE[0]}", "RESOURCE_EXHAUSTED")
    # another agency has its own bucket
    other = P.LookupRequest(purpose=EDUCATION[1], resident_code=record.resident_code)
    assert server.stub(EDUCATION[0]).Lookup(other, timeout=5).record.resident_code
    time.sleep(delay + 0.05)
    assert police.Lookup(request, timeout=5).record.resident_code == record.resident_code


def test_a_stream_takes_one_token_when_it_opens(server: Server) -> None:
    cs = server.stub("municipal-cs/242012")
    assert cs.ApplyUpdates(iter([]), timeout=5).last_applied_sequence == 0
    with pytest.raises(grpc.RpcError) as info:
        cs.ApplyUpdates(iter([]), timeout=5)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_rates_come_from_the_settings_by_role() -> None:
    rates = parse_rates("agency=1000/2000, operator=100/200")
    assert rates == {"agency": Rate(1000, 2000), "operator": Rate(100, 200)}
    for bad in ("agency", "agency=x/2", "agency=0/1", "=1/1", "agency=5/0"):
        with pytest.raises(ValueError):
            parse_rates(bad)
    clock = [0.0]
    limiter = RateLimiter({"agency": Rate(1, 2)}, clock=lambda: clock[0])
    police = SpiffeId("juki.mie", "agency", "police")
    assert [limiter.take(police) for _ in range(2)] == [None, None]
    assert limiter.take(police) == pytest.approx(1.0)
    clock[0] = 1.0
    assert limiter.take(police) is None
    assert limiter.take(SpiffeId("juki.mie", "prefectural-server", "24")) is None  # servers: no limit


def test_streams_per_connection_are_capped(server: Server) -> None:
    channel = secure_channel(
        Pki(server.settings.pki_path), "monitor/monitor-01", server.settings.prefecture_target
    )
    stub = prefecture_pb2_grpc.PrefectureStub(channel)  # type: ignore[no-untyped-call]
    health: Any = channel.unary_stream("/grpc.health.v1.Health/Watch")
    watch = health_pb2.HealthCheckRequest(service="").SerializeToString()
    streams = [health(watch, timeout=30) for _ in range(2)]  # two long-lived streams on one connection
    try:
        for stream in streams:
            next(stream)  # each is open (its first answer came)
        with pytest.raises(grpc.RpcError) as info:
            stub.Ping(P.PingRequest(), timeout=1)  # a third call waits for a free stream
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert server.stub("monitor/monitor-01").Ping(P.PingRequest(), timeout=5) is not None
    finally:
        for stream in streams:
            stream.cancel()
    assert stub.Ping(P.PingRequest(), timeout=5) is not None
    channel.close()


def test_a_long_lived_connection_is_closed_after_its_maximum_age(tmp_path: Path, pki_dir: Path) -> None:
    srv = make_server(
        tmp_path / "srv", pki_dir, seeded=10, with_national=False, max_connection_age=1.0,
        max_connection_age_grace=1.0,
    )  # fmt: skip
    srv.start()
    try:
        channel = secure_channel(
            Pki(srv.settings.pki_path), "monitor/monitor-01", srv.settings.prefecture_target
        )
        health: Any = channel.unary_stream("/grpc.health.v1.Health/Watch")
        stream = health(health_pb2.HealthCheckRequest(service="").SerializeToString(), timeout=30)
        next(stream)
        with pytest.raises(grpc.RpcError) as info:
            for _ in stream:  # no more answers: the stream is open until the connection is closed
                pass
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        # the client reconnects for its next call
        call: Any = channel.unary_unary("/juki.v1.Prefecture/Ping")
        assert call(P.PingRequest().SerializeToString(), timeout=5) is not None
        channel.close()
    finally:
        srv.stop_all()
