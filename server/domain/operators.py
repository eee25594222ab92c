"""Operators (代表端末・業務端末の操作者) and bulk-output approvals (SPEC §4.2, §5.5).

An operator's certificate works only while the operator is registered and not revoked, and only for the
methods and purposes the registration names (within what the policy grants the operator role). A bulk
provision above the threshold needs an approval bound to the caller, the purpose and a maximum count.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass

from juki.v1 import admin_pb2

from server.domain.errors import DomainError, ErrorKind, Violations
from server.domain.limits import check_message
from server.domain.validation import check_text
from server.identity.pki import SpiffeId
from server.identity.policy import Policy, full_method

_OPERATOR_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
BULK_ROLES = frozenset({"agency", "department"})
BATCH_METHOD = "/juki.v1.Prefecture/BatchProvide"


@dataclass(frozen=True)
class OperatorRefusal:
    unauthenticated: bool  # not registered or revoked (else: outside the registration)
    message: str


def short_method(method: str) -> str:
    """'/juki.v1.Prefecture/Lookup' → 'Prefecture.Lookup', the form registrations are written in."""
    return method.removeprefix("/juki.v1.").replace("/", ".")


def operator_refusal(
    entry: admin_pb2.OperatorEntry | None, method: str | None, purpose: str | None
) -> OperatorRefusal | None:
    """Why a registered-operator check fails, or None. `method` (full name) None: a call that is no data
    method (Ping, health): only the registration counts."""
    if entry is None or entry.state != admin_pb2.OPERATOR_STATE_ACTIVE:
        return OperatorRefusal(True, "operator not registered or revoked")
    if method is None:
        return None
    if short_method(method) not in entry.methods:
        return OperatorRefusal(False, "method not in the operator's registration")
    if purpose is not None and purpose not in entry.purposes:
        return OperatorRefusal(False, "purpose not in the operator's registration")
    return None


def registration(
    request: admin_pb2.RegisterOperatorRequest, policy: Policy, *, admin: SpiffeId, now: dt.datetime
) -> admin_pb2.OperatorEntry:
    v = Violations()
    check_message(v, request)
    if not _OPERATOR_ID.fullmatch(request.operator_id):
        v.add("operator_id", "1–64 of A-Z a-z 0-9 . _ -")
    granted = policy.methods_of("operator")
    if not request.methods:
        v.add("methods", "at least one method")
    purposes: set[str] = set()
    methods: set[str] = set()
    for i, method in enumerate(request.methods):
        try:
            name = full_method(method)
        except ValueError:
            v.add(f"methods[{i}]", "must be <Service>.<Method>")
            continue
        methods.add(short_method(name))
        if name not in granted:
            v.add(f"methods[{i}]", "not a method the policy grants operators")
        purposes |= policy.purposes_of("operator", name)
    for i, purpose in enumerate(request.purposes):
        if purpose not in purposes:
            v.add(f"purposes[{i}]", "not a purpose the policy grants operators for these methods")
    check_text(v, "note", request.note, max_len=200, required=False)
    v.raise_if_any()
    return admin_pb2.OperatorEntry(
        operator_id=request.operator_id,
        methods=sorted(methods),
        purposes=sorted(set(request.purposes)),
        state=admin_pb2.OPERATOR_STATE_ACTIVE,
        registered_at=now.isoformat(timespec="seconds"),
        registered_by=admin.uri,
        note=request.note,
    )


def full_registration(
    policy: Policy, operator_id: str, *, admin: SpiffeId, now: dt.datetime, note: str = "dev operator"
) -> admin_pb2.OperatorEntry:
    """A registration with every data method and purpose the policy grants operators."""
    methods = sorted(
        short_method(m)
        for m in policy.methods_of("operator")
        if m.startswith("/juki.v1.") and policy.purposes_of("operator", m)
    )
    purposes = sorted({p for m in policy.methods_of("operator") for p in policy.purposes_of("operator", m)})
    request = admin_pb2.RegisterOperatorRequest(
        operator_id=operator_id, methods=methods, purposes=purposes, note=note
    )
    return registration(request, policy, admin=admin, now=now)


def check_revocation(request: admin_pb2.RevokeOperatorRequest) -> None:
    """A revocation names an operator id of the registration alphabet, checked before the registry is read."""
    v = Violations()
    check_message(v, request)
    if not _OPERATOR_ID.fullmatch(request.operator_id):
        v.add("operator_id", "1–64 of A-Z a-z 0-9 . _ -")
    check_text(v, "reason", request.reason, max_len=200, required=False)
    v.raise_if_any()


def revoked(
    entry: admin_pb2.OperatorEntry | None, reason: str, *, admin: SpiffeId, now: dt.datetime
) -> admin_pb2.OperatorEntry:
    if entry is None:
        raise DomainError(ErrorKind.NOT_FOUND, "no such operator", "NO_OPERATOR")
    out = admin_pb2.OperatorEntry()
    out.CopyFrom(entry)
    if out.state != admin_pb2.OPERATOR_STATE_REVOKED:
        out.state = admin_pb2.OPERATOR_STATE_REVOKED
        out.revoked_at = now.isoformat(timespec="seconds")
        out.revoked_by = admin.uri
        out.revoke_reason = reason
    return out


def approval(
    request: admin_pb2.IssueApprovalRequest, policy: Policy, *, now: dt.datetime, trust_domain: str
) -> tuple[str, admin_pb2.Approval]:
    """(token, approval) for one bulk provision, by an admin of `trust_domain` for a caller of it."""
    v = Violations()
    check_message(v, request)
    v.raise_if_any()
    try:
        caller = SpiffeId.parse(request.caller)
    except ValueError:
        v.add("caller", "a SPIFFE ID spiffe://<trust-domain>/<role>/<id>")
        v.raise_if_any()
        raise
    if caller.trust_domain != trust_domain:
        v.add("caller", "an agency or department of this server's trust domain")
    elif caller.role not in BULK_ROLES:
        v.add("caller", "bulk provision is for agencies and departments")
    elif request.purpose not in policy.purposes_of(caller.role, BATCH_METHOD, caller.id):
        v.add("purpose", "not a purpose the policy grants this caller for BatchProvide")
    if not 1 <= request.max_count <= 10_000_000:
        v.add("max_count", "1 to 10,000,000")
    minutes = request.valid_minutes or 60
    if minutes > 1440:
        v.add("valid_minutes", "at most 1440")
    v.raise_if_any()
    token = secrets.token_urlsafe(24)
    expires = now + dt.timedelta(minutes=minutes)
    return token, admin_pb2.Approval(
        token=token,
        caller=caller.uri,
        purpose=request.purpose,
        max_count=request.max_count,
        expires_at=expires.isoformat(timespec="seconds"),
    )


def check_approval(
    approval_record: admin_pb2.Approval | None,
    *,
    caller: SpiffeId,
    purpose: str,
    count: int,
    now: dt.datetime,
) -> None:
    """Refuse a bulk provision whose approval is missing, used, expired, or bound to something else."""
    if approval_record is None:
        raise DomainError(
            ErrorKind.PERMISSION_DENIED,
            "this batch needs an unused approval token from an admin",
            "NO_APPROVAL",
        )
    if approval_record.caller != caller.uri or approval_record.purpose != purpose:
        raise DomainError(
            ErrorKind.PERMISSION_DENIED, "the approval is for another caller or purpose", "APPROVAL_MISMATCH"
        )
    if count > approval_record.max_count:
        raise DomainError(
            ErrorKind.PERMISSION_DENIED, "the batch is larger than the approved count", "APPROVAL_EXCEEDED"
        )
    if dt.datetime.fromisoformat(approval_record.expires_at) < now:
        raise DomainError(ErrorKind.PERMISSION_DENIED, "the approval has expired", "APPROVAL_EXPIRED")
