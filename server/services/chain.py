"""The interceptor chain every call passes, in four steps: identity → authorization (then the caller's rate
limit) → audit → metrics, around the handler.

1. Identity (`Identity`): the SPIFFE ID of the client certificate (expiry and revocation re-checked per
   call); an operator must also be registered and not revoked.
2. Authorization (`Authorization`): the policy's grant of the method to the caller, before a byte of the
   request is decoded; then the purpose the decoded request states; an operator only within its
   registration. grpc hands the chain each request as raw bytes (the wrapped handlers have no request
   deserializer), so nothing a caller sends is decoded before the caller is identified and granted the
   method (undecodable bytes: INVALID_ARGUMENT with a BadRequest violation, for each message of a client
   stream too). A decoded request's unknown fields are discarded at every depth: nothing outside the
   schema goes further (SPEC §4.2). Then the caller's rate limit (server.services.rate_limits).
3. Audit (`Audit`): every call, allowed or refused, leaves one entry, filled by the readers the method
   declares (server.services.audited); when it cannot be written the call fails with UNAVAILABLE and
   returns no data (fail closed). A writing call's intent entry is made durable before its handler runs; a
   streamed provision (BatchProvide) also leaves a part entry for each chunk, written before the chunk is
   sent.
4. Metrics: counted when the entry is written.

Every step refuses by raising `Stop`. Every kind of RPC is wrapped by one of two shapes — answered by one
message, or by a stream — with its admission (one request, or a client stream); both shapes are begin →
admit → handler → answered, any exception → stopped, so a refusal cannot fall through to the handler. A
refused call is answered with a status and no payload. An unexpected exception is answered INTERNAL with a
generic message and an error id that the server's log line of the failure carries too: no class name, path
or traceback reaches a caller.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import secrets
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
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
from server.services.audited import Audited, audited_for
from server.services.call_facts import PROVISION_METHODS, CallFacts, bounded_method
from server.services.rate_limits import RATE_LIMITED_MESSAGE, RateLimiter, rate_limited_metadata
from server.services.status import CODES, INTERNAL_MESSAGE, internal_metadata, status_metadata
from server.storage.errors import is_storage_error

log = logging.getLogger(__name__)

caller_var: contextvars.ContextVar[SpiffeId] = contextvars.ContextVar("juki_caller")
facts_var: contextvars.ContextVar[CallFacts] = contextvars.ContextVar("juki_call_facts")

# grpc's handler and context types are loose at this level (sync and aio share RpcMethodHandler).
Handler = Any
Context = Any
OperatorLookup = Callable[[str], admin_pb2.OperatorEntry | None]
Decode = Callable[[bytes], Any]
AUDIT_DOWN: tuple[grpc.StatusCode, str] = (
    grpc.StatusCode.UNAVAILABLE,
    "audit trail unavailable; no data is served",
)
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
        "/grpc.health.v1.Health/List",
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


class Stop(Exception):
    """The end of a call before (or instead of) its answer: the status it gets. Raised by the steps; the
    wrapper of every call catches it, writes the call's entry and sends the status — so no step's refusal
    can fall through to the handler, whatever `context.abort` does."""

    def __init__(
        self, code: grpc.StatusCode, message: str, metadata: tuple[tuple[str, bytes], ...] = ()
    ) -> None:
        super().__init__(code.name)
        self.code = code
        self.message = message
        self.metadata = metadata or status_metadata(code, message)


@dataclass(frozen=True, slots=True)
class Method:
    """What the chain knows of one served method, worked out once when it is first called."""

    name: str
    decode: Decode
    audited: Audited
    meter: MethodMetrics
    with_purpose: bool  # its requests state a purpose, which the policy checks
    writes: bool  # WRITING_METHODS: a durable intent entry first
    no_data: bool  # NO_DATA_METHODS: answers while the trail is down
    in_parts: bool = False  # a streamed provision: audited in parts (Audit.part) as well as as a whole


class Identity:
    """Step 1: who calls — the SPIFFE ID of the client certificate (expiry and revocation re-checked per
    call); an operator must also be registered and not revoked."""

    def __init__(self, identities: PeerIdentities, operators: OperatorLookup | None) -> None:
        self.identities = identities
        self.operators = operators

    def establish(self, context: Context, facts: CallFacts) -> SpiffeId:
        who = self.identities.identify(context.auth_context())
        if isinstance(who, Refusal):
            facts.claimed, facts.serial = who.claimed, who.serial
            raise Stop(grpc.StatusCode.UNAUTHENTICATED, who.message)
        facts.caller = who
        # an unregistered (or revoked) operator is unknown: UNAUTHENTICATED whatever the method
        if (
            who.role == "operator"
            and self.operators is not None
            and operator_refusal(self.operators(who.id), None, None) is not None
        ):
            raise Stop(grpc.StatusCode.UNAUTHENTICATED, "operator not registered or revoked")
        return who


class Authorization:
    """Step 2: the policy's grant of the method to the caller's role (and id), then the purpose a request
    states; an operator works only within its registration (read per call: a revocation counts from the
    next call)."""

    def __init__(
        self, policy: Policy, with_purpose: frozenset[str], operators: OperatorLookup | None
    ) -> None:
        self.policy = policy
        self.with_purpose = with_purpose
        self.operators = operators

    def grant(self, method: Method, who: SpiffeId) -> None:
        """Before a byte of the request is decoded."""
        decision = self.policy.check(who, method.name, None)
        if decision != Decision.ALLOW:
            raise Stop(grpc.StatusCode.PERMISSION_DENIED, decision)
        if who.role == "operator":
            self._registration(who, method, None)

    def purpose(self, method: Method, who: SpiffeId, purpose: str) -> None:
        decision = self.policy.check(who, method.name, purpose)
        if decision != Decision.ALLOW:
            raise Stop(grpc.StatusCode.PERMISSION_DENIED, decision)
        if who.role == "operator":
            self._registration(who, method, purpose)

    def _registration(self, who: SpiffeId, method: Method, purpose: str | None) -> None:
        if self.operators is None:
            return
        refusal = operator_refusal(
            self.operators(who.id), method.name if method.with_purpose else None, purpose
        )
        if refusal is None:
            return
        code = (
            grpc.StatusCode.UNAUTHENTICATED if refusal.unauthenticated else grpc.StatusCode.PERMISSION_DENIED
        )
        raise Stop(code, refusal.message)


class Audit:
    """Step 3: every call's entry (fail closed: a call whose entry cannot be written returns no data), a
    writing call's durable intent entry before its handler runs."""

    def __init__(self, auditor: CallAuditor | None) -> None:
        self.auditor = auditor

    def ready(self) -> bool:
        return self.auditor is None or self.auditor.ready()

    def record(self, facts: CallFacts) -> bool:
        """False when the entry could not be written."""
        if self.auditor is None:
            return True
        try:
            self.auditor.record(facts)
        except AuditFailure:
            return False
        except Exception as exc:  # a fault in writing the entry fails the call closed, like a full disk
            log.error("audit entry not written", extra={"error_type": type(exc).__name__})
            return False
        return True

    def part(self, facts: CallFacts, response: Any) -> bool:
        """A streamed provision (BatchProvide) in parts: a chunk's entry — its subjects, items and count —
        is written before the chunk is sent, as is one for every MAX_SUBJECTS subjects of results sent one a
        message, so the call's facts stay bounded; the call's own entry follows when the stream ends. False
        when the part's entry could not be written (nothing of it may be sent)."""
        if not facts.part_due(response):
            return True
        part = facts.take_part(response)
        if self.auditor is not None:
            try:
                self.auditor.record(part)
            except Exception as exc:  # AuditFailure, or a fault in writing the entry: the stream fails closed
                if not isinstance(exc, AuditFailure):
                    log.error("audit part entry not written", extra={"error_type": type(exc).__name__})
                facts.part_unwritten(part, response)
                return False
        facts.part_written(part, response)
        return True

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


