"""Real servers on loopback, real certificates, real LMDB: the fixtures every test module shares."""

from __future__ import annotations

import random
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from juki.v1 import prefecture_pb2, prefecture_pb2_grpc

from clients.channel import secure_channel
from clients.launch import start_server_process, wait_ready, write_settings
from server.app import (
    open_fuhyo_store,
    open_national_fuhyo_store,
    open_national_store,
    open_store,
    register_dev_operators,
)
from server.identity.pki import DEV_IDENTITIES, Pki
from server.seed.elsewhere import generate_elsewhere
from server.seed.fuhyo import generate_fuhyo, generate_fuhyo_elsewhere, load_fuhyo
from server.seed.load import load
from server.seed.population import generate
from server.settings import Settings
from server.storage.fuhyo_file import DB_NAMES as FUHYO_DB_NAMES
from server.storage.fuhyo_file import FuhyoFile
from server.storage.lmdbenv import LmdbEnv
from server.storage.residents import DB_NAMES, ResidentStore
from server.storage.sealing import DataKeys, MyNumberSealer

SEEDED = 3000
ELSEWHERE = 200


_GIVEN: set[int] = set()  # never the same port twice in one session


def free_port() -> int:
    """A loopback port free now, drawn below the kernel's ephemeral range (32768–60999 here), so that an
    outgoing connection of another process cannot take it before the server that is handed it binds it
    (a restarted server binds the same ports again)."""
    low, _ = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    for _ in range(1000):
        port = random.randrange(10_000, max(10_001, low))
        if port in _GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    raise RuntimeError("no free loopback port below the ephemeral range")


@pytest.fixture(scope="session")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One dev PKI for the whole session (certificates take a few ms each)."""
    directory = tmp_path_factory.mktemp("pki")
    Pki(directory).ensure_dev("juki.mie", DEV_IDENTITIES)
    return directory


@dataclass
class Server:
    """A prefectural server process over its own data directory, with its own national peer process."""

    settings: Settings
    config: Path
    log: Path
    with_national: bool = True
    with_fuhyo: bool = False
    proc: subprocess.Popen[bytes] | None = None
    national_proc: subprocess.Popen[bytes] | None = None
    fuhyo_proc: subprocess.Popen[bytes] | None = None
    _channels: list[grpc.Channel] = field(default_factory=list)

    def start(self) -> None:
        if self.with_national and (self.national_proc is None or self.national_proc.poll() is not None):
            self.start_national()
        self.proc = start_server_process(self.config, "prefecture", log=self.log)
        try:
            wait_ready(self.settings, "prefecture", "monitor/monitor-01")
        except TimeoutError:
            self.stop()
            raise AssertionError("server did not start:\n" + self.log.read_text()[-3000:]) from None
        if self.with_fuhyo and (self.fuhyo_proc is None or self.fuhyo_proc.poll() is not None):
            self.start_fuhyo()

    def start_fuhyo(self) -> None:
        log = self.log.with_name("fuhyo.log")
        self.fuhyo_proc = start_server_process(self.config, "fuhyo", log=log)
        try:
            wait_ready(self.settings, "fuhyo", "monitor/monitor-01")
        except TimeoutError:
            raise AssertionError("fuhyo server did not start:\n" + log.read_text()[-3000:]) from None

    def stop_fuhyo(self, sig: int = signal.SIGTERM) -> int:
        assert self.fuhyo_proc is not None
        if self.fuhyo_proc.poll() is None:
            self.fuhyo_proc.send_signal(sig)
        return self.fuhyo_proc.wait(timeout=30)

    def start_national(self) -> None:
        self.national_proc = start_server_process(
            self.config, "national", log=self.log.with_name("national.log")
        )
        try:
            wait_ready(self.settings, "national", "monitor/monitor-01")
        except TimeoutError:
            self.stop_national()
            raise AssertionError("national server did not start") from None

    def stop_national(self, sig: int = signal.SIGTERM) -> int:
        assert self.national_proc is not None
        if self.national_proc.poll() is None:
            self.national_proc.send_signal(sig)
        return self.national_proc.wait(timeout=30)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=30)
        for channel in self._channels:
            channel.close()
        self._channels.clear()
        return code

    def stop_all(self) -> None:
        if self.fuhyo_proc is not None:
            self.stop_fuhyo()
        if self.proc is not None:
            self.stop()
        if self.national_proc is not None:
            self.stop_national()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def stub(self, identity: str) -> Any:
        channel = secure_channel(Pki(self.settings.pki_path), identity, self.settings.prefecture_target)
        self._channels.append(channel)
        return prefecture_pb2_grpc.PrefectureStub(channel)  # type: ignore[no-untyped-call]

    def open_reader(self) -> ResidentStore:
        """The store as the server sees it, opened read-only from the test process."""
        env = LmdbEnv(self.settings.data_path, DB_NAMES, readonly=True)
        return ResidentStore(env, MyNumberSealer(DataKeys.load(self.settings.keys_path)))

    def open_national_reader(self) -> ResidentStore:
        """The national server's store, read-only."""
        s = self.settings
        env = LmdbEnv(s.path(s.national_data_dir), DB_NAMES, readonly=True)
        return ResidentStore(env, MyNumberSealer(DataKeys.load(s.path(s.national_keys_file))))

    def open_fuhyo_reader(self) -> FuhyoFile:
        """The 附票 server's store, read-only."""
        s = self.settings
        env = LmdbEnv(s.path(s.fuhyo_data_dir), FUHYO_DB_NAMES, readonly=True)
        return FuhyoFile(env, MyNumberSealer(DataKeys.load(s.path(s.fuhyo_keys_file))))

    def open_national_fuhyo_reader(self) -> FuhyoFile:
        """The national server's 附票 file (附票全国サーバ), read-only."""
        s = self.settings
        env = LmdbEnv(s.path(s.national_fuhyo_data_dir), FUHYO_DB_NAMES, readonly=True)
        return FuhyoFile(env, MyNumberSealer(DataKeys.load(s.path(s.national_keys_file))))


