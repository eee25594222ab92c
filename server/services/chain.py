"""The interceptor chain every call passes, in a fixed order: identity → authorization → audit → metrics →
handler.

Identity is the SPIFFE ID of the client certificate (expiry and revocation re-checked per call); an
operator must also be registered and not revoked. Authorization is the policy (role, method, purpose)
and, for an operator, its registration. A refused call is answered before any handler runs, with a status
and no payload. Every call, allowed or refused, leaves one audit entry; when it cannot be written the call
fails with UNAVAILABLE and returns no data (fail closed).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, Protocol

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from juki.v1 import admin_pb2

from server.domain.errors import DomainError
from server.domain.operators import operator_refusal
from server.identity.peers import PeerIdentities, Refusal
from server.identity.pki import SpiffeId
from server.identity.policy import Decision, Policy
from server.observability.calls import MethodMetrics, finish
from server.services.call_facts import CallFacts
from server.services.status import CODES, answer, status_metadata

log = logging.getLogger(__name__)

caller_var: contextvars.ContextVar[SpiffeId] = contextvars.ContextVar("juki_caller")

Denial = tuple[grpc.StatusCode, str]
# grpc's handler and context types are loose at this level (sync and aio share RpcMethodHandler).
Handler = Any
Context = Any
OperatorLookup = Callable[[str], admin_pb2.OperatorEntry | None]
AUDIT_DOWN: Denial = (grpc.StatusCode.UNAVAILABLE, "audit trail unavailable; no data is served")


class AuditFailure(Exception):
    """The audit entry of a call could not be written."""


class CallAuditor(Protocol):
    def record(self, facts: CallFacts) -> None:
        """Append one entry; raise AuditFailure when it cannot be written."""

    def ready(self) -> bool:
        """False while the trail is known to be unwritable (calls are refused up front)."""


def current_caller() -> SpiffeId:
    """The authenticated, authorized caller of the call being handled."""
    return caller_var.get()


def purpose_methods(*services: ServiceDescriptor) -> frozenset[str]:
    """Full names of the methods whose request carries a `purpose` field (checked by the policy)."""
    names = set()
    for service in services:
        for method in service.methods:
            if "purpose" in method.input_type.fields_by_name:
                names.add(f"/{service.full_name}/{method.name}")
    return frozenset(names)


class AccessInterceptor(grpc.aio.ServerInterceptor):
    """Identity, authorization and audit of every call."""

    def __init__(
        self,
        identities: PeerIdentities,
        policy: Policy,
        with_purpose: frozenset[str],
        *,
        operators: OperatorLookup | None = None,
        auditor: CallAuditor | None = None,
    ) -> None:
        self.identities = identities
        self.policy = policy
        self.with_purpose = with_purpose
        self.operators = operators
        self.auditor = auditor
        self._wrapped: dict[str, Handler] = {}
        self._meters: dict[str, MethodMetrics] = {}

    def set_policy(self, policy: Policy) -> None:
        self.policy = policy

    def admit(self, method: str, request: Any, context: Context, facts: CallFacts) -> Denial | None:
        """Identity then authorization of one call; `request` None checks the role only (streams, first)."""
        who = self.identities.identify(context.auth_context())
        if isinstance(who, Refusal):
            facts.claimed, facts.serial = who.claimed, who.serial
            return grpc.StatusCode.UNAUTHENTICATED, who.message
        facts.caller = who
        registration = None
        if who.role == "operator" and self.operators is not None:
            # an unregistered operator is unknown: UNAUTHENTICATED whatever the method
            registration = self.operators(who.id)
            if operator_refusal(registration, None, None) is not None:
                return grpc.StatusCode.UNAUTHENTICATED, "operator not registered or revoked"
        purpose = request.purpose if request is not None and method in self.with_purpose else None
        decision = self.policy.check(who, method, purpose)
        if decision != Decision.ALLOW:
            return grpc.StatusCode.PERMISSION_DENIED, decision
        if registration is not None:
            data_method = method if method in self.with_purpose else None
            refusal = operator_refusal(registration, data_method, purpose)
            if refusal is not None:
                code = (
                    grpc.StatusCode.UNAUTHENTICATED
                    if refusal.unauthenticated
                    else grpc.StatusCode.PERMISSION_DENIED
                )
                return code, refusal.message
        caller_var.set(who)
        return None

    def audit(self, facts: CallFacts) -> bool:
        """Write the call's entry, then count the call; False when the entry could not be written."""
        written = True
        if self.auditor is not None:
            try:
                self.auditor.record(facts)
            except AuditFailure:
                written = False
        if facts.meter is not None:
            purpose = facts.purpose if facts.purpose in self.policy.purposes else "other"
            finish(facts.meter, facts, facts.started, facts.outcome if written else "UNAVAILABLE", purpose)
        return written

    def facts(self, method: str, grpc_type: str) -> CallFacts:
        """A new call: counted as started, timed from now."""
        meter = self._meters.get(method)
        if meter is None:
            meter = MethodMetrics(method, grpc_type)
            self._meters[method] = meter
        meter.started.inc()
        return CallFacts(method, meter=meter)

    def audit_ready(self) -> bool:
        return self.auditor is None or self.auditor.ready()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        method: str = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None:
            return _unknown_method_handler(self, method)
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            wrapped = _wrap(self, method, handler)
            self._wrapped[method] = wrapped
        return wrapped


