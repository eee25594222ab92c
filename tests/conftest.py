"""Real servers on loopback, real certificates, real LMDB: the fixtures every test module shares."""

from __future__ import annotations

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
from clients.launch import start_prefecture_process, wait_serving, write_settings
from server.app import open_store
from server.identity.pki import DEV_IDENTITIES, Pki
from server.seed.load import load
from server.seed.population import generate
from server.settings import Settings
from server.storage.lmdbenv import LmdbEnv
from server.storage.residents import DB_NAMES, ResidentStore
from server.storage.sealing import DataKeys, MyNumberSealer

SEEDED = 3000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One dev PKI for the whole session (certificates take a few ms each)."""
    directory = tmp_path_factory.mktemp("pki")
    Pki(directory).ensure_dev("juki.mie", DEV_IDENTITIES)
    return directory


@dataclass
class Server:
    """A prefectural server process over its own data directory."""

    settings: Settings
    config: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    _channels: list[grpc.Channel] = field(default_factory=list)

    def start(self) -> None:
        self.proc = start_prefecture_process(self.config, log=self.log)
        try:
            wait_serving(self.settings, "monitor/monitor-01")
        except TimeoutError:
            self.stop()
            raise AssertionError("server did not start:\n" + self.log.read_text()[-3000:]) from None

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=30)
        for channel in self._channels:
            channel.close()
        self._channels.clear()
        return code

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


def make_server(base: Path, pki: Path, *, seeded: int = SEEDED, **overrides: Any) -> Server:
    base.mkdir(parents=True, exist_ok=True)
    settings = Settings(home=base, pki_dir=pki, prefecture_port=free_port(), **overrides)
    if seeded:
        store = open_store(settings)
        load(store, generate(seeded, 1))
        store.env.close()
    config = write_settings(settings, base / "juki.toml")
    return Server(settings, config, base / "server.log")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path) -> Iterator[Server]:
    """A seeded server shared by the tests of one module."""
    srv = make_server(tmp_path_factory.mktemp("srv"), pki_dir)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def seeded_records(server: Server) -> list[Any]:
    """The seeded population, regenerated (deterministic) for expected values."""
    return [entry.record for entry in generate(SEEDED, 1)]


def ping(stub: Any) -> None:
    stub.Ping(prefecture_pb2.PingRequest(), timeout=5)
