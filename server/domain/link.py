"""The rules of the restricted link (SPEC §5.3), checked on both of its ends.

A My Number crosses from the prefectural server to the 附票 server only for a person on the 附票 who moved
abroad (国外転出者), for a purpose that allows My Number, at the request of an agency or department that the
policy grants `Fuhyo.Provide` for that purpose. The 附票 server checks what its own file can tell before it
asks anything; the prefectural server checks the requester and what its record can tell before it answers.
"""

from __future__ import annotations

from juki.v1 import records_pb2

from server.domain.errors import DomainError, ErrorKind
from server.identity.pki import SpiffeId
from server.identity.policy import Decision, Policy

FUHYO_PROVIDE = "/juki.v1.Fuhyo/Provide"


def not_abroad() -> DomainError:
    """The one refusal for every person the link does not serve: unknown, resident in Japan, removed for
    another reason. One status, message and reason, so that a refusal never tells which (SPEC §4.2)."""
    return DomainError(
        ErrorKind.PERMISSION_DENIED,
        "a My Number is given only for a person on the 附票 who moved abroad (国外転出者)",
        "NOT_ABROAD",
    )


def moved_out(record: records_pb2.ResidentRecord | None) -> bool:
    """On the prefectural server: the record is removed by 転出. Its record cannot tell a move abroad from
    one to another prefecture (the 附票 server, which can, has checked that first); every other record —
    unknown, active, removed by 死亡 or 職権消除 — is refused."""
    return (
        record is not None
        and record.deleted_flag
        and record.change_reason == records_pb2.CHANGE_REASON_TENSHUTSU
    )


def check_requester(policy: Policy, requester: SpiffeId, purpose: str, trust_domain: str) -> None:
    """PERMISSION_DENIED unless `requester`, of this deployment, is granted Fuhyo.Provide for `purpose`."""
    if requester.trust_domain != trust_domain or policy.check(requester, FUHYO_PROVIDE, purpose) != (
        Decision.ALLOW
    ):
        raise DomainError(
            ErrorKind.PERMISSION_DENIED,
            "the requester is not granted Fuhyo.Provide for this purpose",
            "REQUESTER_NOT_GRANTED",
        )
