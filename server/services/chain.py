"""The interceptor chain every call passes, in a fixed order: identity → authorization → handler.

(Audit and metrics join the chain, in that order after authorization, in their own issues.)
A refused call is answered before any handler runs, with a status and no payload.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from server.identity.peers import PeerIdentities, Refusal
from server.identity.pki import SpiffeId
from server.identity.policy import Decision, Policy
from server.services.status import status_metadata

caller_var: contextvars.ContextVar[SpiffeId] = contextvars.ContextVar("juki_caller")

Denial = tuple[grpc.StatusCode, str]
# grpc's handler and context types are loose at this level (sync and aio share RpcMethodHandler).
Handler = Any
Context = Any


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
    """Identity (SPIFFE ID, revocation) then authorization (policy: role, method, purpose)."""

    def __init__(self, identities: PeerIdentities, policy: Policy, with_purpose: frozenset[str]) -> None:
        self.identities = identities
        self.policy = policy
        self._with_purpose = with_purpose
        self._wrapped: dict[str, Handler] = {}

    def set_policy(self, policy: Policy) -> None:
        self.policy = policy

    def admit(self, method: str, request: Any, context: Context) -> Denial | None:
        """Identity then authorization of one call; `request` None checks the role only (streams, first)."""
        who = self.identities.identify(context.auth_context())
        if isinstance(who, Refusal):
            return grpc.StatusCode.UNAUTHENTICATED, who.message
        purpose = request.purpose if request is not None and method in self._with_purpose else None
        decision = self.policy.check(who, method, purpose)
        if decision != Decision.ALLOW:
            return grpc.StatusCode.PERMISSION_DENIED, decision
        caller_var.set(who)
        return None

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


def _wrap(gate: AccessInterceptor, method: str, handler: Handler) -> Handler:
    if handler.unary_unary:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: Context) -> Any:
            denial = gate.admit(method, request, context)
            if denial:
                await _deny(context, denial)
            return await inner_uu(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, handler.request_deserializer, handler.response_serializer
        )
    if handler.unary_stream:
        inner_us = handler.unary_stream

        async def unary_stream(request: Any, context: Context) -> AsyncIterator[Any]:
            denial = gate.admit(method, request, context)
            if denial:
                await _deny(context, denial)
            async for response in inner_us(request, context):
                yield response

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, handler.request_deserializer, handler.response_serializer
        )
    if handler.stream_unary:
        inner_su = handler.stream_unary

        async def stream_unary(requests: AsyncIterator[Any], context: Context) -> Any:
            first = await _admit_stream(gate, method, requests, context)
            return await inner_su(first, context)

        return grpc.stream_unary_rpc_method_handler(
            stream_unary, handler.request_deserializer, handler.response_serializer
        )
    inner_ss = handler.stream_stream

    async def stream_stream(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
        checked = await _admit_stream(gate, method, requests, context)
        async for response in inner_ss(checked, context):
            yield response

    return grpc.stream_stream_rpc_method_handler(
        stream_stream, handler.request_deserializer, handler.response_serializer
    )


async def _admit_stream(
    gate: AccessInterceptor,
    method: str,
    requests: AsyncIterator[Any],
    context: Context,
) -> AsyncIterator[Any]:
    """Admit a client stream: identity and role before reading anything; then, when the messages carry a
    purpose, the first message's purpose."""
    denial = gate.admit(method, None, context)
    if denial:
        await _deny(context, denial)
    if method not in gate._with_purpose:
        return requests
    iterator = requests.__aiter__()
    try:
        first = await iterator.__anext__()
    except StopAsyncIteration:
        first = None
    refused = gate.admit(method, _NoPurpose() if first is None else first, context)
    if refused:
        await _deny(context, refused)

    async def replay() -> AsyncIterator[Any]:
        if first is not None:
            yield first
        async for item in iterator:
            yield item

    return replay()


class _NoPurpose:
    purpose = ""


def _unknown_method_handler(gate: AccessInterceptor, method: str) -> Handler:
    """Unknown methods: an unidentified caller learns only UNAUTHENTICATED, others PERMISSION_DENIED."""

    async def refuse(request: bytes, context: Context) -> bytes:
        who = gate.identities.identify(context.auth_context())
        if isinstance(who, Refusal):
            await _deny(context, (grpc.StatusCode.UNAUTHENTICATED, who.message))
        await _deny(context, (grpc.StatusCode.PERMISSION_DENIED, "unknown method"))
        return b""

    return grpc.unary_unary_rpc_method_handler(refuse)
