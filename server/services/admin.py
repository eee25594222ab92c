"""The `Admin` servicer: operator registry, approvals, statistics. Thin: rules live in domain.operators."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from juki.v1 import admin_pb2, admin_pb2_grpc

from server.domain import operators
from server.domain.errors import DomainError, ErrorKind
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
    ) -> None:
        self._registry = registry
        self._policy = policy
        self._statistics = statistics
        self._now = now

    async def RegisterOperator(
        self, request: admin_pb2.RegisterOperatorRequest, context: Context
    ) -> admin_pb2.OperatorEntry:
        entry = operators.registration(request, self._policy(), admin=current_caller(), now=self._now())
        await self._registry.env.write(lambda txn: self._registry.put_operator(txn, entry))
        return entry

    async def RevokeOperator(
        self, request: admin_pb2.RevokeOperatorRequest, context: Context
    ) -> admin_pb2.OperatorEntry:
        operators.check_revocation(request)
        admin, now = current_caller(), self._now()

        def work(txn: Any) -> admin_pb2.OperatorEntry:
            entry = operators.revoked(
                self._registry.get_operator(txn, request.operator_id), request.reason, admin=admin, now=now
            )
            self._registry.put_operator(txn, entry)
            return entry

        return await self._registry.env.write(work)

    async def ListOperators(
        self, request: admin_pb2.ListOperatorsRequest, context: Context
    ) -> admin_pb2.ListOperatorsResponse:
        return admin_pb2.ListOperatorsResponse(
            operators=self._registry.operators(), exported_at=self._now().isoformat(timespec="seconds")
        )

    async def IssueApproval(
        self, request: admin_pb2.IssueApprovalRequest, context: Context
    ) -> admin_pb2.Approval:
        token, approval = operators.approval(request, self._policy(), now=self._now())
        await self._registry.env.write(lambda txn: self._registry.put_approval(txn, token, approval))
        return approval

    async def Statistics(
        self, request: admin_pb2.StatisticsRequest, context: Context
    ) -> admin_pb2.StatisticsResponse:
        month = request.month
        if len(month) != 7 or month[4] != "-" or not (month[:4] + month[5:]).isdigit():
            raise DomainError(ErrorKind.INVALID_ARGUMENT, "month: YYYY-MM", "INVALID_FIELDS")
        return await self._statistics(month)
