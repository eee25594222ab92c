"""`juki seed`, `juki serve …`, `juki outbox status` and `juki run` (what `make run` calls)."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from juki.v1 import national_pb2
from tqdm import tqdm

from clients.channel import aio_channel
from clients.launch import SERVER_NAMES
from server.app import (
    ADMIN_SERVICE,
    PREFECTURE_SERVICE,
    RunningServer,
    open_fuhyo_store,
    open_fuhyo_store_readonly,
    open_national_store,
    open_store,
    open_store_readonly,
    serve,
    start_fuhyo,
    start_national,
    start_prefecture,
)
from server.audit import AuditUnavailable
from server.hardening import LOG_DIR, harden_process
from server.identity.pki import Pki
from server.seed.elsewhere import generate_elsewhere
from server.seed.fuhyo import generate_fuhyo, load_fuhyo
from server.seed.load import load
from server.seed.population import SeedEntry, generate
from server.settings import Settings
from server.storage.fuhyo_file import FuhyoFile
from server.storage.record_file import RecordFile
from server.storage.residents import ResidentStore
from server.workers import announce_ready, exit_with_parent, supervise

SERVERS = ("prefecture", "national", "fuhyo")
log = logging.getLogger(__name__)


def _seed(store: ResidentStore, entries: Iterable[SeedEntry], count: int, label: str) -> None:
    with tqdm(total=count, unit="rec", unit_scale=True, desc=f"seeding {label}", file=sys.stderr) as bar:
        report = load(store, entries, progress=bar.update)
    click.echo(
        f"seeded {report.records:,} {label} residents in {report.seconds:.1f} s "
        f"({report.per_second:,.0f} records/s)"
    )


def _resident_count(store: RecordFile[Any]) -> int:
    with store.reader() as tx:
        return int(tx.count("records"))


def _open(settings: Settings, server: str) -> RecordFile[Any]:
    if server == "fuhyo":
        return open_fuhyo_store(settings)
    return open_national_store(settings) if server == "national" else open_store(settings)


@click.command()
@click.option("--server", type=click.Choice(SERVERS), default="prefecture", show_default=True)
@click.option("--count", type=int, help="residents to generate [prefecture: 100000, national: settings]")
@click.option("--seed", "seed_number", default=1, show_default=True, help="deterministic seed number (Mie)")
@click.option("--if-empty", is_flag=True, help="do nothing when the store already holds residents")
@click.pass_obj
def seed(settings: Settings, server: str, count: int | None, seed_number: int, if_empty: bool) -> None:
    """Load a synthetic population: Mie's (prefecture) or other prefectures' (national)."""
    harden_process(settings)  # My Numbers in memory, files a server will serve
    store = _open(settings, server)
    try:
        existing = _resident_count(store)
        if existing and if_empty:
            click.echo(f"{server} store already holds {existing:,} residents; not seeding")
            return
        if existing:
            raise click.ClickException(f"store already holds {existing:,} residents (seed an empty data dir)")
        if isinstance(store, FuhyoFile):
            n = count or 100_000
            written = load_fuhyo(store, generate_fuhyo(n, seed_number))
            click.echo(f"seeded {written:,} 附票 records (the same people as Mie's first {n:,})")
        elif not isinstance(store, ResidentStore):
            raise AssertionError("a resident store")
        elif server == "national":
            n = count or settings.national_seed_count
            _seed(store, generate_elsewhere(n), n, "other-prefecture")
        else:
            n = count or 100_000
            _seed(store, generate(n, seed_number), n, "Mie")
    finally:
        store.env.close()


@click.group("serve")
def serve_group() -> None:
    """Run a server in the foreground (SIGTERM/Ctrl-C drains and stops; SIGHUP reloads CRL and policy)."""


def _announce(settings: Settings, name: str, running: RunningServer, sample: _Sample | None) -> None:
    services = ", ".join(s.full_name for s in running.services)
    click.echo(f"{name} server ({services}, mTLS) listening on {settings.host}:{running.port}")
    if sample is not None:
        click.echo(
            f"  data {settings.data_path}   keys {settings.keys_path}   certificates {settings.pki_path}"
        )
        click.echo(f"  logs {settings.path(LOG_DIR)}/<server>.log")
        click.echo("try, in another terminal:")
        # A resident's code only when asked for (--show-sample): the banner may end up in a terminal log.
        code = sample.code or "<住民票コード>"
        click.echo(f"  {sample.juki} lookup --as agency/police --purpose bt6-police-driving-licence {code}")
        click.echo(f"  {sample.juki} ping --as monitor/monitor-01")
        if not sample.code:
            click.echo(f"  ({sample.juki} run --show-sample prints a resident's code to try)")
    click.echo("ready")
    sys.stdout.flush()


async def _announce_healthy(settings: Settings, running: RunningServer, sample: _Sample) -> None:
    """The banner and "ready" once the prefectural server answers health SERVING on its port, over mTLS
    as a client would (it runs in this process: asked from its own event loop, without blocking it)."""
    channel = aio_channel(Pki(settings.pki_path), "monitor/monitor-01", settings.prefecture_target)
    health: Any = health_pb2_grpc.HealthStub(channel)
    try:
        for _ in range(600):  # 60 s at most
            try:
                answer = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    _announce(settings, "prefecture", running, sample)
                    return
            except grpc.RpcError:
                pass
            await asyncio.sleep(0.1)
        click.echo(
            "the prefectural server does not answer health SERVING: see var/log/prefecture.log", err=True
        )
    finally:
        await channel.close()


@dataclass(frozen=True)
class _Sample:
    """What `juki run` shows to try: a resident's code only when asked for, and the `juki` command line
    that reaches these servers (with the --home / --config it was started with)."""

    code: str | None
    juki: str = ".venv/bin/juki"


def _first_code(store: ResidentStore) -> str | None:
    with store.reader() as tx:
        return tx.first_code()


def _worker_command(config: Path, worker: int, run_dir: Path) -> list[str]:
    """argv of one worker, built in the supervisor (whose pid the worker watches)."""
    verbose = ["-v"] if logging.getLogger().isEnabledFor(logging.DEBUG) else []
    return [
        sys.executable, "-m", "clients", *verbose, "--config", str(config), "serve", "prefecture",
        "--worker", str(worker), "--run-dir", str(run_dir), "--supervisor", str(os.getpid()),
    ]  # fmt: skip


class ServeFailed(click.ClickException):
    """A server that cannot start (port in use, trail held by another process…): one line, exit 1."""

    exit_code = 1


def _start_failure(exc: Exception, metrics: str) -> str:
    """What a person reads for a server that could not start (no traceback, no class name); `metrics` is
    the server's /metrics address (the listener that fails with a plain OSError)."""
    text = str(exc)
    bind = re.search(r"[Ff]ailed to bind to address (\S+?);", text)
    if bind or (isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE):
        address = bind.group(1) if bind else metrics
        what = "" if bind else " (its /metrics listener)"
        port = address.rpartition(":")[2]
        return (
            f"cannot listen on {address}{what}: the port is in use (another jukinet or program: "
            f"`ss -ltnp 'sport = :{port}'`; or choose other ports, see README: Ports and paths)"
        )
    if isinstance(exc, OSError):
        return f"{exc.strerror or text}{f': {exc.filename}' if exc.filename else ''}"
    return text


