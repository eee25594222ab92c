"""The audit trail (監査証跡, SPEC §4.4): every call, allowed or refused, leaves one hash-chained entry.

Writing: `AuditTrail` (the server's side). Reading, offline with the public key: `verify`, `query`,
`provisions_of`, `monthly_report`. Keys: `AuditKeys` (server), `AuditorKeys` (auditor: public key and
subject key, no signing key).
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