class AccessInterceptor(grpc.aio.ServerInterceptor):
    """The chain: identity → authorization (then the rate limit) → audit → metrics, around every call."""

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
        self.identity = Identity(identities, operators)
        self.authorization = Authorization(policy, with_purpose, operators)
        self.audit = Audit(auditor)
        self.on_storage_error = on_storage_error
        self.limiter = limiter
        self._wrapped: dict[str, Handler] = {}
        self._meters: dict[str, MethodMetrics] = {}

    @property
    def policy(self) -> Policy:
        return self.authorization.policy

    def set_policy(self, policy: Policy) -> None:
        self.authorization.policy = policy

    def meter(self, method: str, grpc_type: str) -> MethodMetrics:
        meter = self._meters.get(method)
        if meter is None:
            meter = self._meters[method] = MethodMetrics(method, grpc_type)
        return meter

    def method(self, name: str, handler: Handler, grpc_type: str) -> Method:
        return Method(
            name=name,
            decode=handler.request_deserializer or _raw,
            audited=audited_for(name),
            meter=self.meter(name, grpc_type),
            with_purpose=name in self.authorization.with_purpose,
            writes=name in WRITING_METHODS,
            no_data=name in NO_DATA_METHODS,
            in_parts=name in PROVISION_METHODS and grpc_type in ("server_stream", "bidi_stream"),
        )

    def begin(self, method: Method) -> CallFacts:
        """A new call: counted as started, timed from now."""
        method.meter.started.inc()
        facts = CallFacts(method.name, meter=method.meter)
        facts_var.set(facts)
        return facts

    def admit(self, method: Method, context: Context, facts: CallFacts) -> SpiffeId:
        """Steps 1 and 2 before anything is decoded: identity, the role's grant of the method."""
        who = self.identity.establish(context, facts)
        self.authorization.grant(method, who)
        caller_var.set(who)
        return who

    async def clear_to_run(self, method: Method, facts: CallFacts) -> None:
        """The last checks before a handler runs: the caller's rate limit; the trail writable (data
        methods); a writing call's intent entry made durable."""
        if self.limiter is not None and facts.caller is not None:
            wait = self.limiter.take(facts.caller)
            if wait is not None:
                code = grpc.StatusCode.RESOURCE_EXHAUSTED
                raise Stop(code, RATE_LIMITED_MESSAGE, rate_limited_metadata(wait))
        if not method.no_data and not self.audit.ready():
            raise Stop(*AUDIT_DOWN)
        if method.writes and not await self.audit.intent(facts):
            raise Stop(*AUDIT_DOWN)

    def finish(self, facts: CallFacts) -> bool:
        """Steps 3 and 4 at the end of a call: its entry, then its metrics; False when the entry could not be
        written (the call is then counted UNAVAILABLE)."""
        written = self.audit.record(facts)
        meter = facts.meter
        if meter is not None:
            purposes = self.authorization.policy.purposes
            purpose = facts.purpose if facts.purpose in purposes else "other"
            finish(meter, facts, facts.started, facts.outcome if written else "UNAVAILABLE", purpose)
        return written

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        name: str = handler_call_details.method
        wrapped = self._wrapped.get(name)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None:
            return _unknown_method_handler(self, name)
        wrapped = self._wrapped[name] = _wrap(self, name, handler)
        return wrapped


