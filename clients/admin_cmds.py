"""`juki admin …`: the administrator's client (operator registry, approvals, statistics).

One operator registry governs every record server (SPEC §4.2): each record server (prefectural, 附票) keeps
a copy in its own store and checks it on every call, and `register-operator` / `revoke-operator` change
every copy before they return — they name each server that confirmed, and exit 1 naming every server
that did not (the change then holds only where confirmed: run the command again). `inventory` compares the
copies and exits 1 when they differ.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import grpc
from google.protobuf import json_format
from juki.v1 import admin_pb2, admin_pb2_grpc

from clients.channel import error_details, secure_channel
from clients.peer_cmds import _fail, _print
from server.identity.pki import Pki
from server.settings import Settings

_as_admin = click.option(
    "--as", "identity", default="admin/admin-01", show_default=True, help="admin certificate"
)


# every server that keeps a copy of the operator registry: (name, its target)
RECORD_SERVERS: tuple[tuple[str, Callable[[Settings], str]], ...] = (
    ("prefecture", lambda s: s.prefecture_target),
    ("fuhyo", lambda s: s.fuhyo_target),
)
TIMEOUT = 10.0


def _stub(settings: Settings, identity: str, target: str | None = None) -> Any:
    channel = secure_channel(Pki(settings.pki_path), identity, target or settings.prefecture_target)
    return admin_pb2_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]


def _on_every_record_server(settings: Settings, identity: str, change: Callable[[Any], Any]) -> None:
    """Apply one registry change on every record server; print the entry once and who confirmed it; exit 1
    naming each server that did not confirm."""
    confirmed: list[str] = []
    entry: Any = None
    failed = False
    for name, target_of in RECORD_SERVERS:
        target = target_of(settings)
        try:
            entry = change(_stub(settings, identity, target))
            confirmed.append(f"{name} ({target})")
        except grpc.RpcError as error:
            failed = True
            click.echo(f"{name} ({target}) did not confirm:", err=True)
            _describe(error)
    if entry is not None:
        _print(entry)
    click.echo(f"confirmed by: {', '.join(confirmed) or 'no server'}", err=True)
    if failed:
        sys.exit(1)


def _describe(error: grpc.RpcError) -> None:
    violations, _, _ = error_details(error)
    click.echo(f"  {error.code().name}: {error.details()}", err=True)
    for field, description in violations:
        click.echo(f"    {field}: {description}", err=True)


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
    """Register OPERATOR_ID (the <id> of its certificate) for methods and purposes, on every record server
    (prefectural and 附票) before returning; exit 1 naming any server that did not confirm."""
    request = admin_pb2.RegisterOperatorRequest(
        operator_id=operator_id, methods=list(methods), purposes=list(purposes), note=note
    )
    _on_every_record_server(settings, identity, lambda stub: stub.RegisterOperator(request, timeout=TIMEOUT))


@admin.command("revoke-operator")
@_as_admin
@click.argument("operator_id")
@click.option("--reason", default="", help="why (kept in the inventory)")
@click.pass_obj
def revoke_operator(settings: Settings, identity: str, operator_id: str, reason: str) -> None:
    """Revoke OPERATOR_ID on every record server (prefectural and 附票) before returning: its next call to
    either is refused, open channels included. Exit 1 naming any server that did not confirm."""
    request = admin_pb2.RevokeOperatorRequest(operator_id=operator_id, reason=reason)
    _on_every_record_server(settings, identity, lambda stub: stub.RevokeOperator(request, timeout=TIMEOUT))


@admin.command("inventory")
@_as_admin
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="write CSV here (default: stdout)"
)
@click.pass_obj
def inventory(settings: Settings, identity: str, out: Path | None) -> None:
    """The yearly inventory (棚卸し) of operators, revoked ones included, as CSV (the prefectural server's
    copy); exit 1 when another record server's copy differs or cannot be read."""
    try:
        response = _stub(settings, identity).ListOperators(admin_pb2.ListOperatorsRequest(), timeout=TIMEOUT)
    except grpc.RpcError as error:
        _fail(error)
        return
    differing = _differing_copies(settings, identity, response.operators)
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
    if differing:
        for line in differing:
            click.echo(line, err=True)
        sys.exit(1)


def _differing_copies(settings: Settings, identity: str, reference: Any) -> list[str]:
    """Lines naming each other record server whose registry differs from `reference` (or is unreadable)."""

    def key(entries: Any) -> dict[str, tuple[int, tuple[str, ...], tuple[str, ...]]]:
        return {e.operator_id: (e.state, tuple(e.methods), tuple(e.purposes)) for e in entries}

    ours, lines = key(reference), []
    for name, target_of in RECORD_SERVERS[1:]:
        target = target_of(settings)
        try:
            theirs = key(
                _stub(settings, identity, target)
                .ListOperators(admin_pb2.ListOperatorsRequest(), timeout=TIMEOUT)
                .operators
            )
        except grpc.RpcError as error:
            lines.append(f"{name} ({target}): registry not readable: {error.code().name}")
            continue
        ids = sorted(i for i in ours.keys() | theirs.keys() if ours.get(i) != theirs.get(i))
        if ids:
            lines.append(f"{name} ({target}): registry differs for {', '.join(ids)}")
    return lines


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
