"""Peer clients: a municipal CS pushing notices, and lookups and searches by agencies and operators."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click
import grpc
from google.protobuf import json_format
from juki.v1 import prefecture_pb2, prefecture_pb2_grpc

from clients.channel import error_details, secure_channel
from server.identity.pki import Pki
from server.settings import Settings


def _stub(settings: Settings, identity: str) -> prefecture_pb2_grpc.PrefectureStub:
    return prefecture_pb2_grpc.PrefectureStub(  # type: ignore[no-untyped-call]
        secure_channel(Pki(settings.pki_path), identity, settings.prefecture_target)
    )


def condition_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The condition of a provision or query: RESIDENT_CODE, --my-number or 4情報 (--kana, --birth,
    --address); `condition_request` sets it on the request."""
    for option in reversed(
        (
            click.argument("resident_code", required=False),
            click.option("--my-number", help="by 個人番号"),
            click.option("--kana", default="", help="by 4情報: kana name"),
            click.option("--birth", default="", help="by 4情報: date of birth YYYY-MM-DD"),
            click.option("--address", default="", help="by 4情報: address prefix"),
        )
    ):
        command = option(command)
    return command


def condition_request(
    request: Any, resident_code: str | None, my_number: str | None, kana: str, birth: str, address: str
) -> Any:
    """`request` with its condition set: by 個人番号, else 住民票コード, else 4情報."""
    if my_number:
        request.my_number = my_number
    elif resident_code:
        request.resident_code = resident_code
    else:
        request.four_info.CopyFrom(
            prefecture_pb2.FourInfoQuery(name_kana=kana, birth_date=birth, address_prefix=address)
        )
    return request


def _print(message: Any) -> None:
    click.echo(json_format.MessageToJson(message, ensure_ascii=False, indent=2))


def _fail(error: grpc.RpcError) -> None:
    violations, metadata, reason = error_details(error)
    click.echo(f"{error.code().name}: {error.details()}", err=True)
    for field, description in violations:
        click.echo(f"  {field}: {description}", err=True)
    if reason:
        click.echo(f"  reason: {reason} {json.dumps(metadata)}", err=True)
    sys.exit(1)


_as = click.option("--as", "identity", required=True, help="who is calling: <role>/<id> of a certificate")
_purpose = click.option("--purpose", required=True, help="purpose (事務) id of the policy")


@click.group()
def cs() -> None:
    """A municipal CS (市町村CS): push change notices."""


@cs.command("apply")
@_as
@click.argument("notices", type=click.File("r", encoding="utf-8"))
@click.pass_obj
def cs_apply(settings: Settings, identity: str, notices: Any) -> None:
    """Stream NOTICES (JSON lines of juki.v1.ChangeNotice, '-' for stdin) with ApplyUpdates."""

    def requests() -> Iterator[prefecture_pb2.ApplyUpdateRequest]:
        for line in notices:
            if line.strip():
                notice = json_format.Parse(line, prefecture_pb2.ChangeNotice())
                yield prefecture_pb2.ApplyUpdateRequest(notice=notice)

    try:
        response = _stub(settings, identity).ApplyUpdates(requests())
    except grpc.RpcError as error:
        _fail(error)
        return
    click.echo(
        f"applied {len(response.results) - response.replayed_count}, replayed {response.replayed_count}, "
        f"last sequence {response.last_applied_sequence}"
    )


@click.command()
@_as
@_purpose
@click.argument("resident_code", required=False)
@click.option("--my-number", help="look up by 個人番号 instead")
@click.pass_obj
def lookup(
    settings: Settings, identity: str, purpose: str, resident_code: str | None, my_number: str | None
) -> None:
    """One record by 住民票コード (or --my-number), for a purpose."""
    request = prefecture_pb2.LookupRequest(purpose=purpose)
    if my_number:
        request.my_number = my_number
    elif resident_code:
        request.resident_code = resident_code
    try:
        _print(_stub(settings, identity).Lookup(request))
    except grpc.RpcError as error:
        _fail(error)


@click.command()
@_as
@_purpose
@condition_options
@click.option("--national", "ask_national", is_flag=True, help="機構への照会 (operator): ask J-LIS directly")
@click.pass_obj
def provide(
    settings: Settings,
    identity: str,
    purpose: str,
    resident_code: str | None,
    my_number: str | None,
    kana: str,
    birth: str,
    address: str,
    ask_national: bool,
) -> None:
    """Provision (提供/移転) by 住民票コード, --my-number or 4情報; a person not in Mie is asked of J-LIS."""
    kind: type[Any] = prefecture_pb2.QueryNationalRequest if ask_national else prefecture_pb2.ProvideRequest
    request = condition_request(kind(purpose=purpose), resident_code, my_number, kana, birth, address)
    stub = _stub(settings, identity)
    try:
        _print(stub.QueryNational(request) if ask_national else stub.Provide(request))
    except grpc.RpcError as error:
        _fail(error)


@click.command()
@_as
@_purpose
@click.option("--kana", default="", help="kana name or its beginning, any script/width")
@click.option("--birth", default="", help="date of birth YYYY-MM-DD")
@click.option("--sex", type=click.Choice(["male", "female"]), help="sex")
@click.option("--address", default="", help="address prefix")
@click.option("--page-size", default=20, show_default=True)
@click.option("--include-removed", is_flag=True, help="also removed persons (marked REMOVED)")
@click.pass_obj
def search(
    settings: Settings,
    identity: str,
    purpose: str,
    kana: str,
    birth: str,
    sex: str | None,
    address: str,
    page_size: int,
    include_removed: bool,
) -> None:
    """4情報 search: at least two of --kana, --birth, --sex, --address."""
    request = prefecture_pb2.SearchRequest(
        purpose=purpose,
        name_kana=kana,
        birth_date=birth,
        sex=f"SEX_{sex.upper()}" if sex else "SEX_UNSPECIFIED",
        address_prefix=address,
        page_size=page_size,
        include_removed=include_removed,
    )
    try:
        _print(_stub(settings, identity).Search(request))
    except grpc.RpcError as error:
        _fail(error)


@click.command()
@_as
@click.pass_obj
def ping(settings: Settings, identity: str) -> None:
    """The empty RPC: checks the transport and your certificate."""
    try:
        _stub(settings, identity).Ping(prefecture_pb2.PingRequest())
    except grpc.RpcError as error:
        _fail(error)
    click.echo("ok")
