"""`juki operator …`: what an operator at a 代表端末 runs besides lookups and searches."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click
import grpc
from google.protobuf import json_format
from juki.v1 import prefecture_pb2

from clients.disclosure_report import render_html
from clients.fuhyo_cmds import fuhyo_stub
from clients.peer_cmds import _fail, _print, _stub, condition_options, condition_request
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
@click.option("--fuhyo", is_flag=True, help="the person's 附票 record, from the 附票 server")
@click.pass_obj
def disclose(
    settings: Settings, identity: str, resident_code: str, out: Path, json_out: Path | None, fuhyo: bool
) -> None:
    """開示: the resident's record and who received it, when, for which purpose — as a page they can read."""
    request = prefecture_pb2.DiscloseRequest(resident_code=resident_code, purpose="disclosure")
    stub = fuhyo_stub(settings, identity) if fuhyo else _stub(settings, identity)
    try:
        response = stub.Disclose(request)
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


@operator.command("query-national")
@click.option("--as", "identity", default="operator/op-0001", show_default=True, help="operator certificate")
@click.option("--purpose", default="identity-check", show_default=True)
@condition_options
@click.option("--fuhyo", is_flag=True, help="ask the 附票全国サーバ through the 附票 server")
@click.pass_obj
def query_national(
    settings: Settings,
    identity: str,
    purpose: str,
    resident_code: str | None,
    my_number: str | None,
    kana: str,
    birth: str,
    address: str,
    fuhyo: bool,
) -> None:
    """機構への照会: ask J-LIS directly, by 住民票コード, --my-number or 4情報 (--fuhyo: its 附票 file)."""
    request = condition_request(
        prefecture_pb2.QueryNationalRequest(purpose=purpose), resident_code, my_number, kana, birth, address
    )
    stub = fuhyo_stub(settings, identity) if fuhyo else _stub(settings, identity)
    try:
        _print(stub.QueryNational(request))
    except grpc.RpcError as error:
        _fail(error)
