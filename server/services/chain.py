"""The interceptor chain every call passes, in a fixed order: identity → authorization → rate limit → audit
→ metrics → handler.

Identity is the SPIFFE ID of the client certificate (expiry and revocation re-checked per call); an
operator must also be registered and not revoked. Authorization is the policy (role, method, purpose)
and, for an operator, its registration. grpc hands the chain each request as raw bytes (the wrapped
handlers have no request deserializer), so nothing a caller sends is decoded before the caller is
identified and its role is granted the method; then the request is decoded (undecodable bytes:
INVALID_ARGUMENT with a BadRequest violation, for each message of a client stream too) and its purpose
checked, then the caller's rate limit (server.services.rate_limits). A refused call is answered before any
handler runs, with a status and no payload. Every call, allowed or refused, leaves one audit entry (a
streamed provision also a part entry per chunk, written before the chunk is sent: `_audit_part`); when it
cannot be written the call fails with UNAVAILABLE and returns no data (fail closed). An unexpected exception
is answered INTERNAL with a generic message and an error id that the server's log line of the failure
carries too: no class name, path or traceback reaches a caller. A decoded request's unknown fields are
discarded at every depth: nothing outside the schema goes further (SPEC §4.2).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import secrets
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, Protocol

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from juki.v1 import admin_pb2

from server.domain.errors import DomainError, ErrorKind, FieldViolation
from server.domain.operators import operator_refusal
from server.identity.peers import PeerIdentities, Refusal
from server.identity.pki import SpiffeId
from server.identity.policy import Decision, Policy
from server.observability.calls import MethodMetrics, finish
from server.services.call_facts import CallFacts, bounded_method, is_chunk
from server.services.rate_limits import RATE_LIMITED_MESSAGE, RateLimiter, rate_limited_metadata
from server.services.status import CODES, INTERNAL_MESSAGE, internal_metadata, status_metadata
from server.storage.errors import is_storage_error

log = logging.getLogger(__name__)

caller_var: contextvars.ContextVar[SpiffeId] = contextvars.ContextVar("juki_caller")
facts_var: contextvars.ContextVar[CallFacts] = contextvars.ContextVar("juki_call_facts")

Denial = tuple[grpc.StatusCode, str]
# grpc's handler and context types are loose at this level (sync and aio share RpcMethodHandler).
Handler = Any
Context = Any
OperatorLookup = Callable[[str], admin_pb2.OperatorEntry | None]
Decode = Callable[[bytes], Any]
AUDIT_DOWN: Denial = (grpc.StatusCode.UNAVAILABLE, "audit trail unavailable; no data is served")
STORAGE_DOWN_MESSAGE = "the store is unavailable; try again later"

# Methods that may write a store (records, outbox, registry, approvals): before their handler runs, an
# intent entry naming the call is made durable (fsynced), so no write ever commits without an entry; when
# the intent cannot be written the call is refused and writes nothing (SPEC §4.4, issue 14).
WRITING_METHODS = frozenset(
    {
        "/juki.v1.Prefecture/ApplyUpdate",
        "/juki.v1.Prefecture/ApplyUpdates",
        "/juki.v1.Prefecture/BatchProvide",  # consumes an approval
        "/juki.v1.Fuhyo/ApplyUpdate",
        "/juki.v1.Fuhyo/ApplyUpdates",
        "/juki.v1.Fuhyo/BatchProvide",  # consumes an approval
        "/juki.v1.National/NotifyUpdates",
        "/juki.v1.Admin/RegisterOperator",
        "/juki.v1.Admin/RevokeOperator",
        "/juki.v1.Admin/IssueApproval",
    }
)
# Methods that return no record data: they answer while the audit trail is down (their entry is attempted
# and its failure counted), so health can say NOT_SERVING instead of failing itself.
NO_DATA_METHODS = frozenset(
    {
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/juki.v1.Prefecture/Ping",
        "/juki.v1.Fuhyo/Ping",
        "/juki.v1.National/Ping",
    }
)


class AuditFailure(Exception):
    """The audit entry of a call could not be written."""


class CallAuditor(Protocol):
    def record(self, facts: CallFacts) -> None:
        """Append one entry; raise AuditFailure when it cannot be written."""

    def record_intent(self, facts: CallFacts) -> None:
        """Append an intent entry for a call about to write, durable (fsynced) before returning; raise
        AuditFailure when it cannot be written. Runs in a worker thread."""

    def ready(self) -> bool:
        """False while the trail is known to be unwritable (calls are refused up front)."""


def current_caller() -> SpiffeId:
    """The authenticated, authorized caller of the call being handled."""
    return caller_var.get()


def current_facts() -> CallFacts:
    """What the audit entry of the call being handled will say (a handler that writes sets `applied`)."""
    return facts_var.get()


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
        on_storage_error: Callable[[], None] | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.on_storage_error = on_storage_error
        self.limiter = limiter
        self.identities = identities
        self.policy = policy
        self.with_purpose = with_purpose
        self.operators = operators
        self.auditor = auditor
        self._wrapped: dict[str, Handler] = {}
        self._meters: dict[str, MethodMetrics] = {}

    def set_policy(self, policy: Policy) -> None:
        self.policy = policy

    def admit(self, method: str, context: Context, facts: CallFacts) -> Denial | None:
        """Identity, then the role's grant of the method (and an operator's registration), before a byte of
        the request is decoded."""
        who = self.identities.identify(context.auth_context())
        if isinstance(who, Refusal):
            facts.claimed, facts.serial = who.claimed, who.serial
            return grpc.StatusCode.UNAUTHENTICATED, who.message
        facts.caller = who
        # an unregistered (or revoked) operator is unknown: UNAUTHENTICATED whatever the method
        if (
            who.role == "operator"
            and self.operators is not None
            and operator_refusal(self.operators(who.id), None, None) is not None
        ):
            return grpc.StatusCode.UNAUTHENTICATED, "operator not registered or revoked"
        decision = self.policy.check(who, method, None)
        if decision != Decision.ALLOW:
            return grpc.StatusCode.PERMISSION_DENIED, decision
        if who.role == "operator":
            denial = self._operator_denial(who, method, None)
            if denial is not None:
                return denial
        caller_var.set(who)
        return None

    def authorize(self, method: str, request: Any, facts: CallFacts) -> Denial | None:
        """The purpose a decoded request states (methods that carry one), for an admitted caller."""
        who = facts.caller
        assert who is not None  # admitted
        decision = self.policy.check(who, method, request.purpose)
        if decision != Decision.ALLOW:
            return grpc.StatusCode.PERMISSION_DENIED, decision
        if who.role == "operator":
            return self._operator_denial(who, method, request.purpose)
        return None

    def _operator_denial(self, who: SpiffeId, method: str, purpose: str | None) -> Denial | None:
        """An operator works only while registered and not revoked, within its registration (read now: a
        revocation counts from the next call)."""
        if self.operators is None:
            return None
        data_method = method if method in self.with_purpose else None
        refusal = operator_refusal(self.operators(who.id), data_method, purpose)
        if refusal is None:
            return None
        if refusal.unauthenticated:
            return grpc.StatusCode.UNAUTHENTICATED, refusal.message
        return grpc.StatusCode.PERMISSION_DENIED, refusal.message

    def audit(self, facts: CallFacts) -> bool:
        """Write the call's entry, then count the call; False when the entry could not be written."""
        written = True
        if self.auditor is not None:
            try:
                self.auditor.record(facts)
            except AuditFailure:
                written = False
            except Exception as exc:  # a fault in writing the entry fails the call closed, like a full disk
                log.error("audit entry not written", extra={"error_type": type(exc).__name__})
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
        facts = CallFacts(method, meter=meter)
        facts_var.set(facts)
        return facts

    def audit_ready(self) -> bool:
        return self.auditor is None or self.auditor.ready()

    async def intent(self, facts: CallFacts) -> bool:
        """The durable intent entry of a writing call (off the event loop); False when not written."""
        if self.auditor is None:
            return True
        try:
            await asyncio.to_thread(self.auditor.record_intent, facts)
        except AuditFailure:
            return False
        except Exception as exc:
            log.error("audit intent entry not written", extra={"error_type": type(exc).__name__})
            return False
        return True

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


