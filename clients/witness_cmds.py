"""`juki witness serve`: a witness of the deployment's audit logs on its own (e.g. the auditor's), next to
the one the national server runs. Point the servers at it with `audit_extra_witness = "host:port"`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from server.app import RunningServer, serve
from server.settings import Settings
from server.witness_server import start_witness


@click.group()
def witness() -> None:
    """A witness that cosigns audit checkpoints consistent with what it saw before."""


@witness.command("serve")
@click.option("--port", type=int, required=True, help="listen port")
@click.option(
    "--identity",
    default="national/jlis",
    show_default=True,
    help="the server certificate it presents (a server role of the PKI)",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("var/witness/standalone"),
    show_default=True,
    help="its state, key (witness.json; public part witness.pub.json) and audit trail",
)
@click.pass_obj
def serve_witness(settings: Settings, port: int, identity: str, directory: Path) -> None:
    """Serve juki.v1.Witness until SIGTERM/SIGINT."""

    async def start(s: Settings) -> RunningServer:
        return await start_witness(s, port=port, identity=identity, directory=directory)

    def ready(running: RunningServer) -> None:
        click.echo(f"witness (juki.v1.Witness, mTLS) listening on {settings.host}:{running.port}")
        click.echo("ready", nl=True)

    asyncio.run(serve(settings, start, on_ready=ready))