# how a call ends ----------------------------------------------------------------------------------------


async def _stopped(
    gate: AccessInterceptor, context: Context, facts: CallFacts, exc: BaseException
) -> NoReturn:
    """Every call that does not end with its answer ends here. A refusal, a domain error or an unexpected
    exception: the call's entry is written with its outcome, then the status is sent (UNAVAILABLE instead
    when the entry could not be written). A call ended by grpc itself (an abort already sent, a
    cancellation): its entry records how, and the exception goes on. Never returns."""
    stop = _as_stop(gate, facts, exc)
    if stop is None:
        if isinstance(exc, asyncio.CancelledError):
            facts.outcome = "CANCELLED"
        else:
            code = context.code()
            facts.outcome = str(code.name) if isinstance(code, grpc.StatusCode) else "UNKNOWN"
        if not gate.finish(facts):
            log.error("audit entry of a failed call could not be written")
        raise exc
    facts.outcome = stop.code.name
    code, message, metadata = stop.code, stop.message, stop.metadata
    if not gate.finish(facts):
        code, message = AUDIT_DOWN
        metadata = status_metadata(code, message)
    await context.abort(code, message, metadata)
    raise AssertionError("unreachable: context.abort raises")


def _as_stop(gate: AccessInterceptor, facts: CallFacts, exc: BaseException) -> Stop | None:
    """The status an exception ends its call with; None for an end grpc has already decided."""
    if isinstance(exc, Stop):
        return exc
    if isinstance(exc, DomainError):
        code = CODES[exc.kind]
        return Stop(code, exc.message, status_metadata(code, exc.message, exc))
    if isinstance(exc, grpc.aio.AbortError) or not isinstance(exc, Exception):
        return None
    # An unexpected exception: INTERNAL with a fresh error id; a failing store (an I/O error, a full map
    # that cannot grow) is UNAVAILABLE instead, a transient condition the caller may retry, and the
    # server's health says so. The log line names the exception's type and where it was raised, not its
    # message (which may hold a caller's data).
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
        return Stop(code, message, internal_metadata(error_id, code, message))
    return Stop(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE, internal_metadata(error_id))


