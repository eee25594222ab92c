"""SPEC §7: gRPC and domain metrics count what happened; the monitor reads metrics and health only; SIGTERM
drains in-flight calls, refuses new ones, checkpoints the audit trail and exits 0."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from juki.v1 import admin_pb2, prefecture_pb2, records_pb2

from clients.channel import secure_channel
from server.identity.pki import Pki
from tests.conftest import Server, make_server
from tests.notices import Municipality, fresh_resident
from tests.test_metrics_endpoint import scrape

P = prefecture_pb2


def samples(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[-1])
    return total


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path) -> Iterator[Server]:
    """A server of its own, so that its counters move only with this module's calls."""
    srv = make_server(tmp_path_factory.mktemp("obs"), pki_dir, seeded=200)
    srv.start()
    yield srv
    srv.stop_all()


def test_scripted_calls_show_up_per_method_and_code(quiet: Server) -> None:
    from server.seed.population import generate

    code = next(e.record.resident_code for e in generate(200, 1) if not e.record.deleted_flag)
    before = scrape(quiet, "monitor/monitor-01")[1]
    police = quiet.stub("agency/police")
    for _ in range(3):
        police.Lookup(P.LookupRequest(purpose="bt6-police-driving-licence", resident_code=code), timeout=5)
    for _ in range(2):
        with pytest.raises(grpc.RpcError):
            quiet.stub("monitor/monitor-01").Lookup(
                P.LookupRequest(purpose="identity-check", resident_code=code)
            )
    with pytest.raises(grpc.RpcError):
        quiet.stub("operator/op-0001").Search(P.SearchRequest(purpose="identity-check", name_kana="ア"))
    town = Municipality("244414")
    resident, number = fresh_resident()
    notice = town.notice(resident, records_pb2.CHANGE_REASON_SHUSSEI, my_number=number)
    quiet.stub("municipal-cs/244414").ApplyUpdate(P.ApplyUpdateRequest(notice=notice), timeout=5)
    with pytest.raises(grpc.RpcError):  # the same sequence with other content
        notice.four_info.address = "三重県多気町どこか1番地"
        quiet.stub("municipal-cs/244414").ApplyUpdate(P.ApplyUpdateRequest(notice=notice), timeout=5)
    after = scrape(quiet, "monitor/monitor-01")[1]

    def delta(name: str, **labels: str) -> float:
        return samples(after, name, **labels) - samples(before, name, **labels)

    handled = "grpc_server_handled_total"
    assert delta(handled, grpc_method="Lookup", grpc_code="OK", grpc_type="unary") == 3
    assert delta(handled, grpc_method="Lookup", grpc_code="PERMISSION_DENIED") == 2
    assert delta(handled, grpc_method="Search", grpc_code="INVALID_ARGUMENT") == 1
    assert delta(handled, grpc_method="ApplyUpdate", grpc_code="OK") == 1
    assert delta(handled, grpc_method="ApplyUpdate", grpc_code="FAILED_PRECONDITION") == 1
    assert delta("grpc_server_started_total", grpc_method="Lookup", grpc_service="juki.v1.Prefecture") == 5
    assert delta("grpc_server_handling_seconds_count", grpc_method="Lookup") == 5
    assert (
        delta("juki_provisions_total", role="agency", purpose="bt6-police-driving-licence", outcome="OK") == 3
    )
    assert delta("juki_authorization_refusals_total", role="monitor", grpc_code="PERMISSION_DENIED") == 2
    assert delta("juki_updates_applied_total", municipality="244414") == 1
    assert delta("juki_updates_rejected_total", reason="CONFLICTING_REPLAY") == 1
    assert delta("juki_audit_entries_total") >= 8
    assert samples(after, "juki_records", state="active") > 0
    assert samples(after, "juki_lmdb_map_used_bytes") > 0
    assert samples(after, "juki_certificate_expiry_timestamp_seconds", cert="ca") > time.time()


def test_labels_never_take_what_a_caller_typed(quiet: Server) -> None:
    """A refused provision with an invented purpose, or a call to an invented method, is counted under
    "other" / the unknown method: label values stay bounded whatever callers send."""
    before = scrape(quiet, "monitor/monitor-01")[1]
    police = quiet.stub("agency/police")
    for n in range(3):
        with pytest.raises(grpc.RpcError) as info:
            police.Provide(P.ProvideRequest(purpose=f"made-up-{n}", resident_code="12345678901"), timeout=5)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with secure_channel(
        Pki(quiet.settings.pki_path), "agency/police", quiet.settings.prefecture_target
    ) as ch:
        invented: Any = ch.unary_unary("/juki.v1.Prefecture/MadeUpMethod")
        with pytest.raises(grpc.RpcError):
            invented(b"", timeout=5)
    after = scrape(quiet, "monitor/monitor-01")[1]
    assert "made-up" not in after and "MadeUpMethod" not in after
    refused = samples(
        after, "juki_provisions_total", role="agency", purpose="other", outcome="PERMISSION_DENIED"
    )
    assert (
        refused
        - samples(
            before, "juki_provisions_total", role="agency", purpose="other", outcome="PERMISSION_DENIED"
        )
        == 3
    )
    unknown = {"role": "agency", "method": "/unknown/unknown", "grpc_code": "PERMISSION_DENIED"}
    assert (
        samples(after, "juki_authorization_refusals_total", **unknown)
        - samples(before, "juki_authorization_refusals_total", **unknown)
        == 1
    )


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not installed"
)
def test_promtool_accepts_a_scrape(quiet: Server) -> None:
    _, text = scrape(quiet, "monitor/monitor-01")
    done = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    # promtool lints naming too; only errors (not lint warnings about e.g. _total on gauges) fail it
    assert done.returncode == 0 or "error" not in (done.stdout + done.stderr).lower(), (
        done.stdout + done.stderr
    )


