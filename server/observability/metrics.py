"""Every Prometheus metric of the servers (SPEC §7). Labels never carry personal data: only status codes,
roles, methods, purposes, reasons, municipality codes and certificate names.

When several prefectural server processes share a port, prometheus_client runs in multiprocess mode (the
supervisor sets PROMETHEUS_MULTIPROC_DIR for every worker): counters and histograms are summed over the
workers, and each gauge says how its per-process values combine (`multiprocess_mode`). Gauges read off the
shared store or set by a singleton job are set by worker 0 only ("livemostrecent"); the mode is ignored
in a single process.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# --- the usual gRPC server metrics (names and labels as go-grpc-prometheus / py-grpc-prometheus) ---------
GRPC_LABELS = ["grpc_type", "grpc_service", "grpc_method"]
GRPC_STARTED = Counter("grpc_server_started", "RPCs started on the server", GRPC_LABELS)
GRPC_HANDLED = Counter(
    "grpc_server_handled", "RPCs completed on the server, by status code", [*GRPC_LABELS, "grpc_code"]
)
GRPC_HANDLING = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its completion on the server",
    GRPC_LABELS,
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# --- the domain ---------------------------------------------------------------------------------------
UPDATES_APPLIED = Counter("juki_updates_applied", "Change notices applied, by municipality", ["municipality"])
UPDATES_REJECTED = Counter("juki_updates_rejected", "Change notices refused, by reason", ["reason"])
PROVISIONS = Counter(
    "juki_provisions",
    "Provisions and transfers (提供・移転), by role, purpose and outcome",
    ["role", "purpose", "outcome"],
)
REFUSALS = Counter(
    "juki_authorization_refusals",
    "Calls refused by identity or authorization",
    ["role", "method", "grpc_code"],
)
RECORDS = Gauge("juki_records", "Records held, by state", ["state"], multiprocess_mode="livemostrecent")
LMDB_MAP_SIZE = Gauge(
    "juki_lmdb_map_size_bytes", "LMDB map size", ["env"], multiprocess_mode="livemostrecent"
)
LMDB_MAP_USED = Gauge(
    "juki_lmdb_map_used_bytes", "LMDB pages in use", ["env"], multiprocess_mode="livemostrecent"
)
CERT_EXPIRY = Gauge(
    "juki_certificate_expiry_timestamp_seconds",
    "Not-after of the server's own and the CA's certificate",
    ["cert"],
    multiprocess_mode="livemin",  # every worker reads the same files; the earliest expiry if not
)
BUILD_INFO = Gauge(
    "juki_build_info",
    "Version of the running server (always 1)",
    ["version", "server"],
    multiprocess_mode="livemax",
)

OUTBOX_DEPTH = Gauge(
    "juki_outbox_depth",
    "Applied changes not yet confirmed by the national server",
    multiprocess_mode="livemostrecent",  # the relay runs in worker 0 only
)
OUTBOX_OLDEST_AGE = Gauge(
    "juki_outbox_oldest_age_seconds",
    "Age of the oldest change not yet confirmed by the national server",
    multiprocess_mode="livemostrecent",
)
OUTBOX_SET_ASIDE = Gauge(
    "juki_outbox_set_aside",
    "Changes set aside by the relay: refused for good by the national server, or held behind one",
    ["state"],
    multiprocess_mode="livemostrecent",
)
RELAY_ATTEMPTS = Counter("juki_relay_attempts", "NotifyUpdates calls made by the outbox relay")
RELAY_FAILURES = Counter("juki_relay_failures", "NotifyUpdates calls that failed, by status code", ["code"])
RELAY_DELIVERED = Counter("juki_relay_delivered", "Changes confirmed by the national server")
BACKGROUND_FAILURES = Counter(
    "juki_background_failures",
    "Failures of a supervised background task (each is logged and the task restarted after a backoff)",
    ["task"],
)

TEMPSTORE_ENTRIES = Gauge(
    "juki_tempstore_entries",
    "My Numbers held in the 附票 server's temporary area",
    multiprocess_mode="livesum",
)
TEMPSTORE_ERASURES = Counter("juki_tempstore_erasures", "Temporary-area entries erased, by cause", ["cause"])

AUDIT_ENTRIES = Counter("juki_audit_entries", "Audit entries written")
AUDIT_ERASED = Counter("juki_audit_erased_entries", "Audit entries erased after their retention period")
AUDIT_WRITE_FAILURES = Counter(
    "juki_audit_write_failures",
    "Audit entries (or flushes) that could not be written; their calls failed closed",
)
AUDIT_CHECKPOINTS_WITNESSED = Counter(
    "juki_audit_checkpoints_witnessed", "Audit checkpoints a witness cosigned"
)
AUDIT_WITNESS_REFUSALS = Counter(
    "juki_audit_witness_refusals",
    "Audit checkpoints a witness refused (the trail is not what it witnessed before), by reason",
    ["reason"],
)
AUDIT_WITNESS_UNREACHABLE = Counter(
    "juki_audit_witness_unreachable", "Audit checkpoints not witnessed because the witness did not answer"
)
RETENTION_ERASED = Counter(
    "juki_retention_erased", "Records erased at the end of their retention, by kind", ["kind"]
)
