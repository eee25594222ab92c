"""`juki operator …`: what an operator at a 代表端末 runs besides lookups and searches."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import click
import grpc
from google.protobuf import json_format
from juki.v1 import prefecture_pb2

from clients.disclosure_report import display_names, pdf_unavailable, render_html, write_pdf
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
@click.option("--pdf/--no-pdf", default=True, show_default=True, help="also the A4 PDF beside it (.pdf)")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="also write JSON")
@click.option("--fuhyo", is_flag=True, help="the person's 附票 record, from the 附票 server")
@click.pass_obj
def disclose(
    settings: Settings,
    identity: str,
    resident_code: str,
    out: Path,
    pdf: bool,
    json_out: Path | None,
    fuhyo: bool,
) -> None:
    """開示: the resident's record and who received it, when, for which purpose, and the requests refused —
    as a page they can read (HTML) and print (the PDF beside it, A4). Files 0600: they hold My Number."""
    request = prefecture_pb2.DiscloseRequest(resident_code=resident_code, purpose="disclosure")
    stub = fuhyo_stub(settings, identity) if fuhyo else _stub(settings, identity)
    try:
        response = stub.Disclose(request)
    except grpc.RpcError as error:
        _fail(error)
        return
    policy = Policy.load(settings.policy_path)
    titles = {pid: p.title for pid, p in policy.purposes.items()}
    names = display_names(settings.policy_path)
    page = render_html(response, generated_at=dt.datetime.now(dt.UTC), purposes=titles, names=names)
    _private(out).write_text(page, encoding="utf-8")
    written = [str(out)]
    if pdf:
        missing = pdf_unavailable()
        if missing is None:
            write_pdf(page, _private(out.with_suffix(".pdf")))
            written.append(str(out.with_suffix(".pdf")))
        else:
            click.echo(f"PDF not written: {missing}", err=True)
    if json_out:
        _private(json_out).write_text(
            json_format.MessageToJson(response, ensure_ascii=False, indent=2), encoding="utf-8"
        )
    click.echo(f"disclosure written to {' and '.join(written)} ({len(response.provisions)} record(s))")


def _private(path: Path) -> Path:
    """`path`, created empty with mode 0600 (whatever the umask) for what is written to it next."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    path.chmod(0o600)
    return path


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
    sex: str | None,
    address: str,
    fuhyo: bool,
) -> None:
    """機構への照会: ask J-LIS directly, by 住民票コード, --my-number or 4情報 (--fuhyo: its 附票 file)."""
    request = condition_request(
        prefecture_pb2.QueryNationalRequest(purpose=purpose),
        resident_code,
        my_number,
        kana,
        birth,
        sex,
        address,
    )
    stub = fuhyo_stub(settings, identity) if fuhyo else _stub(settings, identity)
    try:
        _print(stub.QueryNational(request))
    except grpc.RpcError as error:
        _fail(error)
