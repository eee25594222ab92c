"""`juki run` (what `make run` calls): set everything up, start the three servers, say "ready" only when
each of them serves."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from clients.launch import StartFailed, start_server_process, wait_healthy, write_settings
from clients.pki_cmds import ensure_dev_pki
from clients.serve_cmds import (
    ServeFailed,
    _first_code,
    _resident_count,
    _Sample,
    _seed,
    _serve_prefecture,
)
from server.app import (
    open_fuhyo_store,
    open_national_fuhyo_store,
    open_national_store,
    open_store,
    register_dev_operators,
)
from server.hardening import LOG_DIR, harden_process, log_path
from server.observability.logs import JsonFormatter
from server.seed.elsewhere import generate_elsewhere
from server.seed.fuhyo import generate_fuhyo, generate_fuhyo_elsewhere, load_fuhyo
from server.seed.population import generate
from server.settings import Settings

log = logging.getLogger(__name__)
PEERS = ("national", "fuhyo")  # started as child processes, in this order; the prefectural server in this one


class AlreadyRunning(click.ClickException):
    exit_code = 1


def _log_to_file(path: Path) -> None:
    """The logs of this process also in `path` (0600: the umask is 077 by now), as JSON lines."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)


def _ports(settings: Settings) -> str:
    return (
        f"prefecture {settings.prefecture_port}, 附票 {settings.fuhyo_port}, "
        f"national {settings.national_port}"
    )


@contextlib.contextmanager
def _run_lock(settings: Settings) -> Iterator[None]:
    """One `juki run` per home: an exclusive lock on <data_dir>/../juki-run.lock, which names the pid and
    ports of the holder (the lock goes with the process, however it ends)."""
    path = settings.path(settings.data_dir).parent / "juki-run.lock"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder: dict[str, object] = {}
            with contextlib.suppress(ValueError, OSError):
                holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
            pid, ports = holder.get("pid", "?"), holder.get("ports", "?")
            raise AlreadyRunning(
                f"jukinet is already running here (pid {pid}; ports {ports}): use it, or stop it first "
                f"(Ctrl-C in its terminal, or kill {pid})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "ports": _ports(settings)}).encode(), 0)
        yield
    finally:
        os.close(fd)


def _juki_command() -> str:
    """The `juki` to paste, with the --home and --config this one was started with."""
    root = click.get_current_context().find_root().params
    exe = Path(sys.executable).parent / "juki"  # the venv's (python -m clients has no juki of its own)
    if not exe.exists():
        exe = Path(shutil.which("juki") or "juki")
    with contextlib.suppress(ValueError):
        exe = exe.relative_to(Path.cwd())
    words = [str(exe)]
    if root.get("config"):
        words += ["--config", str(Path(root["config"]).resolve())]
    if root.get("home"):
        words += ["--home", str(Path(root["home"]).resolve())]
    return shlex.join(words)


def _prepare(settings: Settings, count: int, show_sample: bool) -> _Sample:
    """CA and certificates, stores seeded when empty, dev operators; what the banner offers to try."""
    issued = ensure_dev_pki(settings)
    if issued:
        click.echo(f"dev PKI: {len(issued)} certificate(s) issued in {settings.pki_path}")
    national = open_national_store(settings)
    if _resident_count(national) == 0:
        n = settings.national_seed_count
        _seed(national, generate_elsewhere(n), n, "national")
    national.env.close()
    national_fuhyo = open_national_fuhyo_store(settings)
    if _resident_count(national_fuhyo) == 0:
        seeded = load_fuhyo(national_fuhyo, generate_fuhyo_elsewhere(settings.national_fuhyo_seed_count))
        click.echo(f"seeded {seeded:,} national 附票 records (other prefectures)")
    national_fuhyo.env.close()
    added = register_dev_operators(settings)
    register_dev_operators(settings, opener=open_fuhyo_store)
    if added:
        click.echo(f"dev operators registered: {', '.join(added)}")
    store = open_store(settings)
    if _resident_count(store) == 0:
        _seed(store, generate(count, 1), count, "Mie")
    fuhyo = open_fuhyo_store(settings)
    if _resident_count(fuhyo) == 0:
        click.echo(f"seeded {load_fuhyo(fuhyo, generate_fuhyo(count, 1)):,} 附票 records")
    fuhyo.env.close()
    sample = _Sample(_first_code(store) if show_sample else None, _juki_command())
    store.env.close()
    return sample


def _start_peer(settings: Settings, config: Path, server: str) -> subprocess.Popen[bytes]:
    """Start `server` as a child process and wait until it serves (StartFailed otherwise)."""
    path = log_path(settings, server)
    offset = path.stat().st_size if path.exists() else 0
    proc = start_server_process(config, server, log=path)
    try:
        wait_healthy(settings, server, proc, log=path, log_offset=offset)
    except BaseException:
        _stop([proc])
        raise
    return proc


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


@click.command()
@click.option(
    "--count", default=100_000, show_default=True, help="Mie residents to seed when the store is empty"
)
@click.option("--show-sample", is_flag=True, help="print a resident's code to try in the start banner")
@click.pass_obj
def run(settings: Settings, count: int, show_sample: bool) -> None:
    """Set up everything on embedded defaults (dev PKI, keys, synthetic data) and start the servers.

    Prints "ready" once each server answers health. One that cannot start (a port in use…) stops the
    rest: exit 1, naming the server and the cause. One `juki run` per home (a second says so, exit 1).
    The 附票 and national servers log to var/log/fuhyo.log and var/log/national.log, the prefectural
    server to this terminal and var/log/prefecture.log (0600)."""
    with _run_lock(settings):
        harden_process(settings)  # it seeds (My Numbers in memory) before it serves
        _log_to_file(log_path(settings, "prefecture"))
        log.info("juki run: servers log to files", extra={"directory": str(settings.path(LOG_DIR))})
        sample = _prepare(settings, count, show_sample)
        config = write_settings(settings, settings.path(settings.data_dir).parent / "run-settings.toml")
        peers: list[subprocess.Popen[bytes]] = []
        try:
            for server in PEERS:
                peers.append(_start_peer(settings, config, server))
                target = getattr(settings, f"{server}_target")
                service = "juki.v1.National" if server == "national" else "juki.v1.Fuhyo"
                label = "national" if server == "national" else "附票"
                click.echo(f"{label} server ({service}, mTLS) listening on {target}")
            _serve_prefecture(settings, sample)
        except StartFailed as exc:
            raise ServeFailed(str(exc)) from None
        finally:
            _stop(peers)