def _serve(
    name: str,
    settings: Settings,
    start: Callable[[Settings], Awaitable[RunningServer]],
    on_ready: Callable[[RunningServer], None],
) -> None:
    """`serve` until stopped; a server that cannot start is one line (logged too), exit status 1. (A
    failure after it started is not caught here: it is no start-up mistake.)"""

    async def starting(s: Settings) -> RunningServer:
        try:
            return await start(s)
        except (RuntimeError, OSError, AuditUnavailable) as exc:
            raise _NotStarted(exc) from exc

    try:
        asyncio.run(serve(settings, starting, on_ready=on_ready))
    except _NotStarted as failed:
        metrics = f"{settings.host}:{getattr(settings, f'{name}_metrics_port')}"
        cause = _start_failure(failed.cause, metrics)
        log.error("server did not start", extra={"server": name, "error": cause})
        raise ServeFailed(f"the {SERVER_NAMES[name]} server did not start: {cause}") from None


class _NotStarted(Exception):
    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _serve_prefecture(settings: Settings, sample: _Sample | None = None) -> None:
    """One server process, or `prefecture_workers` of them on the port under a supervisor (this process)."""
    if settings.prefecture_workers <= 1:
        if sample is None:
            _serve(
                "prefecture", settings, start_prefecture, lambda r: _announce(settings, "prefecture", r, None)
            )
            return
        keep: list[asyncio.Task[None]] = []  # `juki run`: "ready" once its own health answers over mTLS too
        _serve(
            "prefecture",
            settings,
            start_prefecture,
            lambda r: keep.append(
                asyncio.get_running_loop().create_task(_announce_healthy(settings, r, sample))
            ),
        )
        return

    def announce(pids: list[int]) -> None:
        services = f"{PREFECTURE_SERVICE.full_name}, {ADMIN_SERVICE.full_name}"
        click.echo(
            f"prefecture server ({services}, mTLS) listening on {settings.prefecture_target} "
            f"in {len(pids)} worker processes (pids {' '.join(map(str, pids))})"
        )
        click.echo("ready")
        sys.stdout.flush()

    harden_process(settings)  # the supervisor prepares the store (keys in memory) before the workers start
    sys.exit(asyncio.run(supervise(settings, _worker_command, on_ready=announce)))


