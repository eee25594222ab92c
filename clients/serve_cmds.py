"""`juki seed`, `juki serve …` and `juki run` (what `make run` calls)."""

from __future__ import annotations

import asyncio
import sys

import click
from tqdm import tqdm

from clients.pki_cmds import ensure_dev_pki
from server.app import RunningServer, open_store, serve_prefecture
from server.seed.load import load
from server.seed.population import generate
from server.settings import Settings
from server.storage.residents import ResidentStore


def _seed(store: ResidentStore, count: int, seed_number: int) -> None:
    with tqdm(total=count, unit="rec", unit_scale=True, desc="seeding", file=sys.stderr) as bar:

        def advance(n: int) -> None:
            bar.update(n)

        report = load(store, generate(count, seed_number), progress=advance)
    click.echo(
        f"seeded {report.records:,} residents in {report.seconds:.1f} s ({report.per_second:,.0f} records/s)"
    )


def _resident_count(store: ResidentStore) -> int:
    with store.reader() as tx:
        return tx.count("records")


@click.command()
@click.option("--count", default=100_000, show_default=True, help="residents to generate")
@click.option("--seed", "seed_number", default=1, show_default=True, help="deterministic seed number")
@click.option("--if-empty", is_flag=True, help="do nothing when the store already holds residents")
@click.pass_obj
def seed(settings: Settings, count: int, seed_number: int, if_empty: bool) -> None:
    """Load a synthetic Mie population into the prefectural store."""
    store = open_store(settings)
    try:
        existing = _resident_count(store)
        if existing and if_empty:
            click.echo(f"store already holds {existing:,} residents; not seeding")
            return
        if existing:
            raise click.ClickException(f"store already holds {existing:,} residents (seed an empty data dir)")
        _seed(store, count, seed_number)
    finally:
        store.env.close()


@click.group()
def serve() -> None:
    """Run a server in the foreground (SIGTERM/Ctrl-C drains and stops; SIGHUP reloads CRL and policy)."""


def _announce(settings: Settings, running: RunningServer, sample_code: str | None) -> None:
    target = f"{settings.host}:{running.port}"
    click.echo(f"prefecture server (juki.v1.Prefecture, mTLS) listening on {target}", err=False)
    click.echo(f"  data {settings.data_path}   keys {settings.keys_path}   certificates {settings.pki_path}")
    if sample_code:
        click.echo("try, in another terminal:")
        click.echo(
            f"  .venv/bin/juki lookup --as agency/police --purpose bt6-police-driving-licence {sample_code}"
        )
    click.echo("ready", err=False)
    sys.stdout.flush()


def _first_code(store: ResidentStore) -> str | None:
    with store.env.read() as txn, txn.cursor(db=store.env.dbs["records"]) as cur:
        return bytes(cur.key()).decode() if cur.first() else None


@serve.command("prefecture")
@click.option("--port", type=int, help="listen port (default from settings)")
@click.pass_obj
def serve_prefecture_cmd(settings: Settings, port: int | None) -> None:
    """The prefectural server (都道府県サーバ)."""
    if port is not None:
        settings = settings.replace(prefecture_port=port)
    asyncio.run(serve_prefecture(settings, on_ready=lambda r: _announce(settings, r, None)))


@click.command()
@click.option("--count", default=100_000, show_default=True, help="residents to seed when the store is empty")
@click.pass_obj
def run(settings: Settings, count: int) -> None:
    """Set up everything on embedded defaults (dev PKI, keys, synthetic Mie) and start the servers."""
    issued = ensure_dev_pki(settings)
    if issued:
        click.echo(f"dev PKI: {len(issued)} certificate(s) issued in {settings.pki_path}")
    store = open_store(settings)
    if _resident_count(store) == 0:
        _seed(store, count, 1)
    sample = _first_code(store)
    store.env.close()
    asyncio.run(serve_prefecture(settings, on_ready=lambda r: _announce(settings, r, sample)))