async def _end(
    gate: AccessInterceptor,
    context: Context,
    facts: CallFacts,
    code: grpc.StatusCode,
    message: str,
    metadata: tuple[tuple[str, bytes], ...],
) -> NoReturn:
    """Every refusal and failure ends here: the call's entry is written with its outcome, then the status is
    sent (UNAVAILABLE instead when the entry could not be written). Never returns."""
    facts.outcome = code.name
    if not gate.audit(facts):
        code, message = AUDIT_DOWN
        metadata = status_metadata(code, message)
    await context.abort(code, message, metadata)
    raise AssertionError("unreachable: context.abort raises")


async def _refuse(gate: AccessInterceptor, context: Context, facts: CallFacts, denial: Denial) -> NoReturn:
    code, message = denial
    await _end(gate, context, facts, code, message, status_metadata(code, message))


async def _refused_by_handler(
    gate: AccessInterceptor, context: Context, facts: CallFacts, err: DomainError
) -> NoReturn:
    """A domain error (from a handler, or an undecodable request): its entry is written before the status."""
    code = CODES[err.kind]
    await _end(gate, context, facts, code, err.message, status_metadata(code, err.message, err))


async def _failed(gate: AccessInterceptor, context: Context, facts: CallFacts, exc: Exception) -> NoReturn:
    """An unexpected exception: INTERNAL with a fresh error id; a failing store (an I/O error, a full map
    that cannot grow) is UNAVAILABLE instead, a transient condition the caller may retry, and the server's
    health says so. The log line names the exception's type and where it was raised, not its message
    (which may hold a caller's data)."""
    error_id = secrets.token_hex(8)
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    storage = is_storage_error(exc)
    log.error(
        "store failed in %s" if storage else "unexpected error in %s",
        facts.method,
        extra={"error_id": error_id, "error_type": type(exc).__name__, "at": where},
    )
    if storage:
        if gate.on_storage_error is not None:
            gate.on_storage_error()
        code, message = grpc.StatusCode.UNAVAILABLE, STORAGE_DOWN_MESSAGE
        await _end(gate, context, facts, code, message, internal_metadata(error_id, code, message))
    await _end(gate, context, facts, grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE, internal_metadata(error_id))


