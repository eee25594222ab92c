"""The audit trail (監査証跡, SPEC §4.4): every call, allowed or refused, leaves one hash-chained entry,
and the trail is a Merkle log (`merkle`, `tree`) with C2SP signed-note checkpoints (`note`) that witnesses
cosign (`witness`).

Writing: `AuditTrail` (the server's side). Reading, offline with the public key: `verify` (against a
witnessed checkpoint: `witnessed`), `query`, `provisions_of`, `monthly_report`; proofs (`proofs`) and their
standalone check (`proof_check`); a resident's disclosure through the subject index (`disclosure`,
`subjects`). Keys: `AuditKeys` (server), `AuditorKeys` (auditor: public key and subject key, no signing
key), `WitnessKey` (a witness's cosigning key).
"""

from server.audit.entries import JST, PROVISION, AuditEvent
from server.audit.keys import AuditKeys, AuditorKeys, load_public_key, subject_hash
from server.audit.query import provisions_of, query
from server.audit.report import MonthlyReport, monthly_report
from server.audit.trail import AuditTrail, AuditUnavailable, Erased
from server.audit.verify import Problem, VerifyReport, verify

__all__ = [
    "JST",
    "PROVISION",
    "AuditEvent",
    "AuditKeys",
    "AuditTrail",
    "AuditUnavailable",
    "AuditorKeys",
    "Erased",
    "MonthlyReport",
    "Problem",
    "VerifyReport",
    "load_public_key",
    "monthly_report",
    "provisions_of",
    "query",
    "subject_hash",
    "verify",
]
