"""Start a server as its own process and wait until it serves (used by `juki run`, the bench and tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from juki.v1 import fuhyo_pb2_grpc, national_pb2_grpc, prefecture_pb2, prefecture_pb2_grpc

from clients.channel import secure_channel
from server.identity.pki import Pki
from server.settings import Settings


def write_settings(settings: Settings, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(settings.to_toml())
    return path


def start_server_process(config: Path, server: str, *, log: Path | None = None) -> subprocess.Popen[bytes]:
    """`juki --config CONFIG serve SERVER` as a child process (stdout/stderr to `log`).

    The config file is complete, so JUKI_* variables of this process are not passed on to override it.
    """
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUKI_")}
    return subprocess.Popen(
        [sys.executable, "-m", "clients", "--config", str(config), "serve", server],
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**env, "PYTHONUNBUFFERED": "1"},
    )


def start_prefecture_process(config: Path, *, log: Path | None = None) -> subprocess.Popen[bytes]:
    return start_server_process(config, "prefecture", log=log)


def _wait(stub: Any, target: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            stub.Ping(prefecture_pb2.PingRequest(), timeout=1.0)
            return
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"server at {target} did not come up") from None
            time.sleep(0.1)


def wait_serving(settings: Settings, identity: str, *, timeout: float = 30.0) -> None:
    """Block until a Ping of the prefectural server over mTLS succeeds as `identity`."""
    channel = secure_channel(Pki(settings.pki_path), identity, settings.prefecture_target)
    try:
        _wait(prefecture_pb2_grpc.PrefectureStub(channel), settings.prefecture_target, timeout)  # type: ignore[no-untyped-call]
    finally:
        channel.close()


def wait_fuhyo(settings: Settings, identity: str, *, timeout: float = 30.0) -> None:
    """Block until a Ping of the 附票 server over mTLS succeeds as `identity`."""
    channel = secure_channel(Pki(settings.pki_path), identity, settings.fuhyo_target)
    try:
        _wait(fuhyo_pb2_grpc.FuhyoStub(channel), settings.fuhyo_target, timeout)  # type: ignore[no-untyped-call]
    finally:
        channel.close()


def wait_national(settings: Settings, identity: str, *, timeout: float = 30.0) -> None:
    """Block until a Ping of the national server over mTLS succeeds as `identity`."""
    channel = secure_channel(Pki(settings.pki_path), identity, settings.national_target)
    try:
        _wait(national_pb2_grpc.NationalStub(channel), settings.national_target, timeout)  # type: ignore[no-untyped-call]
    finally:
        channel.close()
