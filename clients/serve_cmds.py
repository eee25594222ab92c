"""`juki seed`, `juki serve …`, `juki outbox status` and `juki run` (what `make run` calls)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from clients.launch import start_server_process, wait_ready, write_settings
from clients.pki_cmds import ensure_dev_pki
from server.app import (
    ADMIN_SERVICE,
    PREFECTURE_SERVICE,
    RunningServer,
    open_fuhyo_store,
    open_fuhyo_store_readonly,
    open_national_fuhyo_store,
    open_national_store,
    open_store,
    open_store_readonly,
    register_dev_operators,
    serve,
    start_fuhyo,
    start_national,
    start_prefecture,
)
from server.hardening import LOG_DIR, harden_process, log_path
from server.observability.logs import JsonFormatter
from server.seed.elsewhere import generate_elsewhere
from server.seed.fuhyo import generate_fuhyo, generate_fuhyo_elsewhere, load_fuhyo
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
        click.echo(f"  .venv/bin/juki lookup --as agency/police --purpose bt6-police-driving-licence {code}")
        if not sample.code:
            click.echo("  (juki run --show-sample prints a resident's code to try)")
    click.echo("ready")
    sys.stdout.flush()


@dataclass(frozen=True)
class _Sample:
    """What `juki run` shows to try: a resident's code only when asked for."""

    code: str | None


def _first_code(store: ResidentStore) -> str | None:
    with store.env.read() as txn, txn.cursor(db=store.env.dbs["records"]) as cur:
        return bytes(cur.key()).decode() if cur.first() else None


def _worker_command(config: Path, worker: int, run_dir: Path) -> list[str]:
    """argv of one worker, built in the supervisor (whose pid the worker watches)."""
    verbose = ["-v"] if logging.getLogger().isEnabledFor(logging.DEBUG) else []
    return [
        sys.executable, "-m", "clients", *verbose, "--config", str(config), "serve", "prefecture",
        "--worker", str(worker), "--run-dir", str(run_dir), "--supervisor", str(os.getpid()),
    ]  # fmt: skip


def _serve_prefecture(settings: Settings, sample: _Sample | None = None) -> None:
    """One server process, or `prefecture_workers` of them on the port under a supervisor (this process)."""
    if settings.prefecture_workers <= 1:
        asyncio.run(
            serve(
                settings,
                start_prefecture,
                on_ready=lambda r: _announce(settings, "prefecture", r, sample),
            )
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
    asyncio.run(serve(settings, start_fuhyo, on_ready=lambda r: _announce(settings, "fuhyo", r, None)))


@serve_group.command("national")
@click.option("--port", type=int, help="listen port (default from settings)")
@click.pass_obj
def serve_national_cmd(settings: Settings, port: int | None) -> None:
    """The national server peer (全国サーバ, J-LIS)."""
    if port is not None:
        settings = settings.replace(national_port=port)
    asyncio.run(serve(settings, start_national, on_ready=lambda r: _announce(settings, "national", r, None)))


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
    """Depth, age of the oldest undelivered change, changes delivered (the store opened read-only)."""
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
    finally:
        store.env.close()
    age = 0.0 if oldest is None else max(0.0, time.time() - oldest / 1000)
    click.echo(f"outbox depth          {depth}")
    click.echo(f"oldest undelivered    {age:.1f} s")
    click.echo(f"delivered (all time)  {delivered}")
    click.echo(f"delivery attempts     {attempts}")
    click.echo(f"delivery failures     {failures}")


def _log_to_file(path: Path) -> None:
    """The logs of this process also in `path` (0600: the umask is 077 by now), as JSON lines."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)


@click.command()
@click.option(
    "--count", default=100_000, show_default=True, help="Mie residents to seed when the store is empty"
)
@click.option("--show-sample", is_flag=True, help="print a resident's code to try in the start banner")
@click.pass_obj
def run(settings: Settings, count: int, show_sample: bool) -> None:
    """Set up everything on embedded defaults (dev PKI, keys, synthetic data) and start the servers.

    The 附票 and national servers log to var/log/fuhyo.log and var/log/national.log, the prefectural
    server to this terminal and var/log/prefecture.log (0600)."""
    harden_process(settings)  # it seeds (My Numbers in memory) before it serves
    _log_to_file(log_path(settings, "prefecture"))
    log.info("juki run: servers log to files", extra={"directory": str(settings.path(LOG_DIR))})
    issued = ensure_dev_pki(settings)
    if issued:
        click.echo(f"dev PKI: {len(issued)} certificate(s) issued in {settings.pki_path}")
    national = open_national_store(settings)
    if _resident_count(national) == 0:
        _seed(
            national,
            generate_elsewhere(settings.national_seed_count),
            settings.national_seed_count,
            "national",
        )
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
    sample = _Sample(_first_code(store) if show_sample else None)
    store.env.close()

    config = write_settings(settings, settings.path(settings.data_dir).parent / "run-settings.toml")
    peers = [start_server_process(config, p, log=log_path(settings, p)) for p in ("national", "fuhyo")]
    try:
        wait_ready(settings, "national", "prefectural-server/" + settings.prefecture_code)
        click.echo(f"national server (juki.v1.National, mTLS) listening on {settings.national_target}")
        click.echo(f"附票 server (juki.v1.Fuhyo, mTLS) listening on {settings.fuhyo_target}")
        _serve_prefecture(settings, sample)
    finally:
        for peer in peers:
            peer.terminate()
        for peer in peers:
            try:
                peer.wait(timeout=15)
            except subprocess.TimeoutExpired:
                peer.kill()
