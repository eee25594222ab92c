"""Client side of strict mTLS: a channel that presents one identity's certificate."""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from clients.errors import CliError
from server.identity.pki import ROLES, Pki


def channel_credentials(pki: Pki, identity: str) -> grpc.ChannelCredentials:
    """Credentials for `<role>/<id>`: its key and certificate, and the deployment CA as the only root.

    A malformed identity or a missing certificate is a CliError (one line saying what to do)."""
    role, _, ident = identity.partition("/")
    if role not in ROLES or not ident:
        raise CliError(
            f"--as {identity}: not <role>/<id> of a known role (e.g. agency/police, operator/op-0001; "
            f"roles: {', '.join(ROLES)})"
        )
    try:
        cert, key = pki.cert_paths(role, ident)
    except ValueError as exc:
        raise CliError(f"--as {identity}: {exc}") from None
    if not cert.exists() or not key.exists():
        raise CliError(
            f"no certificate for {identity} in {pki.directory}: "
            f"issue one with `juki pki issue {role} {ident}`"
        )
    if not pki.ca_cert_path.exists():
        raise CliError(f"no CA in {pki.directory}: create it with `juki pki init` (or `juki pki dev`)")
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca_cert_path.read_bytes(),
        private_key=key.read_bytes(),
        certificate_chain=cert.read_bytes(),
    )


def secure_channel(pki: Pki, identity: str, target: str) -> grpc.Channel:
    return grpc.secure_channel(target, channel_credentials(pki, identity))


def aio_channel(pki: Pki, identity: str, target: str) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(target, channel_credentials(pki, identity))


def error_details(error: grpc.RpcError) -> tuple[list[tuple[str, str]], dict[str, str], str]:
    """(field violations, ErrorInfo metadata, ErrorInfo reason) from a failed call's trailing metadata."""
    violations: list[tuple[str, str]] = []
    metadata: dict[str, str] = {}
    reason = ""
    trailing: Any = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailing or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status()
        status.ParseFromString(value)
        for detail in status.details:
            bad = error_details_pb2.BadRequest()
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(bad):
                violations.extend((v.field, v.description) for v in bad.field_violations)
            elif detail.Unpack(info):
                metadata.update(info.metadata)
                reason = info.reason
    return violations, metadata, reason
