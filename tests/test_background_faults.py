"""Issue 14: no background task dies quietly. A transient I/O error on the prefectural server's data.mdb
(a real fault: fdatasync fails with EIO under an LD_PRELOAD shim, see tests/faults/eio_shim.c) makes the
outbox relay fail; the failure is logged, counted, shown in health while it lasts, and the relay comes back
by itself when the disk does: every change is delivered once, and SIGTERM still exits 0."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from juki.v1 import prefecture_pb2, records_pb2

from clients.channel import secure_channel
from server.identity.pki import Pki
from tests.conftest import Server, make_server
from tests.notices import Municipality, fresh_resident
from tests.test_metrics_endpoint import scrape
from tests.test_observability import samples
from tests.test_propagation import outbox_depth, wait_for

R = records_pb2
INABE = "242144"
SHIM_SOURCE = Path(__file__).parent / "faults" / "eio_shim.c"
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the storage-fault shim (apt-get install gcc)")
    out = tmp_path_factory.mktemp("shim") / "eio_shim.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(out), str(SHIM_SOURCE), "-ldl"], check=True)
    return out


@pytest.fixture
def faulty_server(
    tmp_path: Path, pki_dir: Path, shim: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Server, Path]]:
    trigger = tmp_path / "disk-fails"
    monkeypatch.setenv("LD_PRELOAD", str(shim))
    monkeypatch.setenv("EIO_SHIM_TRIGGER", str(trigger))
    monkeypatch.setenv("EIO_SHIM_MATCH", "/var/data/prefecture/data.mdb")
    srv = make_server(tmp_path / "srv", pki_dir, seeded=100, elsewhere=20)
    srv.start()
    yield srv, trigger
    trigger.unlink(missing_ok=True)
    if srv.national_proc is not None and srv.national_proc.poll() is None:
        srv.stop_national()
    if srv.proc is not None and srv.proc.poll() is None:
        srv.stop()


def health(srv: Server) -> int:
    channel = secure_channel(Pki(srv.settings.pki_path), "monitor/monitor-01", srv.settings.prefecture_target)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status)
    finally:
        channel.close()


def task_health(srv: Server, task: str) -> int:
    channel = secure_channel(Pki(srv.settings.pki_path), "monitor/monitor-01", srv.settings.prefecture_target)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=f"jukinet.task.{task}")
        return int(stub.Check(request, timeout=5).status)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.NOT_FOUND  # no entry: the task never failed
        return int(SERVING)
    finally:
        channel.close()


def failures_logged(srv: Server, task: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in srv.log.read_text().splitlines() if line.startswith("{")]
    return [e for e in lines if e.get("task") == task and "failed" in str(e.get("msg"))]


def test_the_relay_survives_a_transient_storage_error(faulty_server: tuple[Server, Path]) -> None:
    srv, trigger = faulty_server
    town = Municipality(INABE)
    srv.stop_national()  # changes queue up while J-LIS is away
    stub = srv.stub(f"municipal-cs/{INABE}")
    sent = []
    for _ in range(20):
        code, number = fresh_resident()
        notice = town.notice(code, R.CHANGE_REASON_SHUSSEI, my_number=number)
        stub.ApplyUpdate(prefecture_pb2.ApplyUpdateRequest(notice=notice), timeout=10)
        sent.append(notice)
    assert outbox_depth(srv) == 20

    trigger.touch()  # the disk starts failing; then J-LIS returns and the relay's next commit fails
    srv.start_national()
    wait_for(lambda: bool(failures_logged(srv, "outbox-relay")), "the relay's failure in the log", 30)
    wait_for(lambda: health(srv) == NOT_SERVING, "health to say NOT_SERVING", 10)
    assert task_health(srv, "outbox-relay") == NOT_SERVING
    _, text = scrape(srv, "monitor/monitor-01")
    assert samples(text, "juki_background_failures_total", task="outbox-relay") >= 1
    entry = failures_logged(srv, "outbox-relay")[0]
    assert entry["error"] == "Error" and entry["level"] == "ERROR"  # the class name, no library message

    trigger.unlink()  # the fault ends: nobody restarts anything
    wait_for(lambda: outbox_depth(srv) == 0, "the outbox to drain after the fault", 60)
    wait_for(lambda: health(srv) == SERVING, "health to come back", 30)
    assert task_health(srv, "outbox-relay") == SERVING
    national = srv.open_national_reader()
    try:
        with national.reader() as tx:
            assert tx.last_sequence(INABE) == sent[-1].sequence
            assert all(tx.get(n.resident_code) is not None for n in sent)
    finally:
        national.env.close()
    assert srv.stop() == 0, "SIGTERM after a supervised failure still drains and exits 0"
    assert "Traceback" not in srv.log.read_text()