def _ended(gate: AccessInterceptor, context: Context, facts: CallFacts, exc: BaseException) -> None:
    """A call ended by grpc itself (an abort already sent, a cancellation): record how, then let it go on."""
    if isinstance(exc, asyncio.CancelledError):
        facts.outcome = "CANCELLED"
    else:
        code = context.code()
        facts.outcome = str(code.name) if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    if not gate.audit(facts):
        log.error("audit entry of a failed call could not be written")


def _decode(decode: Decode, raw: bytes, where: str) -> Any:
    """A request message from a caller's bytes, its unknown fields (at every depth) discarded; bytes that
    do not decode are INVALID_ARGUMENT, described without naming the parser or what it raised."""
    try:
        message = decode(raw)
    except Exception:
        raise DomainError(
            ErrorKind.INVALID_ARGUMENT,
            f"{where}: not a valid message of this method's request type",
            "UNDECODABLE",
            [FieldViolation(where, "the bytes do not decode as this method's request message")],
        ) from None
    if isinstance(message, Message):
        message.DiscardUnknownFields()  # nothing outside the schema goes further (SPEC §4.2)
    return message


def _concerned(facts: CallFacts, decode: Decode, raw: bytes) -> None:
    """What a call refused before decoding concerned, for its audit entry only (nothing answers from it)."""
    try:
        facts.add_request(_decode(decode, raw, "request"))
    except Exception:  # undecodable: the entry records the refusal without a subject
        return


async def _admitted(
    gate: AccessInterceptor, method: str, raw: bytes, decode: Decode, context: Context, facts: CallFacts
) -> Any:
    """The decoded request of an admitted call: identity → role → decode → purpose, then `_clear_to_run`
    (rate limit, audit trail writable, a writing call's intent). A refusal or failure ends the call here
    (audited)."""
    try:
        request: Any = None
        denial = gate.admit(method, context, facts)
        if denial is None:
            request = _decode(decode, raw, "request")
            facts.add_request(request)
            if method in gate.with_purpose:
                denial = gate.authorize(method, request, facts)
        elif facts.caller is not None or facts.claimed is not None:
            # a refused known caller, or a certificate of our CA that is revoked or expired: the entry
            # names what the request concerned (the resident's disclosure lists refusals too)
            _concerned(facts, decode, raw)
    except DomainError as err:
        await _refused_by_handler(gate, context, facts, err)
    except Exception as exc:
        await _failed(gate, context, facts, exc)
    await _clear_to_run(gate, method, context, facts, denial)
    return request


async def _clear_to_run(
    gate: AccessInterceptor, method: str, context: Context, facts: CallFacts, denial: Denial | None
) -> None:
    """The last steps before a handler runs, in this order: a refusal so far is sent; the caller's rate
    limit; the trail writable (data methods); a writing call's intent entry made durable. Each refusal
    ends the call here (audited)."""
    if denial is not None:
        await _refuse(gate, context, facts, denial)
    wait = _over_limit(gate, facts)
    if wait is not None:
        await _rate_limited(gate, context, facts, wait)
    if method not in NO_DATA_METHODS and not gate.audit_ready():
        await _refuse(gate, context, facts, AUDIT_DOWN)
    if method in WRITING_METHODS and not await gate.intent(facts):
        await _refuse(gate, context, facts, AUDIT_DOWN)


