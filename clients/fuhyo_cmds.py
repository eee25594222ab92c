"""Agency and department clients of the 附票 server: provision with My Number, redelivery, acknowledgement."""

from __future__ import annotations

import secrets
from typing import Any

import click
import grpc
from juki.v1 import fuhyo_pb2, fuhyo_pb2_grpc

from clients.channel import secure_channel
from clients.peer_cmds import _fail, _print
from server.identity.pki import Pki
from server.settings import Settings

_as = click.option("--as", "identity", required=True, help="agency/<id> or department/<id>")
_purpose = click.option("--purpose", required=True, help="purpose (事務) id of the policy")


def fuhyo_stub(settings: Settings, identity: str) -> Any:
    channel = secure_channel(Pki(settings.pki_path), identity, settings.fuhyo_target)
    return fuhyo_pb2_grpc.FuhyoStub(channel)  # type: ignore[no-untyped-call]


@click.command("provide")
@_as
@_purpose
@click.option("--fuhyo", "resident_code", required=True, help="住民票コード of the person on the 附票")
@click.option(
    "--with-my-number", is_flag=True, help="also the My Number (a purpose that allows it; 国外転出者 only)"
)
@click.option("--request-id", default="", help="your id of this request (default: a new one)")
@click.pass_obj
def provide(
    settings: Settings, identity: str, purpose: str, resident_code: str, with_my_number: bool, request_id: str
) -> None:
    """A 附票 record (and, with --with-my-number, the person's My Number) from the 附票 server."""
    request = fuhyo_pb2.FuhyoProvideRequest(
        resident_code=resident_code,
        purpose=purpose,
        include_my_number=with_my_number,
        request_id=request_id or f"req-{secrets.token_urlsafe(12)}",
    )
    try:
        _print(fuhyo_stub(settings, identity).Provide(request))
    except grpc.RpcError as error:
        _fail(error)


@click.command("redeliver")
@_as
@_purpose
@click.argument("request_id")
@click.pass_obj
def redeliver(settings: Settings, identity: str, purpose: str, request_id: str) -> None:
    """The same answer again (same caller, the provision's purpose, within the temporary area's TTL)."""
    try:
        _print(
            fuhyo_stub(settings, identity).Redeliver(
                fuhyo_pb2.RedeliverRequest(request_id=request_id, purpose=purpose)
            )
        )
    except grpc.RpcError as error:
        _fail(error)


@click.command("ack")
@_as
@_purpose
@click.argument("request_id")
@click.pass_obj
def ack(settings: Settings, identity: str, purpose: str, request_id: str) -> None:
    """Received: the temporary area erases the entry (and its key) now."""
    try:
        fuhyo_stub(settings, identity).AckDelivery(
            fuhyo_pb2.AckDeliveryRequest(request_id=request_id, purpose=purpose)
        )
    except grpc.RpcError as error:
        _fail(error)
    click.echo("acknowledged")
