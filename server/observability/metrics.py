"""The domain's Prometheus metrics. Labels never carry personal data: only codes, roles, methods, reasons."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

OUTBOX_DEPTH = Gauge("juki_outbox_depth", "Applied changes not yet confirmed by the national server")
OUTBOX_OLDEST_AGE = Gauge(
    "juki_outbox_oldest_age_seconds", "Age of the oldest change not yet confirmed by the national server"
)
RELAY_ATTEMPTS = Counter("juki_relay_attempts", "NotifyUpdates calls made by the outbox relay")
RELAY_FAILURES = Counter("juki_relay_failures", "NotifyUpdates calls that failed, by status code", ["code"])
RELAY_DELIVERED = Counter("juki_relay_delivered", "Changes confirmed by the national server")
AUDIT_ENTRIES = Counter("juki_audit_entries", "Audit entries written")
AUDIT_WRITE_FAILURES = Counter(
    "juki_audit_write_failures",
    "Audit entries (or flushes) that could not be written; their calls failed closed",
)
