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


_STUBS = {
    "prefecture": (prefecture_pb2_grpc.PrefectureStub, "prefecture_target"),
    "fuhyo": (fuhyo_pb2_grpc.FuhyoStub, "fuhyo_target"),
    "national": (national_pb2_grpc.NationalStub, "national_target"),
}


def wait_ready(settings: Settings, server: str, identity: str, *, timeout: float = 30.0) -> None:
    """Block until a Ping of `server` (prefecture, fuhyo, national) over mTLS succeeds as `identity`."""
    stub_class, target_name = _STUBS[server]
    target = getattr(settings, target_name)
    channel = secure_channel(Pki(settings.pki_path), identity, target)
    stub: Any = stub_class(channel)  # type: ignore[no-untyped-call]
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                stub.Ping(prefecture_pb2.PingRequest(), timeout=1.0)
                return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"server at {target} did not come up") from None
                time.sleep(0.1)
    finally:
        channel.close()