def _serve_worker(settings: Settings, worker: int, run_dir: Path, supervisor: int) -> None:
    """One worker under `supervise` (started by it, never by hand)."""
    keep: list[asyncio.Task[None]] = []

    async def start(s: Settings) -> RunningServer:
        return await start_prefecture(s, worker=worker)

    def ready(running: RunningServer) -> None:
        announce_ready(run_dir, worker)
        keep.append(asyncio.get_running_loop().create_task(exit_with_parent(supervisor)))

    asyncio.run(serve(settings, start, on_ready=ready))


@serve_group.command("prefecture")
@click.option("--port", type=int, help="listen port (default from settings)")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="server processes sharing the port (SO_REUSEPORT) [default from settings: prefecture_workers]",
)
@click.option("--worker", type=int, hidden=True, help="(internal) run as this worker of a supervisor")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), hidden=True)
@click.option("--supervisor", type=int, hidden=True, help="(internal) pid of the supervisor")
@click.pass_obj
def serve_prefecture_cmd(
    settings: Settings,
    port: int | None,
    workers: int | None,
    worker: int | None,
    run_dir: Path | None,
    supervisor: int | None,
) -> None:
    """The prefectural server (都道府県サーバ)."""
    if port is not None:
        settings = settings.replace(prefecture_port=port)
    if workers is not None:
        settings = settings.replace(prefecture_workers=workers)
    if worker is not None:
        if run_dir is None or supervisor is None:
            raise click.UsageError("--worker is for the supervisor's use (with --run-dir and --supervisor)")
        _serve_worker(settings, worker, run_dir, supervisor)
    else:
        _serve_prefecture(settings)


@serve_group.command("fuhyo")
@click.option("--port", type=int, help="listen port (default from settings)")
@click.pass_obj
def serve_fuhyo_cmd(settings: Settings, port: int | None) -> None:
    """The 附票 prefectural server (附票都道府県サーバ)."""
    if port is not None:
        settings = settings.replace(fuhyo_port=port)
    _serve("fuhyo", settings, start_fuhyo, lambda r: _announce(settings, "fuhyo", r, None))