def _over_limit(gate: AccessInterceptor, facts: CallFacts) -> float | None:
    """The caller's rate limit, after authorization: None to go on, else the seconds until it may."""
    if gate.limiter is None or facts.caller is None:
        return None
    return gate.limiter.take(facts.caller)


async def _rate_limited(gate: AccessInterceptor, context: Context, facts: CallFacts, wait: float) -> NoReturn:
    """RESOURCE_EXHAUSTED with RetryInfo, audited like every refusal."""
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    await _end(gate, context, facts, code, RATE_LIMITED_MESSAGE, rate_limited_metadata(wait))


async def _audited(gate: AccessInterceptor, context: Context, facts: CallFacts, call: Awaitable[Any]) -> Any:
    """Run the handler; write its entry; return its response only when the entry is written."""
    try:
        response = await call
        facts.add_response(response)
    except DomainError as err:
        await _refused_by_handler(gate, context, facts, err)
    except grpc.aio.AbortError as exc:
        _ended(gate, context, facts, exc)
        raise
    except Exception as exc:
        await _failed(gate, context, facts, exc)
    except BaseException as exc:
        _ended(gate, context, facts, exc)
        raise
    if context.cancelled():  # the client went away first (e.g. an idle stream it cancelled): not OK
        facts.outcome = "CANCELLED"
    if not gate.audit(facts) and facts.method not in NO_DATA_METHODS:
        await _deny(context, AUDIT_DOWN)
    return response


async def _deny(context: Context, denial: Denial) -> NoReturn:
    """AUDIT_DOWN after the call's entry failed to be written (already counted)."""
    code, message = denial
    await context.abort(code, message, status_metadata(code, message))
    raise AssertionError("unreachable: context.abort raises")


def _wrap(gate: AccessInterceptor, method: str, handler: Handler) -> Handler:
    """The handler behind the chain. Each takes the request as bytes (no deserializer: see the module)."""
    decode: Decode = handler.request_deserializer or _raw
    serialize = handler.response_serializer
    if handler.unary_unary:
        inner_uu = handler.unary_unary

        async def unary_unary(raw: bytes, context: Context) -> Any:
            facts = gate.facts(method, "unary")
            request = await _admitted(gate, method, raw, decode, context, facts)
            return await _audited(gate, context, facts, inner_uu(request, context))

        return grpc.unary_unary_rpc_method_handler(unary_unary, None, serialize)
    if handler.unary_stream and not inspect.isasyncgenfunction(handler.unary_stream):
        inner_uw = handler.unary_stream

        async def unary_stream_writer(raw: bytes, context: Context) -> None:
            """A response stream written with context.write (e.g. grpc.health.v1 Watch), not yielded."""
            facts = gate.facts(method, "server_stream")
            request = await _admitted(gate, method, raw, decode, context, facts)
            await _audited(gate, context, facts, inner_uw(request, context))

        return grpc.unary_stream_rpc_method_handler(unary_stream_writer, None, serialize)
    if handler.unary_stream:
        inner_us = handler.unary_stream

        async def unary_stream(raw: bytes, context: Context) -> AsyncIterator[Any]:
            facts = gate.facts(method, "server_stream")
            request = await _admitted(gate, method, raw, decode, context, facts)
            async for response in _audited_stream(gate, context, facts, inner_us(request, context)):
                yield response

        return grpc.unary_stream_rpc_method_handler(unary_stream, None, serialize)
    if handler.stream_unary:
        inner_su = handler.stream_unary

        async def stream_unary(requests: AsyncIterator[bytes], context: Context) -> Any:
            facts = gate.facts(method, "client_stream")
            checked = await _admit_stream(gate, method, requests, decode, context, facts)
            return await _audited(gate, context, facts, inner_su(checked, context))

        return grpc.stream_unary_rpc_method_handler(stream_unary, None, serialize)
    inner_ss = handler.stream_stream

    async def stream_stream(requests: AsyncIterator[bytes], context: Context) -> AsyncIterator[Any]:
        facts = gate.facts(method, "bidi_stream")
        checked = await _admit_stream(gate, method, requests, decode, context, facts)
        async for response in _audited_stream(gate, context, facts, inner_ss(checked, context)):
            yield response

    return grpc.stream_stream_rpc_method_handler(stream_stream, None, serialize)


def _raw(raw: bytes) -> bytes:
    return raw


