"""SPEC §4.4 against a running server: every call leaves one entry; the trail fails closed; nothing personal
is written; provisions feed the resident's disclosure; statistics; a shutdown checkpoint."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from juki.v1 import admin_pb2, admin_pb2_grpc, prefecture_pb2, records_pb2

from clients.channel import secure_channel
from server.audit.keys import AuditorKeys
from server.audit.proof_check import check, inclusion_json_of
from server.audit.query import query
from server.identity.pki import Pki
from tests.conftest import Server, make_server
from tests.test_authorization import REFUSALS

P = prefecture_pb2


def entries(server: Server) -> list[dict[str, Any]]:
    return list(query(server.settings.path(server.settings.audit_dir)))


def active(records: list[Any]) -> Any:
    return next(r for r in records if r.state == records_pb2.RECORD_STATE_ACTIVE)


@pytest.mark.parametrize(("identity", "method", "purpose"), REFUSALS)
def test_every_refused_call_leaves_exactly_one_entry_with_its_status(
    server: Server, seeded_records: list[Any], identity: str, method: str, purpose: str
) -> None:
    record = active(seeded_records)
    if method == "Lookup":
        request: Any = P.LookupRequest(purpose=purpose, resident_code=record.resident_code)
    else:
        request = P.SearchRequest(
            purpose=purpose, name_kana=record.four_info.name_kana, sex=record.four_info.sex
        )
    before = entries(server)
    with pytest.raises(grpc.RpcError) as info:
        getattr(server.stub(identity), method)(request, timeout=5)
    after = entries(server)
    assert len(after) == len(before) + 1
    entry = after[-1]
    assert entry["outcome"] == info.value.code().name == "PERMISSION_DENIED"
    assert entry["caller"].endswith(identity) and entry["method"].endswith(f"/{method}")
    assert entry["count"] == 0 and entry["items"] == []


def test_an_unauthenticated_call_is_recorded_too(server: Server, pki_dir: Path) -> None:
    Pki(pki_dir).issue("operator", "op-unregistered", overwrite=True)
    before = len(entries(server))
    with pytest.raises(grpc.RpcError):
        server.stub("operator/op-unregistered").Lookup(
            P.LookupRequest(purpose="identity-check", resident_code="12345678901"), timeout=5
        )
    after = entries(server)
    assert len(after) == before + 1 and after[-1]["outcome"] == "UNAUTHENTICATED"


def test_an_allowed_call_records_items_and_subject_not_values(
    server: Server, seeded_records: list[Any]
) -> None:
    record = active(seeded_records)
    server.stub("agency/police").Lookup(
        P.LookupRequest(
            purpose="bt6-police-driving-licence", resident_code=record.resident_code, request_id="r-1"
        )
    )
    entry = entries(server)[-1]
    assert entry["outcome"] == "OK" and entry["kind"] == "provision" and entry["request_id"] == "r-1"
    assert "my_number" in entry["items"] and entry["count"] == 1 and len(entry["subjects"]) == 1
    assert record.resident_code not in json.dumps(entry)


def test_the_trail_holds_no_resident_code_my_number_or_name(
    server: Server, seeded_records: list[Any]
) -> None:
    stub = server.stub("operator/op-0001")
    for record in seeded_records[:20]:
        with contextlib.suppress(grpc.RpcError):
            stub.Lookup(
                P.LookupRequest(purpose="identity-check", resident_code=record.resident_code), timeout=5
            )
    directory = server.settings.path(server.settings.audit_dir)
    raw = b"".join(p.read_bytes() for p in directory.iterdir() if p.is_file())
    for record in seeded_records[:20]:
        for value in (record.resident_code, record.my_number, record.four_info.name_kanji):
            assert value.encode() not in raw


def test_disclosure_lists_provisions_including_refused_ones(
    server: Server, seeded_records: list[Any], tmp_path: Path
) -> None:
    record = [r for r in seeded_records if r.state == records_pb2.RECORD_STATE_ACTIVE][7]
    code = record.resident_code
    server.stub("department/tax").Provide(P.ProvideRequest(purpose="bt5-tax-vehicle", resident_code=code))
    with pytest.raises(grpc.RpcError):
        server.stub("agency/education").Provide(
            P.ProvideRequest(purpose="bt5-tax-vehicle", resident_code=code)
        )
    with pytest.raises(grpc.RpcError):  # an operator's refused Lookup is no provision: listed all the same
        server.stub("operator/op-0002").Lookup(P.LookupRequest(purpose="bt5-tax-vehicle", resident_code=code))
    deadline = time.monotonic() + 15
    while True:  # until the next checkpoint covers the entries just written (every 5 s)
        disclosed = server.stub("operator/op-0001").Disclose(
            P.DiscloseRequest(purpose="disclosure", resident_code=code)
        )
        if len(disclosed.provisions) >= 3 and all(p.tree_size for p in disclosed.provisions):
            break
        assert time.monotonic() < deadline, "no checkpoint covered the disclosed entries"
        time.sleep(0.2)
    assert disclosed.record.resident_code == code and disclosed.record.my_number == record.my_number
    seen = [(p.recipient.rsplit("/", 2)[-2:], p.purpose, p.outcome) for p in disclosed.provisions]
    assert (["department", "tax"], "bt5-tax-vehicle", "OK") in seen
    assert (["agency", "education"], "bt5-tax-vehicle", "PERMISSION_DENIED") in seen
    assert (["operator", "op-0002"], "bt5-tax-vehicle", "PERMISSION_DENIED") in seen  # the refused Lookup
    # each listed entry's proof verifies with the standalone verifier and the public key alone
    public = AuditorKeys.load(server.settings.path(server.settings.auditor_keys_file)).public_key
    notes = {c.trail: c.checkpoint for c in disclosed.checkpoints}
    for p in disclosed.provisions:
        note = notes[p.trail]
        proof = inclusion_json_of(
            note.split("\n", 1)[0],
            p.seq - 1,
            p.tree_size,
            list(p.inclusion_proof),
            note,
            entry=p.entry.encode(),
        )
        assert check(proof, public).startswith(f"entry seq {p.seq} is in juki.mie/audit/prefecture")
        assert json.loads(p.entry)["caller"] == p.recipient and code not in p.entry

    out = tmp_path / "disclosure.html"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "clients",
            "--config",
            str(server.config),
            "operator",
            "disclose",
            code,
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    page = out.read_text(encoding="utf-8")
    assert '<meta charset="utf-8">' in page and "本人確認情報の開示" in page
    assert record.four_info.name_kanji in page and "自動車税" in page
    assert "拒否しました（権限なし）" in page and "juki audit check-proof" in page


def test_statistics_count_updates_and_provisions(server: Server) -> None:
    from tests.notices import Municipality, fresh_resident

    town = Municipality("245623")
    code, number = fresh_resident()
    notice = town.notice(code, records_pb2.CHANGE_REASON_SHUSSEI, my_number=number)
    server.stub("municipal-cs/245623").ApplyUpdate(P.ApplyUpdateRequest(notice=notice), timeout=10)
    month = entries(server)[-1]["time"][:7]
    channel = secure_channel(
        Pki(server.settings.pki_path), "auditor/auditor-01", server.settings.prefecture_target
    )
    stats = admin_pb2_grpc.AdminStub(channel).Statistics(admin_pb2.StatisticsRequest(month=month))  # type: ignore[no-untyped-call]
    channel.close()
    assert {c.key: c.count for c in stats.updates_by_municipality}.get("245623") == 1
    assert any(
        c.key.startswith("spiffe://juki.mie/department/tax bt5-tax-vehicle OK") for c in stats.provisions
    )


# --- fail closed ----------------------------------------------------------------------------------------


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real, small filesystem (tmpfs) for the audit trail, so that it can really fill up."""
    mount = tmp_path / "audit-fs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_audit_disk_fails_calls_closed_and_recovers(
    tmp_path: Path, pki_dir: Path, small_disk: Path
) -> None:
    srv = make_server(
        tmp_path / "srv", pki_dir, seeded=100, with_national=False, audit_dir=small_disk / "trail"
    )
    srv.start()
    try:
        code = next(r.resident_code for r in (e for e in _seeded(100)) if not r.deleted_flag)
        stub = srv.stub("agency/police")
        lookup = P.LookupRequest(purpose="bt6-police-driving-licence", resident_code=code)
        assert stub.Lookup(lookup, timeout=5).record.resident_code == code
        watch = _HealthWatch(srv)  # opened while the trail is writable, it hears every change of status
        filler = small_disk / "filler"
        with filler.open("wb") as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()
                os.fsync(f.fileno())
        # the segment's last page may still take an entry or two; the first one that does not fit fails
        failure: grpc.RpcError | None = None
        for _ in range(100):
            try:
                stub.Lookup(lookup, timeout=5)
            except grpc.RpcError as error:
                failure = error
                break
        assert failure is not None and failure.code() == grpc.StatusCode.UNAVAILABLE
        assert code not in (failure.details() or "")
        # while the disk is full a call fails closed, or (when repairing the trail's last write freed a
        # page) is answered with its entry written: never data without an entry (counted after recovery)
        before = len([e for e in entries(srv) if e["method"].endswith("/Lookup") and e["outcome"] == "OK"])
        answered = 0
        try:
            stub.Lookup(lookup, timeout=5)
            answered = 1
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert _metric(srv, "juki_audit_write_failures_total") >= 1
        filler.unlink()
        watch.wait_for(NOT_SERVING)  # the server said so while the trail could not be written
        assert stub.Lookup(lookup, timeout=5).record.resident_code == code  # recovered
        watch.wait_for(SERVING, after=NOT_SERVING)
        watch.close()
        ok = [e for e in entries(srv) if e["method"].endswith("/Lookup") and e["outcome"] == "OK"]
        assert len(ok) == before + answered + 1  # the answered one(s) and the recovered one, each audited
    finally:
        srv.stop_all()


SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


class _HealthWatch:
    """A grpc.health.v1 Watch stream on the prefectural service, its statuses collected by a thread."""

    def __init__(self, server: Server) -> None:
        self._channel = secure_channel(
            Pki(server.settings.pki_path), "monitor/monitor-01", server.settings.prefecture_target
        )
        request = health_pb2.HealthCheckRequest(service="juki.v1.Prefecture")
        self._stream = health_pb2_grpc.HealthStub(self._channel).Watch(request)
        self.statuses: list[int] = []
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        with contextlib.suppress(grpc.RpcError):
            for reply in self._stream:
                self.statuses.append(reply.status)

    def wait_for(self, status: int, *, after: int | None = None, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            seen = (
                self.statuses[self.statuses.index(after) + 1 :] if after in self.statuses else self.statuses
            )
            if status in seen and (after is None or after in self.statuses):
                return
            assert time.monotonic() < deadline, f"health never became {status}: {self.statuses}"
            time.sleep(0.05)

    def close(self) -> None:
        self._stream.cancel()
        self._channel.close()


def _seeded(n: int) -> list[Any]:
    from server.seed.population import generate

    return [e.record for e in generate(n, 1)]


def _metric(server: Server, name: str) -> float:
    from tests.test_metrics_endpoint import scrape

    _, text = scrape(server, "monitor/monitor-01")
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name)]
    return sum(values)


def test_sigterm_writes_a_shutdown_checkpoint(tmp_path: Path, pki_dir: Path) -> None:
    srv = make_server(tmp_path / "srv", pki_dir, seeded=10, with_national=False)
    srv.start()
    srv.stub("monitor/monitor-01").Ping(P.PingRequest(), timeout=5)
    assert srv.stop() == 0
    lines = (srv.settings.path(srv.settings.audit_dir) / "checkpoints.log").read_text().splitlines()
    last = json.loads(lines[-1])
    assert last["kind"] == "shutdown" and last["seq"] >= 1
