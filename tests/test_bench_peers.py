"""The lookup benchmark's peers (issue 8 item 4): Redis and PostgreSQL from Debian's packages, loaded from a
prefectural LMDB store, behind the prefectural front end. A Lookup through a peer answers exactly what the
LMDB-backed server answers, to the same callers, refused the same way, audited the same way."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from juki.v1 import prefecture_pb2, prefecture_pb2_grpc

from bench import peers
from bench.peers import (
    INSTALL_HINT,
    KINDS,
    load_peer,
    open_prefecture_reader,
    peers_available,
    start_front_end,
    start_peer,
)
from clients.channel import secure_channel
from clients.launch import wait_ready
from server.audit.query import query
from server.identity.pki import Pki
from server.settings import Settings
from tests.conftest import Server, free_port, make_server

P = prefecture_pb2
POLICE, PURPOSE = "agency/police", "bt6-police-driving-licence"
RESIDENTS = 300


@dataclass
class Front:
    """A peer database, loaded, and its front end process."""

    kind: str
    settings: Settings  # the prefectural settings, on the front end's port
    state_dir: Path
    loaded: int
    progress: list[int]

    def stub(self, identity: str, channels: list[grpc.Channel]) -> Any:
        channel = secure_channel(Pki(self.settings.pki_path), identity, self.settings.prefecture_target)
        channels.append(channel)
        return prefecture_pb2_grpc.PrefectureStub(channel)  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def lmdb_server(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("lmdb"), pki_dir, seeded=RESIDENTS, with_national=False)
    srv.start()
    yield srv
    srv.stop_all()


@pytest.fixture(scope="module")
def codes(lmdb_server: Server) -> list[str]:
    """Every resident code of the seeded store."""
    store = lmdb_server.open_reader()
    try:
        with store.env.read() as txn, txn.cursor(db=store.env.dbs["records"]) as cur:
            return [bytes(k).decode() for k in cur.iternext(keys=True, values=False)]
    finally:
        store.env.close()


@pytest.fixture(scope="module", params=KINDS)
def front(
    request: pytest.FixtureRequest, lmdb_server: Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Front]:
    kind: str = request.param
    if not peers_available()[kind]:
        pytest.skip(f"{kind} is not installed here ({INSTALL_HINT})")
    work = tmp_path_factory.mktemp(kind)
    with start_peer(kind, work / "db", free_port()) as peer:
        s = lmdb_server.settings
        store = open_prefecture_reader(s.data_path, s.keys_path)  # while the LMDB server serves it
        progress: list[int] = []
        try:
            loaded = load_peer(kind, peer.url, store, progress.append)
        finally:
            store.env.close()
        port = free_port()
        log = work / "front.log"
        proc = start_front_end(lmdb_server.config, kind, peer.url, port, work / "front", log=log)
        settings = s.replace(prefecture_port=port)
        try:
            wait_ready(settings, "prefecture", "monitor/monitor-01")
        except TimeoutError:
            proc.kill()
            proc.wait()
            raise AssertionError(f"{kind} front end did not start:\n{log.read_text()[-3000:]}") from None
        try:
            yield Front(kind, settings, work / "front", loaded, progress)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
        assert code == 0, log.read_text()[-3000:]  # SIGTERM drains and exits 0


@pytest.fixture
def channels() -> Iterator[list[grpc.Channel]]:
    opened: list[grpc.Channel] = []
    yield opened
    for channel in opened:
        channel.close()


def test_peer_holds_every_record_of_the_store(front: Front, codes: list[str]) -> None:
    assert front.loaded == len(codes) == RESIDENTS
    assert sum(front.progress) == front.loaded


def test_lookup_through_peer_equals_lookup_from_lmdb(
    front: Front, lmdb_server: Server, codes: list[str], channels: list[grpc.Channel]
) -> None:
    peer = front.stub(POLICE, channels)
    lmdb = lmdb_server.stub(POLICE)
    sample = codes[:: len(codes) // 12]
    with_number = 0
    for code in sample:
        request = P.LookupRequest(resident_code=code, purpose=PURPOSE)
        expected = lmdb.Lookup(request, timeout=5)
        got = peer.Lookup(request, timeout=5)
        assert got == expected
        assert got.source == P.RECORD_SOURCE_LOCAL
        with_number += bool(got.record.my_number)  # unsealed by the front end, as by the server
    assert with_number > 0


def test_unknown_resident_code_is_not_found(
    front: Front, codes: list[str], channels: list[grpc.Channel]
) -> None:
    unknown = next(f"{n:011d}" for n in range(10**10, 10**11) if f"{n:011d}" not in codes)
    with pytest.raises(grpc.RpcError) as info:
        front.stub(POLICE, channels).Lookup(
            P.LookupRequest(resident_code=unknown, purpose=PURPOSE), timeout=5
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_refused_caller_gets_permission_denied_and_no_data(
    front: Front, codes: list[str], channels: list[grpc.Channel]
) -> None:
    request = P.LookupRequest(resident_code=codes[0], purpose=PURPOSE)
    with pytest.raises(grpc.RpcError) as info:
        front.stub("monitor/monitor-01", channels).Lookup(request, timeout=5)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert codes[0] not in (info.value.details() or "")
    entry = list(query(front.state_dir / "audit"))[-1]  # the front end's own trail
    assert entry["outcome"] == "PERMISSION_DENIED" and entry["caller"].endswith("monitor/monitor-01")
    assert entry["count"] == 0 and entry["items"] == []


def test_invalid_code_is_refused_as_by_the_server(
    front: Front, lmdb_server: Server, channels: list[grpc.Channel]
) -> None:
    request = P.LookupRequest(resident_code="12345", purpose=PURPOSE)
    for stub in (front.stub(POLICE, channels), lmdb_server.stub(POLICE)):
        with pytest.raises(grpc.RpcError) as info:
            stub.Lookup(request, timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_lookup_by_my_number_is_unimplemented_and_audited(
    front: Front, codes: list[str], lmdb_server: Server, channels: list[grpc.Channel]
) -> None:
    lmdb = lmdb_server.stub(POLICE)
    views = (lmdb.Lookup(P.LookupRequest(resident_code=c, purpose=PURPOSE), timeout=5).record for c in codes)
    number = next(view.my_number for view in views if view.my_number)
    request = P.LookupRequest(my_number=number, purpose=PURPOSE)
    with pytest.raises(grpc.RpcError) as info:
        front.stub(POLICE, channels).Lookup(request, timeout=5)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert list(query(front.state_dir / "audit"))[-1]["outcome"] == "UNIMPLEMENTED"


def test_missing_packages_are_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(peers, "POSTGRES_ROOT", tmp_path / "no-postgresql")
    monkeypatch.setattr(peers, "REDIS_SERVER", tmp_path / "no-redis-server")
    assert peers.peers_available() == {"redis": False, "postgres": False}
    for kind in KINDS:
        with pytest.raises(peers.PeerUnavailable, match="apt-get install postgresql redis-server"):
            start_peer(kind, tmp_path / kind, free_port())
