"""`juki`: the one command for everything a person runs (SPEC §9)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from clients import (
    admin_cmds,
    audit_cmds,
    backup_cmds,
    batch_cmd,
    bench_cmds,
    export_cmd,
    fuhyo_cmds,
    operator_cmds,
    peer_cmds,
    pki_cmds,
    reconcile_cmd,
    run_cmd,
    serve_cmds,
    witness_cmds,
)
from server.observability.logs import configure as configure_logs
from server.settings import Settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="settings TOML")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), help="base of relative paths")
@click.option("-v", "--verbose", is_flag=True, help="log more")
@click.pass_context
def cli(ctx: click.Context, config: Path | None, home: Path | None, verbose: bool) -> None:
    """jukinet: prefectural servers of Juki-net, their PKI and their peers."""
    configure_logs(verbose)
    ctx.obj = Settings.load(config, home=home)


cli.add_command(pki_cmds.pki)
cli.add_command(serve_cmds.seed)
cli.add_command(serve_cmds.serve_group)
cli.add_command(serve_cmds.outbox)
cli.add_command(run_cmd.run)
peer_cmds.cs.add_command(reconcile_cmd.reconcile_cmd)
peer_cmds.cs.add_command(export_cmd.export_cmd)
cli.add_command(peer_cmds.cs)
cli.add_command(peer_cmds.lookup)
cli.add_command(peer_cmds.search)
cli.add_command(peer_cmds.provide)
cli.add_command(peer_cmds.ping)
cli.add_command(bench_cmds.bench)
cli.add_command(admin_cmds.admin)
for command in (fuhyo_cmds.provide, fuhyo_cmds.redeliver, fuhyo_cmds.ack):
    batch_cmd.agency.add_command(command)
cli.add_command(batch_cmd.agency)
cli.add_command(operator_cmds.operator)
cli.add_command(audit_cmds.audit)
cli.add_command(backup_cmds.backup)
cli.add_command(witness_cmds.witness)


def main() -> None:
    """`juki`: a mistake is one line on stderr ("Error: …", what is wrong and what to do), never a traceback
    or a usage screen; exit status 2 for a usage mistake, as click gives."""
    try:
        status = cli.main(prog_name="juki", standalone_mode=False)
    except click.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `juki` or a group alone: its help, as click shows it
            exc.show()
            sys.exit(exc.exit_code)
        where = exc.ctx.command_path if exc.ctx else "juki"
        click.echo(f"Error: {exc.format_message()} (see `{where} --help`)", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(1)
    sys.exit(status if isinstance(status, int) else 0)