async def _deny(context: Context, denial: Denial) -> None:
    code, message = denial
    await context.abort(code, message, status_metadata(code, message))


def _outcome(context: Context, exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED"
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    return "UNKNOWN"


async def _refuse(gate: AccessInterceptor, context: Context, facts: CallFacts, denial: Denial) -> None:
    facts.outcome = denial[0].name
    if not gate.audit(facts):
        denial = AUDIT_DOWN
    await _deny(context, denial)


async def _refused_by_handler(
    gate: AccessInterceptor, context: Context, facts: CallFacts, err: DomainError
) -> NoReturn:
    """A handler ended the call with a domain error: its entry is written before the status is sent."""
    facts.outcome = CODES[err.kind].name
    if not gate.audit(facts):
        await _deny(context, AUDIT_DOWN)
    await answer(context, err)


async def _audited(gate: AccessInterceptor, context: Context, facts: CallFacts, call: Awaitable[Any]) -> Any:
    """Run the handler; write its entry; return its response only when the entry is written."""
    try:
        response = await call
    except DomainError as err:
        await _refused_by_handler(gate, context, facts, err)
    except BaseException as exc:
        facts.outcome = _outcome(context, exc)
        if not gate.audit(facts):
            log.error("audit entry of a failed call could not be written")
        raise
    facts.add_response(response)
    if not gate.audit(facts):
        await _deny(context, AUDIT_DOWN)
    return response


def _wrap(gate: AccessInterceptor, method: str, handler: Handler) -> Handler:
    if handler.unary_unary:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: Context) -> Any:
            facts = gate.facts(method, "unary")
            facts.add_request(request)
            denial = gate.admit(method, request, context, facts)
            if denial is None and not gate.audit_ready():
                denial = AUDIT_DOWN
            if denial:
                await _refuse(gate, context, facts, denial)
            return await _audited(gate, context, facts, inner_uu(request, context))

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, handler.request_deserializer, handler.response_serializer
        )
    if handler.unary_stream and not inspect.isasyncgenfunction(handler.unary_stream):
        inner_uw = handler.unary_stream

        async def unary_stream_writer(request: Any, context: Context) -> None:
            """A response stream written with context.write (e.g. grpc.health.v1 Watch), not yielded."""
            facts = gate.facts(method, "server_stream")
            facts.add_request(request)
            denial = gate.admit(method, request, context, facts) or (
                None if gate.audit_ready() else AUDIT_DOWN
            )
            if denial:
                await _refuse(gate, context, facts, denial)
            await _audited(gate, context, facts, inner_uw(request, context))

        return grpc.unary_stream_rpc_method_handler(
            unary_stream_writer, handler.request_deserializer, handler.response_serializer
        )
    if handler.unary_stream:
        inner_us = handler.unary_stream

        async def unary_stream(request: Any, context: Context) -> AsyncIterator[Any]:
            facts = gate.facts(method, "server_stream")
            facts.add_request(request)
            denial = gate.admit(method, request, context, facts) or (
                None if gate.audit_ready() else AUDIT_DOWN
            )
            if denial:
                await _refuse(gate, context, facts, denial)
            async for response in _audited_stream(gate, context, facts, inner_us(request, context)):
                yield response

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, handler.request_deserializer, handler.response_serializer
        )
    if handler.stream_unary:
        inner_su = handler.stream_unary

        async def stream_unary(requests: AsyncIterator[Any], context: Context) -> Any:
            facts = gate.facts(method, "client_stream")
            checked = await _admit_stream(gate, method, requests, context, facts)
            return await _audited(gate, context, facts, inner_su(checked, context))

        return grpc.stream_unary_rpc_method_handler(
            stream_unary, handler.request_deserializer, handler.response_serializer
        )
    inner_ss = handler.stream_stream

    async def stream_stream(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
        facts = gate.facts(method, "bidi_stream")
        checked = await _admit_stream(gate, method, requests, context, facts)
        async for response in _audited_stream(gate, context, facts, inner_ss(checked, context)):
            yield response

    return grpc.stream_stream_rpc_method_handler(
        stream_stream, handler.request_deserializer, handler.response_serializer
    )


async def _audited_stream(
    gate: AccessInterceptor, context: Context, facts: CallFacts, responses: AsyncIterator[Any]
) -> AsyncIterator[Any]:
    """A response stream: its entry is written when it ends (the audit trail was checked writable first)."""
    try:
        async for response in responses:
            _add_streamed(facts, response)
            yield response
    except DomainError as err:
        await _refused_by_handler(gate, context, facts, err)
    except BaseException as exc:
        facts.outcome = _outcome(context, exc)
        if not gate.audit(facts):
            log.error("audit entry of a failed stream could not be written")
        raise
    if not gate.audit(facts):
        await _deny(context, AUDIT_DOWN)


def _add_streamed(facts: CallFacts, response: Any) -> None:
    if "record" in response.DESCRIPTOR.fields_by_name and response.HasField("record"):
        facts.add_view(response.record)
    else:
        facts.count += 1


async def _admit_stream(
    gate: AccessInterceptor, method: str, requests: AsyncIterator[Any], context: Context, facts: CallFacts
) -> AsyncIterator[Any]:
    """Admit a client stream: identity and role before reading anything; then, when the messages carry a
    purpose, the first message's purpose. The stream handed on records what its messages concern."""
    denial = gate.admit(method, None, context, facts) or (None if gate.audit_ready() else AUDIT_DOWN)
    if denial:
        await _refuse(gate, context, facts, denial)
    iterator = requests.__aiter__()
    first: Any = None
    if method in gate.with_purpose:
        try:
            first = await iterator.__anext__()
        except StopAsyncIteration:
            first = None
        facts.add_request(first)
        denial = gate.admit(method, _NoPurpose() if first is None else first, context, facts)
        if denial:
            await _refuse(gate, context, facts, denial)

    async def replay() -> AsyncIterator[Any]:
        if first is not None:
            yield first
        async for item in iterator:
            facts.add_request(item)
            yield item

    return replay()


class _NoPurpose:
    purpose = ""


def _unknown_method_handler(gate: AccessInterceptor, method: str) -> Handler:
    """Unknown methods: an unidentified caller learns only UNAUTHENTICATED, others PERMISSION_DENIED."""

    async def refuse(request: bytes, context: Context) -> bytes:
        facts = gate.facts("/unknown/unknown", "unary")
        facts.method = method
        who = gate.identities.identify(context.auth_context())
        if isinstance(who, Refusal):
            await _refuse(gate, context, facts, (grpc.StatusCode.UNAUTHENTICATED, who.message))
        facts.caller = who if isinstance(who, SpiffeId) else None
        await _refuse(gate, context, facts, (grpc.StatusCode.PERMISSION_DENIED, "unknown method"))
        return b""

    return grpc.unary_unary_rpc_method_handler(refuse)
