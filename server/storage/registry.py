"""The operator registry and bulk-output approvals, kept in the server's own LMDB environment.

operators   operator id → OperatorEntry (revoked entries are kept: they are the inventory, 棚卸し)
approvals   SHA-256(token) → Approval (+ used flag); the token itself is never stored
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from juki.v1 import admin_pb2

from server.storage.lmdbenv import LmdbEnv

DB_NAMES = ("operators", "approvals")
_USED = b"U"
_FREE = b"F"


def _entry(raw: bytes) -> admin_pb2.OperatorEntry:
    entry = admin_pb2.OperatorEntry()
    entry.ParseFromString(raw)
    return entry


def _token_key(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Registry:
    """Its writes are domain operations run on the environment's single writer (LmdbEnv.write): services
    never see a transaction."""

    def __init__(self, env: LmdbEnv) -> None:
        self.env = env
        self._operators = env.dbs["operators"]
        self._approvals = env.dbs["approvals"]

    # operators -----------------------------------------------------------------------------------
    def operator(self, operator_id: str) -> admin_pb2.OperatorEntry | None:
        """The operator's entry, read now (so a revocation counts from the next call)."""
        with self.env.read() as txn:
            return self.get_operator(txn, operator_id)

    def operators(self) -> list[admin_pb2.OperatorEntry]:
        with self.env.read() as txn, txn.cursor(db=self._operators) as cur:
            return [_entry(raw) for _, raw in cur]

    def put_operator(self, txn: Any, entry: admin_pb2.OperatorEntry) -> None:
        txn.put(entry.operator_id.encode(), entry.SerializeToString(), db=self._operators)

    def get_operator(self, txn: Any, operator_id: str) -> admin_pb2.OperatorEntry | None:
        raw = txn.get(operator_id.encode(), db=self._operators)
        return None if raw is None else _entry(raw)

    async def register(self, entry: admin_pb2.OperatorEntry) -> None:
        await self.env.write(lambda txn: self.put_operator(txn, entry))

    def register_now(self, entry: admin_pb2.OperatorEntry) -> None:
        """`register` for offline bootstrap (no server running)."""
        self.env.write_sync(lambda txn: self.put_operator(txn, entry))

    async def update_operator(
        self,
        operator_id: str,
        change: Callable[[admin_pb2.OperatorEntry | None], admin_pb2.OperatorEntry],
    ) -> admin_pb2.OperatorEntry:
        """Replace the operator's entry by `change(current entry)` in one transaction (it may raise:
        nothing is written); the new entry."""

        def work(txn: Any) -> admin_pb2.OperatorEntry:
            entry = change(self.get_operator(txn, operator_id))
            self.put_operator(txn, entry)
            return entry

        return await self.env.write(work)

    # approvals -----------------------------------------------------------------------------------
    async def add_approval(self, token: str, approval: admin_pb2.Approval) -> None:
        await self.env.write(lambda txn: self.put_approval(txn, token, approval))

    async def consume_approval(self, token: str, check: Callable[[admin_pb2.Approval | None], None]) -> None:
        """Use the approval of `token` once: `check(the unused approval, or None)` raises to refuse it
        (nothing is written)."""

        def work(txn: Any) -> None:
            check(self.unused_approval(txn, token) if token else None)
            self.use_approval(txn, token)

        await self.env.write(work)

    def put_approval(self, txn: Any, token: str, approval: admin_pb2.Approval) -> None:
        stored = admin_pb2.Approval()
        stored.CopyFrom(approval)
        stored.token = ""
        txn.put(_token_key(token), _FREE + stored.SerializeToString(), db=self._approvals)

    def unused_approval(self, txn: Any, token: str) -> admin_pb2.Approval | None:
        """The approval of an unused token; None when unknown or used already."""
        raw = txn.get(_token_key(token), db=self._approvals)
        if raw is None or raw[:1] != _FREE:
            return None
        approval = admin_pb2.Approval()
        approval.ParseFromString(raw[1:])
        return approval

    def use_approval(self, txn: Any, token: str) -> None:
        key = _token_key(token)
        raw = txn.get(key, db=self._approvals)
        txn.put(key, _USED + raw[1:], db=self._approvals)
