"""`juki admin …`: the administrator's client (operator registry, approvals, statistics)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

import click
import grpc
from google.protobuf import json_format
from juki.v1 import admin_pb2, admin_pb2_grpc

from clients.channel import secure_channel
from clients.peer_cmds import _fail, _print
from server.identity.pki import Pki
from server.settings import Settings

_as_admin = click.option(
    "--as", "identity", default="admin/admin-01", show_default=True, help="admin certificate"
)


def _stub(settings: Settings, identity: str) -> Any:
    channel = secure_channel(Pki(settings.pki_path), identity, settings.prefecture_target)
    return admin_pb2_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]


@click.group()
def admin() -> None:
    """Operators, bulk-output approvals and statistics (admin role)."""


@admin.command("register-operator")
@_as_admin
@click.argument("operator_id")
@click.option("--method", "methods", multiple=True, required=True, help="e.g. Prefecture.Lookup (repeat)")
@click.option("--purpose", "purposes", multiple=True, help="purpose id (repeat)")
@click.option("--note", default="", help="e.g. the operator's section")
@click.pass_obj
def register_operator(
    settings: Settings,
    identity: str,
    operator_id: str,
    methods: tuple[str, ...],
    purposes: tuple[str, ...],
    note: str,
) -> None:
    """Register OPERATOR_ID (the <id> of its certificate) for methods and purposes."""
    request = admin_pb2.RegisterOperatorRequest(
        operator_id=operator_id, methods=list(methods), purposes=list(purposes), note=note
    )
    try:
        _print(_stub(settings, identity).RegisterOperator(request))
    except grpc.RpcError as error:
        _fail(error)


@admin.command("revoke-operator")
@_as_admin
@click.argument("operator_id")
@click.option("--reason", default="", help="why (kept in the inventory)")
@click.pass_obj
def revoke_operator(settings: Settings, identity: str, operator_id: str, reason: str) -> None:
    """Revoke OPERATOR_ID: its next call is refused, open channels included."""
    try:
        _print(
            _stub(settings, identity).RevokeOperator(
                admin_pb2.RevokeOperatorRequest(operator_id=operator_id, reason=reason)
            )
        )
    except grpc.RpcError as error:
        _fail(error)


@admin.command("inventory")
@_as_admin
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="write CSV here (default: stdout)"
)
@click.pass_obj
def inventory(settings: Settings, identity: str, out: Path | None) -> None:
    """The yearly inventory (棚卸し) of operators, revoked ones included, as CSV."""
    try:
        response = _stub(settings, identity).ListOperators(admin_pb2.ListOperatorsRequest())
    except grpc.RpcError as error:
        _fail(error)
        return
    stream = out.open("w", newline="", encoding="utf-8") if out else sys.stdout
    try:
        writer = csv.writer(stream)
        writer.writerow(["operator_id", "state", "methods", "purposes", "registered_at", "registered_by",
                         "revoked_at", "revoked_by", "revoke_reason", "note"])  # fmt: skip
        for e in response.operators:
            writer.writerow([
                e.operator_id, admin_pb2.OperatorState.Name(e.state).removeprefix("OPERATOR_STATE_"),
                " ".join(e.methods), " ".join(e.purposes), e.registered_at, e.registered_by,
                e.revoked_at, e.revoked_by, e.revoke_reason, e.note,
            ])  # fmt: skip
    finally:
        if out:
            stream.close()


@admin.command("approve")
@_as_admin
@click.option("--caller", required=True, help="SPIFFE ID of the agency/department, or <role>/<id>")
@click.option("--purpose", required=True)
@click.option("--max-count", type=int, required=True)
@click.option("--valid-minutes", type=int, default=60, show_default=True)
@click.pass_obj
def approve(
    settings: Settings, identity: str, caller: str, purpose: str, max_count: int, valid_minutes: int
) -> None:
    """Issue a single-use approval for one bulk provision; prints the token."""
    if not caller.startswith("spiffe://"):
        caller = f"spiffe://{settings.trust_domain}/{caller}"
    request = admin_pb2.IssueApprovalRequest(
        caller=caller, purpose=purpose, max_count=max_count, valid_minutes=valid_minutes
    )
    try:
        _print(_stub(settings, identity).IssueApproval(request))
    except grpc.RpcError as error:
        _fail(error)


@admin.command("stats")
@click.option(
    "--as", "identity", default="admin/admin-01", show_default=True, help="admin or auditor certificate"
)
@click.option("--month", required=True, help="YYYY-MM")
@click.pass_obj
def stats(settings: Settings, identity: str, month: str) -> None:
    """Counts of updates and provisions in a month (住基法 30条の15)."""
    try:
        response = _stub(settings, identity).Statistics(admin_pb2.StatisticsRequest(month=month))
    except grpc.RpcError as error:
        _fail(error)
        return
    click.echo(json_format.MessageToJson(response, ensure_ascii=False, indent=2))
