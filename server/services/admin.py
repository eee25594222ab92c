"""The `Admin` servicer: operator registry, approvals, statistics, the audit trail's Merkle proofs. Thin:
rules live in domain.operators, proofs in audit.proofs."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from juki.v1 import admin_pb2, admin_pb2_grpc

from server.audit import proofs
from server.audit.entries import WORKER_TRAIL_RE
from server.domain import operators
from server.domain.errors import DomainError, ErrorKind, Violations
from server.domain.limits import check_message
from server.domain.validation import checked_month
from server.identity.policy import Policy
from server.services.chain import current_caller
from server.storage.registry import Registry

Context = grpc.aio.ServicerContext[Any, Any]
Statistics = Callable[[str], Awaitable[admin_pb2.StatisticsResponse]]  # off the event loop


class AdminService(admin_pb2_grpc.AdminServicer):
    def __init__(
        self,
        registry: Registry,
        policy: Callable[[], Policy],
        statistics: Statistics,
        *,
        now: Callable[[], dt.datetime],
        audit_dir: Path | None = None,
    ) -> None:
        self._audit_dir = audit_dir
        self._registry = registry
        self._policy = policy
        self._statistics = statistics
        self._now = now

    async def RegisterOperator(
        self, request: admin_pb2.RegisterOperatorRequest, context: Context
    ) -> admin_pb2.OperatorEntry:
        entry = operators.registration(request, self._policy(), admin=current_caller(), now=self._now())
        await self._registry.register(entry)
        return entry

    async def RevokeOperator(
        self, request: admin_pb2.RevokeOperatorRequest, context: Context
    ) -> admin_pb2.OperatorEntry:
        operators.check_revocation(request)
        admin, now = current_caller(), self._now()

        return await self._registry.update_operator(
            request.operator_id,
            lambda current: operators.revoked(current, request.reason, admin=admin, now=now),
        )

    async def ListOperators(
        self, request: admin_pb2.ListOperatorsRequest, context: Context
    ) -> admin_pb2.ListOperatorsResponse:
        return admin_pb2.ListOperatorsResponse(
            operators=self._registry.operators(), exported_at=self._now().isoformat(timespec="seconds")
        )

    async def IssueApproval(
        self, request: admin_pb2.IssueApprovalRequest, context: Context
    ) -> admin_pb2.Approval:
        token, approval = operators.approval(
            request, self._policy(), now=self._now(), trust_domain=current_caller().trust_domain
        )
        await self._registry.add_approval(token, approval)
        return approval

    async def Statistics(
        self, request: admin_pb2.StatisticsRequest, context: Context
    ) -> admin_pb2.StatisticsResponse:
        month = checked_month(request)
        return await self._statistics(month)

    def _trail(self, name: str, violations: Violations) -> Path:
        if self._audit_dir is None:
            raise DomainError(ErrorKind.FAILED_PRECONDITION, "this server keeps no audit trail", "NO_TRAIL")
        if name and not WORKER_TRAIL_RE.match(name):
            violations.add("trail", '"" for the main trail, or a worker trail "w1", "w2", …')
        return self._audit_dir / name if name else self._audit_dir

    async def InclusionProof(
        self, request: admin_pb2.InclusionProofRequest, context: Context
    ) -> admin_pb2.InclusionProofResponse:
        violations = Violations()
        check_message(violations, request)
        directory = self._trail(request.trail, violations)
        if request.seq == 0:
            violations.add("seq", "the entry's seq, from 1")
        if request.tree_size and request.tree_size < request.seq:
            violations.add("tree_size", "a checkpointed size at or after seq (0: the newest checkpoint)")
        violations.raise_if_any()
        try:
            proof = await asyncio.to_thread(proofs.inclusion, directory, request.seq, request.tree_size)
        except proofs.NoProof as e:
            raise DomainError(ErrorKind.NOT_FOUND, str(e), "NO_PROOF") from None
        return admin_pb2.InclusionProofResponse(
            leaf_index=proof.index,
            tree_size=proof.size,
            hashes=proof.hashes,
            entry=proof.entry.decode(),
            checkpoint=proof.checkpoint,
        )

    async def ConsistencyProof(
        self, request: admin_pb2.ConsistencyProofRequest, context: Context
    ) -> admin_pb2.ConsistencyProofResponse:
        violations = Violations()
        check_message(violations, request)
        directory = self._trail(request.trail, violations)
        if request.second and request.first > request.second:
            violations.add("first", "at most second (0 for second: the newest checkpoint)")
        violations.raise_if_any()
        try:
            proof = await asyncio.to_thread(proofs.consistency, directory, request.first, request.second)
        except proofs.NoProof as e:
            raise DomainError(ErrorKind.NOT_FOUND, str(e), "NO_PROOF") from None
        return admin_pb2.ConsistencyProofResponse(
            first=proof.first,
            second=proof.second,
            hashes=proof.hashes,
            first_checkpoint=proof.first_checkpoint,
            second_checkpoint=proof.second_checkpoint,
        )