def _unary_methods() -> list[tuple[str, str, Any]]:
    calls = []
    for service, module in (("Prefecture", prefecture_pb2), ("Admin", admin_pb2)):
        descriptor = module.DESCRIPTOR.services_by_name[service]
        for method in descriptor.methods:
            if method.name == "Ping":
                continue
            request_class = getattr(module, method.input_type.name, None) or getattr(
                prefecture_pb2, method.input_type.name
            )
            streaming = method.client_streaming or method.server_streaming
            calls.append((service, method.name, (request_class, method.client_streaming, streaming)))
    return calls


@pytest.mark.parametrize(("service", "method", "shape"), _unary_methods())
def test_the_monitor_gets_permission_denied_on_every_data_method(
    server: Server, service: str, method: str, shape: Any
) -> None:
    request_class, client_streaming, _ = shape
    channel = secure_channel(
        Pki(server.settings.pki_path), "monitor/monitor-01", server.settings.prefecture_target
    )
    path = f"/juki.v1.{service}/{method}"
    serialize = request_class.SerializeToString
    try:
        with pytest.raises(grpc.RpcError) as info:
            if client_streaming:
                if method in ("BatchProvide", "Reconcile"):
                    bidi: Any = channel.stream_stream(path, request_serializer=serialize)
                    list(bidi(iter([request_class()]), timeout=5))
                else:
                    channel.stream_unary(path, request_serializer=serialize)(
                        iter([request_class()]), timeout=5
                    )
            else:
                channel.unary_unary(path, request_serializer=serialize)(request_class(), timeout=5)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        channel.close()


def test_the_monitor_may_check_health(server: Server) -> None:
    channel = secure_channel(
        Pki(server.settings.pki_path), "monitor/monitor-01", server.settings.prefecture_target
    )
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", "juki.v1.Prefecture", "juki.v1.Admin"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        channel.close()


def test_sigterm_drains_in_flight_calls_refuses_new_ones_and_exits_0(tmp_path: Path, pki_dir: Path) -> None:
    srv = make_server(tmp_path / "srv", pki_dir, seeded=10, with_national=False, grace_seconds=10.0)
    srv.start()
    town = Municipality("245437")
    notices = []
    for _ in range(30):
        code, number = fresh_resident()
        notices.append(town.notice(code, records_pb2.CHANGE_REASON_SHUSSEI, my_number=number))
    outcome: dict[str, Any] = {}

    def slow_stream() -> Iterator[Any]:
        for i, notice in enumerate(notices):
            if i == 5:
                outcome["midway"] = True
            time.sleep(0.1)
            yield P.ApplyUpdateRequest(notice=notice)

    def push() -> None:
        try:
            outcome["response"] = srv.stub("municipal-cs/245437").ApplyUpdates(slow_stream(), timeout=30)
        except grpc.RpcError as error:
            outcome["error"] = error

    worker = threading.Thread(target=push)
    worker.start()
    while "midway" not in outcome:
        time.sleep(0.02)
    assert srv.proc is not None
    srv.proc.terminate()  # SIGTERM while the stream is in flight
    time.sleep(1.0)
    with pytest.raises(grpc.RpcError) as refused:
        srv.stub("monitor/monitor-01").Ping(P.PingRequest(), timeout=3)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    worker.join(timeout=30)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["response"].last_applied_sequence == 30  # the in-flight call completed
    assert srv.proc.wait(timeout=30) == 0
    checkpoints = (srv.settings.path(srv.settings.audit_dir) / "checkpoints.log").read_text().splitlines()
    assert json.loads(checkpoints[-1])["kind"] == "shutdown"


def test_reflection_lists_the_services_over_mtls(server: Server) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    channel = secure_channel(
        Pki(server.settings.pki_path), "monitor/monitor-01", server.settings.prefecture_target
    )
    try:
        stub: Any = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (reply,) = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
        names = {s.name for s in reply.list_services_response.service}
        assert {"juki.v1.Prefecture", "juki.v1.Admin", "grpc.health.v1.Health"} <= names
    finally:
        channel.close()