def make_server(
    base: Path,
    pki: Path,
    *,
    seeded: int = SEEDED,
    elsewhere: int = ELSEWHERE,
    with_national: bool = True,
    with_fuhyo: bool = False,
    fuhyo_elsewhere: int = 0,
    **overrides: Any,
) -> Server:
    """A prefectural server (seeded with Mie's first `seeded` residents) and its national peer (seeded with
    `elsewhere` residents of other prefectures), each on its own free loopback port."""
    base.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "prefecture_port": free_port(),
        "national_port": free_port(),
        "prefecture_metrics_port": free_port(),
        "national_metrics_port": free_port(),
        "fuhyo_port": free_port(),
        "fuhyo_metrics_port": free_port(),
        "relay_backoff_max": 1.0,
        "backup_enabled": False,  # tests of backups turn it on
    }
    settings = Settings(home=base, pki_dir=pki, **{**options, **overrides})
    if seeded:
        store = open_store(settings)
        load(store, generate(seeded, 1))
        store.env.close()
    if with_national and elsewhere:
        national = open_national_store(settings)
        load(national, generate_elsewhere(elsewhere))
        national.env.close()
    if with_national and fuhyo_elsewhere:
        national_fuhyo = open_national_fuhyo_store(settings)
        load_fuhyo(national_fuhyo, generate_fuhyo_elsewhere(fuhyo_elsewhere))
        national_fuhyo.env.close()
    register_dev_operators(settings)
    if with_fuhyo:
        fuhyo = open_fuhyo_store(settings)
        load_fuhyo(fuhyo, generate_fuhyo(seeded, 1))
        fuhyo.env.close()
        register_dev_operators(settings, opener=open_fuhyo_store)
    config = write_settings(settings, base / "juki.toml")
    return Server(settings, config, base / "server.log", with_national=with_national, with_fuhyo=with_fuhyo)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path) -> Iterator[Server]:
    """A seeded server shared by the tests of one module."""
    srv = make_server(tmp_path_factory.mktemp("srv"), pki_dir)
    srv.start()
    yield srv
    srv.stop_all()


@pytest.fixture(scope="module")
def seeded_records(server: Server) -> list[Any]:
    """The seeded population, regenerated (deterministic) for expected values."""
    return [entry.record for entry in generate(SEEDED, 1)]


def ping(stub: Any) -> None:
    stub.Ping(prefecture_pb2.PingRequest(), timeout=5)