async def _answered(gate: AccessInterceptor, method: Method, context: Context, facts: CallFacts) -> None:
    """A call that ran to its end: its entry, its metrics; the answer goes out only when the entry is
    written (a no-data method answers anyway)."""
    if context.cancelled():  # the client went away first (e.g. an idle stream it cancelled): not OK
        facts.outcome = "CANCELLED"
    if not gate.finish(facts) and not method.no_data:
        code, message = AUDIT_DOWN
        await context.abort(code, message, status_metadata(code, message))
        raise AssertionError("unreachable: context.abort raises")


# admission ----------------------------------------------------------------------------------------------


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


async def _admit_unary(
    gate: AccessInterceptor, method: Method, raw: bytes, context: Context, facts: CallFacts
) -> Any:
    """The decoded request of an admitted call: identity → grant → decode → purpose → clear to run. Every
    refusal raises (Stop, DomainError)."""
    try:
        who = gate.admit(method, context, facts)
    except Stop:
        if facts.caller is not None or facts.claimed is not None:
            # a refused known caller, or a certificate of our CA that is revoked or expired: the entry
            # names what the request concerned (the resident's disclosure lists refusals too)
            _concerned(method, facts, raw)
        raise
    request = _decode(method.decode, raw, "request")
    method.audited.on_request(facts, request)
    if method.with_purpose:
        gate.authorization.purpose(method, who, request.purpose)
    await gate.clear_to_run(method, facts)
    return request


def _concerned(method: Method, facts: CallFacts, raw: bytes) -> None:
    """What a call refused before decoding concerned, for its audit entry only (nothing answers from it)."""
    try:
        method.audited.on_request(facts, _decode(method.decode, raw, "request"))
    except Exception:  # undecodable: the entry records the refusal without a subject
        return


async def _admit_stream(
    gate: AccessInterceptor,
    method: Method,
    requests: AsyncIterator[bytes],
    context: Context,
    facts: CallFacts,
) -> AsyncIterator[Any]:
    """A client stream: identity and grant before reading anything; then, when the messages carry a
    purpose, the first message's purpose. The stream handed on decodes each message (undecodable:
    INVALID_ARGUMENT naming its index) and records what its messages concern."""
    who = gate.admit(method, context, facts)
    iterator = requests.__aiter__()
    first: Any = None
    if method.with_purpose:
        try:
            first = _decode(method.decode, await iterator.__anext__(), "requests[0]")
        except StopAsyncIteration:
            first = None
        if first is not None:
            method.audited.on_request(facts, first)
        gate.authorization.purpose(method, who, "" if first is None else first.purpose)
    await gate.clear_to_run(method, facts)

    async def replay() -> AsyncIterator[Any]:
        index = 0
        if first is not None:
            index = 1
            yield first
        async for raw in iterator:
            item = _decode(method.decode, raw, f"requests[{index}]")
            index += 1
            method.audited.on_request(facts, item)
            yield item

    return replay()


