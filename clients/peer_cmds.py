"""Peer clients: a municipal CS pushing notices, and lookups and searches by agencies and operators."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click
import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from juki.v1 import prefecture_pb2, prefecture_pb2_grpc

from clients.channel import error_details, secure_channel
from clients.errors import CliError
from server.identity.pki import Pki
from server.settings import Settings


def _stub(settings: Settings, identity: str) -> prefecture_pb2_grpc.PrefectureStub:
    return prefecture_pb2_grpc.PrefectureStub(  # type: ignore[no-untyped-call]
        secure_channel(Pki(settings.pki_path), identity, settings.prefecture_target)
    )


def condition_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The condition of a provision or query: RESIDENT_CODE, --my-number or 4情報 (--kana, --birth,
    --sex, --address); `condition_request` sets it on the request."""
    for option in reversed(
        (
            click.argument("resident_code", required=False),
            click.option("--my-number", help="by 個人番号"),
            click.option("--kana", default="", help="by 4情報: kana name"),
            click.option("--birth", default="", help="by 4情報: date of birth YYYY-MM-DD"),
            click.option("--sex", type=click.Choice(["male", "female"]), help="by 4情報: sex"),
            click.option("--address", default="", help="by 4情報: address prefix"),
        )
    ):
        command = option(command)
    return command


def condition_request(
    request: Any,
    resident_code: str | None,
    my_number: str | None,
    kana: str,
    birth: str,
    sex: str | None,
    address: str,
) -> Any:
    """`request` with its condition set: by 個人番号, else 住民票コード, else 4情報."""
    if my_number:
        request.my_number = my_number
    elif resident_code:
        request.resident_code = resident_code
    else:
        request.four_info.CopyFrom(
            prefecture_pb2.FourInfoQuery(
                name_kana=kana, birth_date=birth, sex=_sex(sex), address_prefix=address
            )
        )
    return request


M = TypeVar("M", bound=Message)


def json_lines(path: Path, kind: type[M], producer: str) -> Iterator[M]:
    """The messages of a JSON-lines file, one per non-blank line; a line that does not parse is a CliError
    naming the file, the line and what writes such a file (`producer`)."""
    try:
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield json_format.Parse(line, kind())
                    except json_format.ParseError as exc:
                        raise CliError(
                            f"{path}:{number}: not a {kind.DESCRIPTOR.full_name} JSON line "
                            f"({_first_line(str(exc))}); write one per line, as {producer} does"
                        ) from None
    except UnicodeDecodeError:
        raise CliError(f"{path}: not UTF-8 text (JSON lines of {kind.DESCRIPTOR.full_name})") from None


def _first_line(text: str) -> str:
    return text.splitlines()[0][:200] if text else "unreadable"


def _print(message: Any) -> None:
    click.echo(json_format.MessageToJson(message, ensure_ascii=False, indent=2))


def _fail(error: grpc.RpcError) -> None:
    violations, metadata, reason = error_details(error)
    hint = ""
    if error.code() == grpc.StatusCode.UNAVAILABLE and "failed to connect" in (error.details() or ""):
        hint = (
            " (is jukinet running? `make run`; a server started with `juki --home DIR run` is reached with "
            "--home DIR, and one with another CA refuses the handshake)"
        )
    click.echo(f"{error.code().name}: {error.details()}{hint}", err=True)
    for field, description in violations:
        click.echo(f"  {field}: {description}", err=True)
    if reason:
        click.echo(f"  reason: {reason} {json.dumps(metadata)}", err=True)
    sys.exit(1)


def _sex(sex: str | None) -> str:
    return f"SEX_{sex.upper()}" if sex else "SEX_UNSPECIFIED"


_as = click.option("--as", "identity", required=True, help="who is calling: <role>/<id> of a certificate")
_purpose = click.option("--purpose", required=True, help="purpose (事務) id of the policy")


@click.group()
def cs() -> None:
    """A municipal CS (市町村CS): push change notices."""


@cs.command("apply")
@_as
@click.argument("notices", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.pass_obj
def cs_apply(settings: Settings, identity: str, notices: Path) -> None:
    """Stream NOTICES (JSON lines of juki.v1.ChangeNotice, '-' for stdin) with ApplyUpdates.

    Every line is read first: one that does not parse is refused before anything is sent."""
    source = Path("/dev/stdin") if str(notices) == "-" else notices
    if not source.exists():
        raise CliError(f"{notices}: no such file (JSON lines of juki.v1.ChangeNotice)")
    parsed = list(json_lines(source, prefecture_pb2.ChangeNotice, "a municipal CS's system"))
    stub = _stub(settings, identity)
    try:
        response = stub.ApplyUpdates(prefecture_pb2.ApplyUpdateRequest(notice=n) for n in parsed)
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
    sex: str | None,
    address: str,
    ask_national: bool,
) -> None:
    """Provision (提供/移転) by 住民票コード, --my-number or 4情報; a person not in Mie is asked of J-LIS."""
    kind: type[Any] = prefecture_pb2.QueryNationalRequest if ask_national else prefecture_pb2.ProvideRequest
    request = condition_request(kind(purpose=purpose), resident_code, my_number, kana, birth, sex, address)
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
@click.option("--page-token", default="", help="the nextPageToken of the previous page (same search)")
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
    page_token: str,
    include_removed: bool,
) -> None:
    """4情報 search: at least two of --kana, --birth, --sex, --address. A response with a nextPageToken has
    more: run the same search again with --page-token TOKEN."""
    request = prefecture_pb2.SearchRequest(
        purpose=purpose,
        name_kana=kana,
        birth_date=birth,
        sex=_sex(sex),
        address_prefix=address,
        page_size=page_size,
        page_token=page_token,
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