async def _audited_stream(
    gate: AccessInterceptor, context: Context, facts: CallFacts, responses: AsyncIterator[Any]
) -> AsyncIterator[Any]:
    """A response stream: its entry is written when it ends (the audit trail was checked writable first); a
    streamed provision's part entries before their responses are sent (`_audit_part`)."""
    unwritten = False
    try:
        async for response in responses:
            _add_streamed(facts, response)
            if not _audit_part(gate, facts, response):
                unwritten = True
                break
            yield response
    except DomainError as err:
        await _refused_by_handler(gate, context, facts, err)
    except grpc.aio.AbortError as exc:
        _ended(gate, context, facts, exc)
        raise
    except Exception as exc:
        await _failed(gate, context, facts, exc)
    except BaseException as exc:
        _ended(gate, context, facts, exc)
        raise
    if unwritten:  # a part entry failed: the stream ends UNAVAILABLE, that part's results unsent
        await _refuse(gate, context, facts, AUDIT_DOWN)
    if context.cancelled():
        facts.outcome = "CANCELLED"
    if not gate.audit(facts) and facts.method not in NO_DATA_METHODS:
        await _deny(context, AUDIT_DOWN)


def _add_streamed(facts: CallFacts, response: Any) -> None:
    if "record" in response.DESCRIPTOR.fields_by_name and response.HasField("record"):
        facts.add_view(response.record)
    elif not is_chunk(response):  # a chunk's results are counted by its part entry (take_part)
        facts.count += 1


def _audit_part(gate: AccessInterceptor, facts: CallFacts, response: Any) -> bool:
    """A streamed provision (BatchProvide) in parts: a chunk's entry — its subjects, items and count — is
    written before the chunk is sent, as is one for every MAX_SUBJECTS subjects of results sent one a
    message, so the call's facts stay bounded; the call's own entry follows when the stream ends. False
    when the part's entry could not be written (nothing of it may be sent)."""
    if not facts.part_due(response):
        return True
    part = facts.take_part(response)
    if gate.auditor is not None:
        try:
            gate.auditor.record(part)
        except Exception as exc:  # AuditFailure, or a fault in writing the entry: the stream fails closed
            if not isinstance(exc, AuditFailure):
                log.error("audit part entry not written", extra={"error_type": type(exc).__name__})
            facts.part_unwritten(part, response)
            return False
    facts.part_written(part, response)
    return True


async def _admit_stream(
    gate: AccessInterceptor,
    method: str,
    requests: AsyncIterator[bytes],
    decode: Decode,
    context: Context,
    facts: CallFacts,
) -> AsyncIterator[Any]:
    """Admit a client stream: identity and role before reading anything; then, when the messages carry a
    purpose, the first message's purpose. The stream handed on decodes each message (undecodable:
    INVALID_ARGUMENT naming its index) and records what its messages concern."""
    iterator = requests.__aiter__()
    first: Any = None
    try:
        denial = gate.admit(method, context, facts)
        if denial is None and method in gate.with_purpose:
            try:
                first = _decode(decode, await iterator.__anext__(), "requests[0]")
            except StopAsyncIteration:
                first = None
            facts.add_request(first)
            denial = gate.authorize(method, _NoPurpose() if first is None else first, facts)
    except DomainError as err:
        await _refused_by_handler(gate, context, facts, err)
    except Exception as exc:
        await _failed(gate, context, facts, exc)
    await _clear_to_run(gate, method, context, facts, denial)

    async def replay() -> AsyncIterator[Any]:
        index = 0
        if first is not None:
            index = 1
            yield first
        async for raw in iterator:
            item = _decode(decode, raw, f"requests[{index}]")
            index += 1
            facts.add_request(item)
            yield item

    return replay()


class _NoPurpose:
    purpose = ""


def _unknown_method_handler(gate: AccessInterceptor, method: str) -> Handler:
    """Unknown methods: an unidentified caller learns only UNAUTHENTICATED, others PERMISSION_DENIED."""

    async def refuse(request: bytes, context: Context) -> NoReturn:
        facts = gate.facts("/unknown/unknown", "unary")
        facts.method = bounded_method(method)
        who = gate.identities.identify(context.auth_context())
        if isinstance(who, Refusal):
            await _refuse(gate, context, facts, (grpc.StatusCode.UNAUTHENTICATED, who.message))
        facts.caller = who
        await _refuse(gate, context, facts, (grpc.StatusCode.PERMISSION_DENIED, "unknown method"))

    return grpc.unary_unary_rpc_method_handler(refuse)