@serve_group.command("national")
@click.option("--port", type=int, help="listen port (default from settings)")
@click.pass_obj
def serve_national_cmd(settings: Settings, port: int | None) -> None:
    """The national server peer (全国サーバ, J-LIS)."""
    if port is not None:
        settings = settings.replace(national_port=port)
    _serve("national", settings, start_national, lambda r: _announce(settings, "national", r, None))


@click.group()
def outbox() -> None:
    """The outbox of changes for the national server."""


@outbox.command("status")
@click.option(
    "--server",
    type=click.Choice(("prefecture", "fuhyo")),
    default="prefecture",
    show_default=True,
    help="whose outbox: the prefectural server's or the 附票 server's",
)
@click.pass_obj
def outbox_status(settings: Settings, server: str) -> None:
    """Depth, age of the oldest undelivered change, changes delivered, changes set aside (refused for good
    by the national server, or held behind one of their municipality) — the store opened read-only."""
    try:
        store: RecordFile[Any] = (
            open_fuhyo_store_readonly(settings) if server == "fuhyo" else open_store_readonly(settings)
        )
    except FileNotFoundError:
        label, data = (
            ("附票", settings.path(settings.fuhyo_data_dir))
            if server == "fuhyo"
            else ("prefectural", settings.data_path)
        )
        raise click.ClickException(f"no {label} store in {data}: start jukinet first (make run)") from None
    try:
        with store.reader() as tx:
            depth = tx.outbox_depth()
            oldest = tx.outbox_oldest_ms()
            delivered = tx.counter(b"outbox_delivered")
            attempts = tx.counter(b"relay_attempts")
            failures = tx.counter(b"relay_failures")
            refused, held = tx.aside_counts()
            aside = [(a, _sequence(tx.aside_payload(a))) for a in tx.aside_changes(ASIDE_SHOWN)]
    finally:
        store.env.close()
    age = 0.0 if oldest is None else max(0.0, time.time() - oldest / 1000)
    click.echo(f"outbox depth          {depth}")
    click.echo(f"oldest undelivered    {age:.1f} s")
    click.echo(f"delivered (all time)  {delivered}")
    click.echo(f"delivery attempts     {attempts}")
    click.echo(f"delivery failures     {failures}")
    click.echo(f"set aside (refused)   {refused}")
    click.echo(f"held behind them      {held}")
    for change, sequence in aside:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(change.set_aside_ms / 1000))
        state = "held" if change.held else "refused"
        click.echo(f"  {change.stream} sequence {sequence}  {state}  {change.reason}  since {when}")
    if refused + held > len(aside):
        click.echo(f"  … and {refused + held - len(aside)} more")


ASIDE_SHOWN = 50


def _sequence(payload: bytes) -> int:
    """A set-aside change's sequence number (what the status shows of it: no personal data)."""
    change = national_pb2.PropagatedChange()
    change.ParseFromString(payload)
    return int(change.notice.sequence)


@outbox.command("requeue")
@click.argument("stream")
@click.pass_obj
def outbox_requeue(settings: Settings, stream: str) -> None:
    """Put the changes set aside for STREAM (a 市町村コード) back in the outbox, in their order, once the
    cause of the refusal is dealt with (deploy/README.md). The running relay sends them at its next poll."""
    if not (stream.isascii() and stream.isdigit() and len(stream) == 6):
        raise click.BadParameter("a 6-digit 市町村コード", param_hint="STREAM")
    try:
        open_store_readonly(settings).env.close()  # exists, and no store is created by mistake
    except FileNotFoundError:
        raise click.ClickException(f"no prefectural store in {settings.data_path}") from None
    store = open_store(settings)
    try:
        moved = store.apply_sync(lambda tx: tx.requeue_stream(stream))
    finally:
        store.env.close()
    click.echo(f"{moved} change(s) of {stream} back in the outbox")
