"""Per-call metrics, recorded by the chain when a call ends (after its audit entry)."""

from __future__ import annotations

import time

from prometheus_client.metrics import MetricWrapperBase

from server.observability import metrics
from server.services.call_facts import PROVISION_METHODS, CallFacts

PROVISION_ROLES = frozenset({"agency", "department"})


def is_provision(facts: CallFacts) -> bool:
    """Provisions (提供・移転): what the resident's disclosure lists and what is kept 7 years."""
    if facts.method in PROVISION_METHODS:
        return True
    role = facts.caller.role if facts.caller else ""
    return facts.method == "/juki.v1.Prefecture/Lookup" and role in PROVISION_ROLES


class MethodMetrics:
    """The labelled children of one method, looked up once (the hot path only increments)."""

    def __init__(self, method: str, grpc_type: str) -> None:
        service, _, name = method.lstrip("/").partition("/")
        self.method = method  # a served method's name (every unknown one is metered as /unknown/unknown)
        self._labels = (grpc_type, service, name)
        self.started = metrics.GRPC_STARTED.labels(*self._labels)
        self.handling = metrics.GRPC_HANDLING.labels(*self._labels)
        self._handled: dict[str, MetricWrapperBase] = {}
        self._provided: dict[tuple[str, str, str], MetricWrapperBase] = {}
        self.provides = method in PROVISION_METHODS  # always a provision …
        self.provides_to_recipients = method == "/juki.v1.Prefecture/Lookup"  # … or when the caller receives

    def handled(self, code: str) -> MetricWrapperBase:
        child = self._handled.get(code)
        if child is None:
            child = metrics.GRPC_HANDLED.labels(*self._labels, code)
            self._handled[code] = child
        return child

    def provided(self, role: str, purpose: str, code: str) -> MetricWrapperBase:
        """The provisions counter's child; its labels are bounded (roles, the policy's purposes, codes)."""
        key = (role, purpose, code)
        child = self._provided.get(key)
        if child is None:
            child = self._provided[key] = metrics.PROVISIONS.labels(role, purpose, code)
        return child


def finish(m: MethodMetrics, facts: CallFacts, started: float, code: str, purpose: str) -> None:
    """Count a finished call. Labels take bounded values only: `purpose` is a purpose of the policy or
    "other", the method one the server serves — never what a caller typed."""
    m.handled(code).inc()  # type: ignore[attr-defined]
    m.handling.observe(time.perf_counter() - started)
    role = facts.caller.role if facts.caller else ""
    if code in ("UNAUTHENTICATED", "PERMISSION_DENIED") and facts.count == 0:
        metrics.REFUSALS.labels(role or "unknown", m.method, code).inc()
    if m.provides or (m.provides_to_recipients and role in PROVISION_ROLES):
        m.provided(role, purpose, code).inc()  # type: ignore[attr-defined]
