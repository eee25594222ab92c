"""SPEC §8, §10: several prefectural server processes share one port (SO_REUSEPORT) and still behave as one
server: every call answered and audited, a write through one worker seen through all, one metrics view,
a clean stop; with one worker the port stays exclusive."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from juki.v1 import prefecture_pb2, prefecture_pb2_grpc, records_pb2

from clients.channel import channel_credentials
from clients.launch import start_server_process, wait_workers
from server.audit import AuditorKeys, query, verify
from server.audit.entries import trail_directories
from server.identity.pki import Pki
from server.seed.population import generate
from server.settings import Settings
from server.storage.lmdbenv import LmdbEnv
from server.workers import read_workers
from tests.conftest import Server, make_server
from tests.notices import Municipality, fresh_resident
from tests.test_metrics_endpoint import scrape
from tests.test_observability import samples

P = prefecture_pb2
R = records_pb2
TSU = "242012"
POLICE = "agency/police"
POLICE_URI = "spiffe://juki.mie/agency/police"
PURPOSE = "bt6-police-driving-licence"
LOOKUP = "/juki.v1.Prefecture/Lookup"
APPLY = "/juki.v1.Prefecture/ApplyUpdate"


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path) -> Iterator[tuple[Server, list[int]]]:
    """A prefectural server in two worker processes (and its national peer)."""
    srv = make_server(
        tmp_path_factory.mktemp("workers"), pki_dir, seeded=300, prefecture_workers=2, relay_idle_poll=0.2
    )
    srv.start()
    assert srv.proc is not None
    pids = wait_workers(srv.settings, srv.proc, 2)
    yield srv, pids
    srv.stop_all()


def fresh_stub(settings: Settings, identity: str) -> tuple[grpc.Channel, Any]:
    """A stub on a connection of its own (no subchannel shared with other channels): the kernel picks the
    worker that accepts it."""
    channel = grpc.secure_channel(
        settings.prefecture_target,
        channel_credentials(Pki(settings.pki_path), identity),
        options=[("grpc.use_local_subchannel_pool", 1)],
    )
    return channel, prefecture_pb2_grpc.PrefectureStub(channel)  # type: ignore[no-untyped-call]


def lookup_fresh(settings: Settings, code: str) -> Any:
    channel, stub = fresh_stub(settings, POLICE)
    try:
        return stub.Lookup(P.LookupRequest(purpose=PURPOSE, resident_code=code), timeout=10).record
    finally:
        channel.close()


def active_codes(count: int) -> list[str]:
    """Resident codes of the first `count` active persons of the seeded population."""
    active = (e.record.resident_code for e in generate(300, 1) if not e.record.deleted_flag)
    return list(itertools.islice(active, count))


def audit_dir(srv: Server) -> Path:
    return srv.settings.path(srv.settings.audit_dir)


def per_trail(entries: Iterator[dict[str, Any]]) -> Counter[str]:
    return Counter(entry.get("trail", "w0") for entry in entries)


def test_lookups_over_fresh_connections_all_succeed_and_reach_both_workers(
    pair: tuple[Server, list[int]],
) -> None:
    srv, _ = pair
    codes = active_codes(32)
    for code in codes:
        assert lookup_fresh(srv.settings, code).resident_code == code
    trails = per_trail(query(audit_dir(srv), method=LOOKUP, caller=POLICE_URI, outcome="OK"))
    assert sum(trails.values()) == len(codes)
    assert set(trails) == {"w0", "w1"}, f"one worker took every connection: {trails}"


def test_an_update_through_one_worker_is_seen_through_every_worker(pair: tuple[Server, list[int]]) -> None:
    srv, _ = pair
    town = Municipality(TSU)
    created = []
    for _ in range(12):  # each on its own connection: both workers write to the one environment
        code, number = fresh_resident()
        channel, stub = fresh_stub(srv.settings, f"municipal-cs/{TSU}")
        with channel:
            notice = town.notice(code, R.CHANGE_REASON_SHUSSEI, my_number=number, name_kanji="津　和歌子")
            stub.ApplyUpdate(P.ApplyUpdateRequest(notice=notice), timeout=10)
        created.append(code)
    assert set(per_trail(query(audit_dir(srv), method=APPLY, outcome="OK"))) == {"w0", "w1"}
    keys = AuditorKeys.load(srv.settings.path(srv.settings.auditor_keys_file))
    for code in created:
        for _ in range(4):
            assert lookup_fresh(srv.settings, code).name_kanji == "津　和歌子"
    seen = per_trail(query(audit_dir(srv), method=LOOKUP, subject=keys.subject_hash(created[0])))
    assert sum(seen.values()) == 4
    everything = per_trail(
        e for code in created for e in query(audit_dir(srv), subject=keys.subject_hash(code), method=LOOKUP)
    )
    assert set(everything) == {"w0", "w1"}
    # the outbox relay runs in worker 0 only and still delivers what worker 1 applied
    deadline = time.monotonic() + 30
    while outbox_depth(srv):
        assert time.monotonic() < deadline, "the outbox did not drain"
        time.sleep(0.1)
    national = srv.open_national_reader()
    try:
        with national.reader() as tx:
            assert all(tx.get(code) is not None for code in created)
    finally:
        national.env.close()


def outbox_depth(srv: Server) -> int:
    store = srv.open_reader()
    try:
        with store.reader() as tx:
            return tx.outbox_depth()
    finally:
        store.env.close()


def test_metrics_of_worker_0_count_the_calls_of_both_workers(pair: tuple[Server, list[int]]) -> None:
    srv, _ = pair
    for code in active_codes(24):
        lookup_fresh(srv.settings, code)
    trails = per_trail(query(audit_dir(srv), method=LOOKUP, outcome="OK"))
    assert set(trails) == {"w0", "w1"}
    audited = sum(trails.values())
    labels = {"grpc_service": "juki.v1.Prefecture", "grpc_method": "Lookup", "grpc_code": "OK"}
    deadline = time.monotonic() + 5
    while True:  # a call's metrics are recorded as it ends, just after its audit entry
        status, text = scrape(srv, "monitor/monitor-01")
        assert status == 200
        if samples(text, "grpc_server_handled_total", **labels) == audited or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert audited >= 20
    assert samples(text, "grpc_server_handled_total", **labels) == audited
    lookup = {"grpc_service": "juki.v1.Prefecture", "grpc_method": "Lookup"}
    assert samples(text, "grpc_server_handling_seconds_count", **lookup) >= audited
    assert 'pid="' not in text  # one view, not one series per process
    assert samples(text, "juki_outbox_depth") == 0
    assert samples(text, "juki_records", state="active") > 0


def test_sighup_to_the_parent_reloads_every_worker(pair: tuple[Server, list[int]]) -> None:
    srv, pids = pair
    assert srv.proc is not None

    def reloads() -> int:
        return srv.log.read_text().count("revocation list and policy reloaded")

    before = reloads()
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while reloads() < before + len(pids):
        assert time.monotonic() < deadline, "not every worker reloaded"
        time.sleep(0.05)
    assert srv.proc.poll() is None
    code = active_codes(1)[0]
    assert lookup_fresh(srv.settings, code).resident_code == code


def test_sigterm_to_the_parent_stops_every_worker_and_leaves_verifiable_trails(
    pair: tuple[Server, list[int]],
) -> None:
    srv, pids = pair
    assert read_workers(srv.settings) is not None
    assert srv.stop() == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert read_workers(srv.settings) is None
    keys = AuditorKeys.load(srv.settings.path(srv.settings.auditor_keys_file))
    trails = trail_directories(audit_dir(srv))
    assert [d.name for d in trails[1:]] == ["w1"]
    for directory in trails:
        report = verify(directory, keys.public_key)
        assert report.ok and report.entries > 0, report.problems
        assert report.last_checkpoint is not None and report.last_checkpoint["kind"] == "shutdown"
    done = subprocess.run(
        [sys.executable, "-m", "clients", "--config", str(srv.config), "audit", "verify"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: w1: " in done.stdout


def test_a_worker_that_dies_stops_the_others_and_the_parent_fails(tmp_path: Path, pki_dir: Path) -> None:
    srv = make_server(
        tmp_path / "srv", pki_dir, seeded=50, with_national=False, relay_enabled=False, prefecture_workers=2
    )
    srv.proc = start_server_process(srv.config, "prefecture", log=srv.log)
    pids = wait_workers(srv.settings, srv.proc, 2)
    os.kill(pids[1], signal.SIGKILL)
    assert srv.proc.wait(timeout=30) != 0
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)
    assert "exited unexpectedly" in srv.log.read_text()


def test_workers_stop_when_their_parent_is_killed(tmp_path: Path, pki_dir: Path) -> None:
    srv = make_server(
        tmp_path / "srv", pki_dir, seeded=50, with_national=False, relay_enabled=False, prefecture_workers=2
    )
    srv.proc = start_server_process(srv.config, "prefecture", log=srv.log)
    pids = wait_workers(srv.settings, srv.proc, 2)
    listing = read_workers(srv.settings)
    assert listing is not None and listing.workers == pids
    srv.proc.kill()
    srv.proc.wait(timeout=10)
    deadline = time.monotonic() + 20
    while any(alive(pid) for pid in pids):  # orphans now: reaped by init once they exit
        assert time.monotonic() < deadline, "a worker outlived its supervisor"
        time.sleep(0.1)
    assert "the supervisor is gone" in srv.log.read_text()
    shutil.rmtree(listing.run_dir)  # nobody else will: its supervisor is dead


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie not yet reaped counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_with_one_worker_a_second_server_cannot_take_the_port(tmp_path: Path, pki_dir: Path) -> None:
    first = make_server(tmp_path / "a", pki_dir, seeded=0, with_national=False, relay_enabled=False)
    first.start()
    try:
        second = make_server(
            tmp_path / "b",
            pki_dir,
            seeded=0,
            with_national=False,
            relay_enabled=False,
            prefecture_port=first.settings.prefecture_port,
        )
        proc = start_server_process(second.config, "prefecture", log=second.log)
        assert proc.wait(timeout=30) != 0
        port = first.settings.prefecture_port  # one line naming it (grpc said "Failed to bind to address …")
        assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in second.log.read_text()
    finally:
        first.stop_all()


_GROW = """
import sys
from pathlib import Path
from server.storage.lmdbenv import LmdbEnv
env = LmdbEnv(Path(sys.argv[1]), ["records"], map_size=1 << 20)
def put(txn):
    for i in range(4000):
        txn.put(b"%08d" % i, bytes(1000), db=env.dbs["records"])
env.write_sync(put)
print(env.map_use()[1])
env.close()
"""


def test_a_map_grown_by_another_process_is_adopted_by_readers_and_writers(tmp_path: Path) -> None:
    env = LmdbEnv(tmp_path / "env", ["records"], map_size=1 << 20)
    try:
        with env.read() as txn:
            assert txn.get(b"00000001", db=env.dbs["records"]) is None
        grown = subprocess.run(
            [sys.executable, "-c", _GROW, str(tmp_path / "env")],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).parent.parent,
        )
        assert grown.returncode == 0, grown.stderr
        assert int(grown.stdout) > 1 << 20
        with env.read() as txn:  # MapResizedError inside: the new size is adopted
            assert txn.get(b"00003999", db=env.dbs["records"]) == bytes(1000)
        env.write_sync(lambda txn: txn.put(b"z", b"1", db=env.dbs["records"]))
        assert env.map_use()[1] >= int(grown.stdout)
    finally:
        env.close()