# the wrappers: two shapes, two admissions ----------------------------------------------------------------


def _wrap(gate: AccessInterceptor, name: str, handler: Handler) -> Handler:
    """The handler behind the chain: a shape (one answer, or a stream of them) with an admission (one
    request as bytes, or a stream of them: no deserializer, see the module)."""
    serialize = handler.response_serializer
    if handler.unary_unary:
        method = gate.method(name, handler, "unary")
        shape = _answering(gate, method, handler.unary_unary, _admit_unary)
        return grpc.unary_unary_rpc_method_handler(shape, None, serialize)
    if handler.unary_stream:
        method = gate.method(name, handler, "server_stream")
        if inspect.isasyncgenfunction(handler.unary_stream):
            shape = _streaming(gate, method, handler.unary_stream, _admit_unary)
        else:  # a response stream written with context.write (e.g. grpc.health.v1 Watch), not yielded
            shape = _answering(gate, method, handler.unary_stream, _admit_unary)
        return grpc.unary_stream_rpc_method_handler(shape, None, serialize)
    if handler.stream_unary:
        method = gate.method(name, handler, "client_stream")
        shape = _answering(gate, method, handler.stream_unary, _admit_stream)
        return grpc.stream_unary_rpc_method_handler(shape, None, serialize)
    method = gate.method(name, handler, "bidi_stream")
    shape = _streaming(gate, method, handler.stream_stream, _admit_stream)
    return grpc.stream_stream_rpc_method_handler(shape, None, serialize)


Admit = Callable[[AccessInterceptor, Method, Any, Context, CallFacts], Awaitable[Any]]


def _answering(gate: AccessInterceptor, method: Method, inner: Any, admit: Admit) -> Any:
    """A call answered by one message (or, for a writer, by what it wrote with context.write)."""

    async def call(request: Any, context: Context) -> Any:
        facts = gate.begin(method)
        try:
            response = await inner(await admit(gate, method, request, context, facts), context)
            method.audited.on_response(facts, response)
        except BaseException as exc:
            await _stopped(gate, context, facts, exc)
        await _answered(gate, method, context, facts)
        return response

    return call


def _streaming(gate: AccessInterceptor, method: Method, inner: Any, admit: Admit) -> Any:
    """A call answered by a stream of messages; a streamed provision's parts are audited before they go."""

    async def call(request: Any, context: Context) -> AsyncIterator[Any]:
        facts = gate.begin(method)
        try:
            async for response in inner(await admit(gate, method, request, context, facts), context):
                method.audited.on_response(facts, response)
                if method.in_parts and not gate.audit.part(facts, response):
                    raise Stop(*AUDIT_DOWN)  # that part's results unsent
                yield response
        except BaseException as exc:
            await _stopped(gate, context, facts, exc)
        await _answered(gate, method, context, facts)

    return call


def _raw(raw: bytes) -> bytes:
    return raw


def _unknown_method_handler(gate: AccessInterceptor, name: str) -> Handler:
    """Unknown methods: an unidentified caller learns only UNAUTHENTICATED, others PERMISSION_DENIED."""
    unknown = Method(
        name="/unknown/unknown",
        decode=_raw,
        audited=Audited(),
        meter=gate.meter("/unknown/unknown", "unary"),
        with_purpose=False,
        writes=False,
        no_data=True,
    )

    async def refuse(request: bytes, context: Context) -> NoReturn:
        facts = gate.begin(unknown)
        facts.method = bounded_method(name)
        try:
            gate.identity.establish(context, facts)
            raise Stop(grpc.StatusCode.PERMISSION_DENIED, "unknown method")
        except BaseException as exc:
            await _stopped(gate, context, facts, exc)

    return grpc.unary_unary_rpc_method_handler(refuse)
