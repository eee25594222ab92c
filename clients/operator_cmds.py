"""`juki operator …`: what an operator at a 代表端末 runs besides lookups and searches."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click
import grpc
from google.protobuf import json_format
from juki.v1 import prefecture_pb2

from clients.disclosure_report import render_html
from clients.peer_cmds import _fail, _stub
from server.identity.policy import Policy
from server.settings import Settings


@click.group()
def operator() -> None:
    """Operator clients (代表端末・業務端末)."""


@operator.command("disclose")
@click.option("--as", "identity", default="operator/op-0001", show_default=True, help="operator certificate")
@click.argument("resident_code")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="HTML report")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="also write JSON")
@click.pass_obj
def disclose(settings: Settings, identity: str, resident_code: str, out: Path, json_out: Path | None) -> None:
    """開示: the resident's record and who received it, when, for which purpose — as a page they can read."""
    request = prefecture_pb2.DiscloseRequest(resident_code=resident_code, purpose="disclosure")
    try:
        response = _stub(settings, identity).Disclose(request)
    except grpc.RpcError as error:
        _fail(error)
        return
    policy = Policy.load(settings.policy_path)
    titles = {pid: p.title for pid, p in policy.purposes.items()}
    generated = dt.datetime.now(dt.timezone(dt.timedelta(hours=9))).isoformat(timespec="seconds")
    out.write_text(render_html(response, generated_at=generated, purposes=titles), encoding="utf-8")
    if json_out:
        json_out.write_text(
            json_format.MessageToJson(response, ensure_ascii=False, indent=2), encoding="utf-8"
        )
    click.echo(f"disclosure written to {out} ({len(response.provisions)} provision record(s))")
