"""Start a server as its own process and wait until it serves (used by `juki run`, the bench and tests)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from juki.v1 import fuhyo_pb2_grpc, national_pb2_grpc, prefecture_pb2, prefecture_pb2_grpc

from clients.channel import secure_channel
from server.identity.pki import Pki
from server.settings import Settings
from server.workers import read_workers


def write_settings(settings: Settings, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(settings.to_toml())
    return path


def start_server_process(
    config: Path, server: str, *, log: Path | None = None, workers: int | None = None
) -> subprocess.Popen[bytes]:
    """`juki --config CONFIG serve SERVER` as a child process (stdout/stderr to `log`).

    The config file is complete, so JUKI_* variables of this process are not passed on to override it.
    `workers` (prefecture only) overrides `prefecture_workers`: with more than one, the child supervises
    that many server processes on the port; `wait_workers` gives their pids.
    """
    out = _open_log(log) if log else subprocess.DEVNULL
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUKI_")}
    extra: list[str] = []
    if workers is not None:
        if server != "prefecture":
            raise ValueError("only the prefectural server runs several workers")
        extra = ["--workers", str(workers)]
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "clients", "--config", str(config), "serve", server, *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**env, "PYTHONUNBUFFERED": "1"},
        )
    finally:
        if isinstance(out, int) and out != subprocess.DEVNULL:
            os.close(out)  # the child has its own copy


def _open_log(path: Path) -> int:
    """A log file to append to: 0600 in a 0700 directory whatever the umask (logs may name what a server
    was doing, never whom; still nobody else's to read)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)
    return fd


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


SERVER_NAMES = {"prefecture": "prefectural", "fuhyo": "附票 (fuhyo)", "national": "national"}


class StartFailed(Exception):
    """A server did not come up: which one, and why (from its log)."""

    def __init__(self, server: str, cause: str) -> None:
        said = f"the {SERVER_NAMES.get(server, server)} server did not start: "  # the server's own words
        super().__init__(cause if cause.startswith(said) else said + cause)
        self.server = server
        self.cause = cause


def log_cause(path: Path, offset: int = 0) -> str:
    """Why a server stopped, from what it wrote to its log after `offset`: its last error line (the CLI's
    "Error: …", or a JSON log line of level ERROR/CRITICAL), else the last line; "" when it wrote nothing."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            lines = [
                line.strip() for line in f.read().decode("utf-8", "replace").splitlines() if line.strip()
            ]
    except FileNotFoundError:
        return ""
    for line in reversed(lines):
        if line.startswith("Error: "):
            return line.removeprefix("Error: ")
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and entry.get("level") in ("ERROR", "CRITICAL"):
                    return str(entry.get("error") or entry.get("msg", ""))
    return lines[-1] if lines else ""


def _said_ready(path: Path, offset: int) -> bool:
    with path.open("rb") as f:
        f.seek(offset)
        return b"\nready\n" in b"\n" + f.read()


def wait_healthy(
    settings: Settings,
    server: str,
    proc: subprocess.Popen[bytes],
    *,
    log: Path,
    log_offset: int = 0,
    identity: str = "monitor/monitor-01",
    timeout: float = 60.0,
) -> None:
    """Block until `server`, started as `proc` (logging to `log` from `log_offset` on), has said "ready"
    in its log (so the port is its own, not another process's) and answers health SERVING over mTLS as
    `identity`; StartFailed naming the server and the cause when it exits first or is not serving within
    `timeout` seconds."""
    target = getattr(settings, _STUBS[server][1])
    channel = secure_channel(Pki(settings.pki_path), identity, target)
    health: Any = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                cause = log_cause(log, log_offset) or f"exited with status {proc.returncode}"
                raise StartFailed(server, f"{cause} (log: {log})")
            if _said_ready(log, log_offset):
                try:
                    answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
            if time.monotonic() > deadline:
                raise StartFailed(
                    server, f"no health answer from {target} within {timeout:.0f} s (log: {log})"
                )
            time.sleep(0.1)
    finally:
        channel.close()


def wait_workers(
    settings: Settings,
    proc: subprocess.Popen[bytes],
    workers: int,
    *,
    identity: str = "monitor/monitor-01",
    timeout: float = 60.0,
) -> list[int]:
    """Block until the prefectural server started as `proc` serves with all its `workers`; the pids of the
    processes serving the port (`[proc.pid]` for one; otherwise read from `<data_dir>/workers.json`, which
    the supervisor writes once every worker serves)."""
    if workers <= 1:
        wait_ready(settings, "prefecture", identity, timeout=timeout)
        return [proc.pid]
    deadline = time.monotonic() + timeout
    while True:
        current = read_workers(settings)
        if current is not None and current.parent == proc.pid:
            return current.workers
        if proc.poll() is not None:
            raise RuntimeError(f"the prefectural server exited with {proc.returncode} while starting")
        if time.monotonic() > deadline:
            raise TimeoutError("the prefectural workers did not all come up")
        time.sleep(0.1)


def worker_pids(parent_pid: int) -> list[int]:
    """The direct children of `parent_pid` (Linux /proc): the workers of a running supervisor."""
    children: list[int] = []
    for task in Path(f"/proc/{parent_pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            children.extend(int(pid) for pid in (task / "children").read_text().split())
    return sorted(children)
