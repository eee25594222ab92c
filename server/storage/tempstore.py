"""The 附票 server's temporary area (一時保存領域, SPEC §5.3 and §6.4).

The 附票 server never stores a My Number. When an agency or department asks for a 附票 record with the
person's My Number, the number fetched from the prefectural server is kept only here, keyed by the request
id, so that a recipient who failed to receive can ask again (`Redeliver`) within a short TTL. Request ids
are the callers' own: the 附票 server holds each under `caller_slot(owner, request_id)`, so one caller's id
never collides with, or tells anything about, another's. `AckDelivery` or the end of the TTL erases the
entry so that it cannot be recovered.

Where: an LMDB environment of its own, in a directory of its own (0700), never the 附票 database's and never
joined with it. The directory carries the `TEMPSTORE` marker (`server.backup.archive.mark_tempstore`), so
no backup ever includes it; a directory that already holds another LMDB environment is refused.

Why nothing can be recovered, even from a copy of the files:

- Every entry is sealed with AES-256-GCM under its own random 256-bit key, with the request id and the
  owner (the SPIFFE ID of the agency or department that asked) as associated data.
- The per-entry keys exist only in this process's memory (request id → key), never on disk, in a log, a
  metric or a backup. Erasing an entry deletes its LMDB record and destroys its key: the key's buffer is
  overwritten in place, then dropped.
- So a copy of the directory — a stray backup, a stolen disk, a snapshot taken while an entry was held —
  holds only ciphertext under keys that no longer exist anywhere.
- LMDB is copy-on-write: a deleted record's page goes on LMDB's free list and its old bytes can stay in
  `data.mdb` until the page is reused. Overwriting the value before deleting it would not help (the
  overwrite lands on a new page too). It does not matter: those bytes are useless without the key.
- The same holds for this process: after a restart no entry can be decrypted, because its key died with
  the process. Opening the area therefore erases every entry found on disk, counted with cause "restart".
  A graceful shutdown calls `erase_all("shutdown")` before `close()`; `close()` alone destroys the keys and
  leaves the (now undecryptable) records for the next start to erase.

Limits: Python cannot promise that no copy of a key ever existed elsewhere in memory. This module keeps
keys in `bytearray`s read straight from the kernel's random source and hands those buffers to
`cryptography`, whose OpenSSL contexts are cleansed when freed; deploy with encrypted (or no) swap and core
dumps disabled, as for any key-holding process.

Lifetime: an entry is live from `put` until `put` time + TTL (by the injected clock). Whoever first notices
that it has expired — `get`, `ack`, `put` of the same id, `expire()` or the `run_expiry` loop — destroys
its key; the record itself is deleted by the next `expire()` sweep. Every erasure is logged (counts only,
never a payload) and counted in `juki_tempstore_erasures{cause}` when its key is destroyed: "ack", "ttl",
"restart" or "shutdown". `juki_tempstore_entries` is the number of keys held.

Concurrency: the keys are guarded by one lock, held only for dictionary work. Writes go through the
environment's write transactions (`LmdbEnv.write_sync` on the caller's thread, `LmdbEnv.write` on its
writer thread). The nonce in memory is the entry's identity: a record is deleted only when it is not the
record of the entry currently held under its id, so racing calls never remove each other's entries.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
from cryptography.exceptions import InvalidTag

from server.backup.archive import is_tempstore, mark_tempstore
from server.observability.metrics import TEMPSTORE_ENTRIES, TEMPSTORE_ERASURES
from server.storage.lmdbenv import LmdbEnv
from server.tempstore import entry
from server.tempstore.entry import MalformedEntry, SealedEntry

log = logging.getLogger(__name__)

DB_NAME = "entries"
DEFAULT_TTL = 300.0
DEFAULT_MAP_SIZE = 16 << 20  # grows on demand (LmdbEnv); entries are small and short-lived
MAX_PAYLOAD = 1 << 20
CAUSES = ("ack", "ttl", "restart", "shutdown")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class TempStoreError(Exception):
    """A temporary-area call that cannot be served. Messages name at most the request id."""


class AlreadyHeld(TempStoreError):
    """The request id is held by a live entry (→ ALREADY_EXISTS)."""


class NotHeld(TempStoreError):
    """No live entry under the request id: unknown, expired or acknowledged (→ NOT_FOUND)."""


class WrongOwner(TempStoreError):
    """The entry belongs to another caller (→ PERMISSION_DENIED); nothing of it is revealed."""


def caller_slot(owner: str, request_id: str) -> str:
    """The id under which `owner`'s request `request_id` is held: request ids are the callers' own, so each
    caller has its own space of them — another caller's id is simply not held (no collision, no oracle)."""
    digest = hashlib.sha256(owner.encode("utf-8") + b"\x00" + request_id.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def check_request_id(request_id: str) -> str:
    """The request id, if it is 1–64 of [A-Za-z0-9._:-]; ValueError otherwise."""
    if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
        raise ValueError("a request id is 1 to 64 characters of A-Z a-z 0-9 . _ : -")
    return request_id


@dataclass(eq=False)
class _Held:
    """An entry as this process knows it: whose it is, until when, and the only copy of its key."""

    owner: str
    nonce: bytes
    expires_at: float
    key: bytearray


class TempStore:
    """A separate LMDB environment in its own directory (never the 附票 database's), entries keyed by
    request id, each sealed under its own key held only in memory (see the module docstring)."""

    def __init__(
        self,
        directory: Path,
        *,
        ttl: float = DEFAULT_TTL,
        now: Callable[[], float] = time.time,
        map_size: int = DEFAULT_MAP_SIZE,
    ) -> None:
        if not ttl > 0:
            raise ValueError("the TTL must be positive")
        self.directory = directory
        self.ttl = ttl
        self._now = now
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}
        self._closed = False
        _prepare_directory(directory)
        self.env = LmdbEnv(directory, (DB_NAME,), map_size=map_size)
        try:
            self._db: Any = self.env.dbs[DB_NAME]
            _restrict_files(directory)
            # Keys die with the process that made them: whatever is on disk now cannot be decrypted.
            found = self.env.write_sync(self._drop_everything)
        except BaseException:
            self.env.close()
            raise
        self._update_gauge()
        if found:
            TEMPSTORE_ERASURES.labels(cause="restart").inc(found)
            log.info(
                "temporary area: entries erased",
                extra={"cause": "restart", "entries": found, "records_deleted": found},
            )

    # --- the calls ------------------------------------------------------------------------------------

    def put(self, request_id: str, owner: str, payload: bytes) -> None:
        """Hold `payload` for `owner` under `request_id` until acknowledged or its TTL ends.

        AlreadyHeld (a TempStoreError) when the request id is held by a live entry."""
        held, value = self._admit(request_id, owner, payload)
        try:
            self.env.write_sync(lambda txn: txn.put(request_id.encode("ascii"), value, db=self._db))
        except BaseException:
            self._forget(request_id, held, cause=None)
            raise

    async def put_async(self, request_id: str, owner: str, payload: bytes) -> None:
        """`put`, with its durable write on the environment's writer thread (for the event loop)."""
        held, value = self._admit(request_id, owner, payload)
        try:
            await self.env.write(lambda txn: txn.put(request_id.encode("ascii"), value, db=self._db))
        except BaseException:
            self._forget(request_id, held, cause=None)
            raise

    def get(self, request_id: str, owner: str) -> bytes:
        """The payload, for its owner while it is live.

        NotHeld when unknown, expired or acknowledged; WrongOwner when another caller asks. The owner is
        compared (in memory and with the record on disk) before anything is decrypted."""
        check_request_id(request_id)
        self._check_open()
        held = self._live(request_id, owner)
        with self.env.read() as txn:
            raw = txn.get(request_id.encode("ascii"), db=self._db)
        if raw is None:
            raise NotHeld(f"request {request_id} is not held")
        try:
            sealed = SealedEntry.decode(raw)
        except MalformedEntry:
            raise TempStoreError(f"the entry for request {request_id} is unreadable") from None
        if sealed.owner != owner:
            raise WrongOwner(f"request {request_id} belongs to another caller")
        if sealed.nonce != held.nonce:  # not (yet, or no longer) the record of the entry held
            raise NotHeld(f"request {request_id} is not held")
        with self._lock:
            if self._held.get(request_id) is not held:
                raise NotHeld(f"request {request_id} is not held")
            # Under the lock, so that an erasure cannot overwrite the key halfway through.
            try:
                return entry.unseal(held.key, request_id, sealed)
            except InvalidTag:
                raise TempStoreError(f"the entry for request {request_id} fails authentication") from None

    def ack(self, request_id: str, owner: str) -> None:
        """Erase the entry now (its owner only): WrongOwner for another caller, NotHeld if already gone."""
        self._release(request_id, owner)
        deleted = False
        try:
            deleted = self.env.write_sync(lambda txn: self._delete_record(txn, request_id))
        except lmdb.Error:  # the key is gone, so the entry is; its record waits for the next sweep
            log.exception("temporary area: record of an acknowledged entry not deleted; left to the sweep")
        self._log_erasure("ack", 1, int(deleted))

    async def ack_async(self, request_id: str, owner: str) -> None:
        """`ack`, with its write on the environment's writer thread (for the event loop)."""
        self._release(request_id, owner)
        deleted = False
        try:
            deleted = await self.env.write(lambda txn: self._delete_record(txn, request_id))
        except lmdb.Error:
            log.exception("temporary area: record of an acknowledged entry not deleted; left to the sweep")
        self._log_erasure("ack", 1, int(deleted))

    def expire(self) -> int:
        """Erase every entry past its TTL (counted as "ttl") and every record without a key; returns how
        many entries this call erased."""
        self._check_open()
        erased = self._forget_expired()
        swept = self.env.write_sync(self._sweep)
        self._log_erasure("ttl", erased, swept)
        return erased

    async def expire_async(self) -> int:
        """`expire`, with its write on the environment's writer thread."""
        self._check_open()
        erased = self._forget_expired()
        swept = await self.env.write(self._sweep)
        self._log_erasure("ttl", erased, swept)
        return erased

    def erase_all(self, cause: str) -> int:
        """Erase every entry, counted under `cause` (one of CAUSES, e.g. "shutdown"); returns how many."""
        if cause not in CAUSES:
            raise ValueError(f"an erasure cause is one of {', '.join(CAUSES)}")
        self._check_open()
        with self._lock:
            erased = len(self._held)
            for request_id, held in list(self._held.items()):
                self._forget_locked(request_id, held, cause)
        swept = self.env.write_sync(self._sweep)
        self._log_erasure(cause, erased, swept)
        return erased

    def entries(self) -> int:
        """Entries held (their keys in memory), including expired ones not yet noticed."""
        with self._lock:
            return len(self._held)

    async def run_expiry(self, *, every: float, stop: asyncio.Event) -> None:
        """The server's expiry loop: `expire` every `every` seconds until `stop` is set, its LMDB writes on
        the environment's writer thread. A failed run raises: the server's supervisor logs, counts and
        restarts the loop (`server.supervision`)."""
        if not every > 0:
            raise ValueError("the expiry interval must be positive")
        while not stop.is_set():
            await self.expire_async()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    def close(self) -> None:
        """Destroy every key and close the environment. Records left behind cannot be decrypted by anyone
        and are erased (as "restart") when the area is next opened; call `erase_all("shutdown")` first on
        a graceful shutdown."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for held in self._held.values():
                entry.wipe(held.key)
            self._held.clear()
            self._update_gauge()
        self.env.close()

    # --- keys in memory -------------------------------------------------------------------------------

    def _admit(self, request_id: str, owner: str, payload: bytes) -> tuple[_Held, bytes]:
        """Seal a new entry and hold its key; the encoded record to write."""
        check_request_id(request_id)
        _check_owner(owner)
        if not isinstance(payload, bytes):
            raise TypeError("the payload is bytes")
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"a payload is at most {MAX_PAYLOAD} bytes")
        self._check_open()
        key = entry.new_key()
        sealed = entry.seal(key, request_id, owner, payload)
        now = self._now()
        held = _Held(owner=owner, nonce=sealed.nonce, expires_at=now + self.ttl, key=key)
        with self._lock:
            current = self._held.get(request_id)
            if current is not None:
                if now < current.expires_at:
                    entry.wipe(key)
                    raise AlreadyHeld(f"request {request_id} is already held")
                self._forget_locked(request_id, current, "ttl")
                self._log_erasure("ttl", 1, 0)  # its record is overwritten by this entry's
            # Held before the record is written: a record on disk always has its key in memory, so the
            # sweep can never take a new entry's record for a leftover.
            self._held[request_id] = held
            self._update_gauge()
        return held, sealed.encode()

    def _live(self, request_id: str, owner: str) -> _Held:
        """The live entry under `request_id` for `owner`; an expired one has its key destroyed on sight."""
        now = self._now()
        with self._lock:
            held = self._held.get(request_id)
            if held is None:
                raise NotHeld(f"request {request_id} is not held")
            if now >= held.expires_at:
                self._forget_locked(request_id, held, "ttl")
                self._log_erasure("ttl", 1, 0)  # its record goes at the next sweep
                raise NotHeld(f"request {request_id} is not held")
            if held.owner != owner:
                raise WrongOwner(f"request {request_id} belongs to another caller")
            return held

    def _release(self, request_id: str, owner: str) -> _Held:
        """Destroy the key of the live entry under `request_id` for `owner` (cause "ack")."""
        check_request_id(request_id)
        self._check_open()
        held = self._live(request_id, owner)
        if not self._forget(request_id, held, cause="ack"):
            raise NotHeld(f"request {request_id} is not held")
        return held

    def _forget_expired(self) -> int:
        now = self._now()
        with self._lock:
            expired = [(rid, held) for rid, held in self._held.items() if now >= held.expires_at]
            for request_id, held in expired:
                self._forget_locked(request_id, held, "ttl")
        return len(expired)

    def _forget(self, request_id: str, held: _Held, cause: str | None) -> bool:
        with self._lock:
            return self._forget_locked(request_id, held, cause)

    def _forget_locked(self, request_id: str, held: _Held, cause: str | None) -> bool:
        """Destroy the key of `held` if it is still the entry under `request_id`; count it under `cause`
        (None: an entry that never came to be, e.g. a put whose write failed). Caller holds the lock."""
        if self._held.get(request_id) is not held:
            return False
        del self._held[request_id]
        entry.wipe(held.key)
        if cause is not None:
            TEMPSTORE_ERASURES.labels(cause=cause).inc()
        self._update_gauge()
        return True

    def _update_gauge(self) -> None:
        TEMPSTORE_ENTRIES.set(len(self._held))

    # --- records on disk ------------------------------------------------------------------------------

    def _drop_everything(self, txn: Any) -> int:
        found = int(txn.stat(self._db)["entries"])
        if found:
            txn.drop(self._db, delete=False)
        return found

    def _delete_record(self, txn: Any, request_id: str) -> bool:
        """Delete the record under `request_id` unless it belongs to a newer entry held under that id."""
        key = request_id.encode("ascii")
        raw = txn.get(key, db=self._db)
        if raw is None or self._is_held_record(request_id, raw):
            return False
        return bool(txn.delete(key, db=self._db))

    def _sweep(self, txn: Any) -> int:
        """Delete every record whose key is no longer held; how many. Runs inside a write transaction, so
        every record it sees was written after its key was put in memory."""
        leftovers = [
            key for key, raw in txn.cursor(db=self._db) if not self._is_held_record(key.decode(), raw)
        ]
        for key in leftovers:
            txn.delete(key, db=self._db)
        return len(leftovers)

    def _is_held_record(self, request_id: str, raw: bytes) -> bool:
        try:
            nonce = SealedEntry.decode(raw).nonce
        except MalformedEntry:
            return False
        with self._lock:
            held = self._held.get(request_id)
            return held is not None and held.nonce == nonce

    def _check_open(self) -> None:
        if self._closed:
            raise TempStoreError("the temporary area is closed")

    def _log_erasure(self, cause: str, erased: int, swept: int) -> None:
        """One line per erasure or sweep (SPEC §6.4): the cause and counts, never a request id or owner.
        `erased`: keys destroyed; `swept`: records deleted."""
        if erased or swept:
            log.info(
                "temporary area: entries erased",
                extra={"cause": cause, "entries": erased, "records_deleted": swept},
            )


def _check_owner(owner: str) -> None:
    if not isinstance(owner, str) or not entry.valid_owner(owner):
        raise ValueError("an owner is a caller identity of 1 to 2048 bytes")


def _prepare_directory(directory: Path) -> None:
    """Create the area's directory 0700 and mark it as never to be backed up; refuse a directory holding
    another LMDB environment (the 附票 database must never become, or be marked as, the temporary area)."""
    if (directory / "data.mdb").exists() and not is_tempstore(directory):
        raise TempStoreError(f"{directory} holds an LMDB environment that is not a temporary area")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    mark_tempstore(directory)


def _restrict_files(directory: Path) -> None:
    for name in ("data.mdb", "lock.mdb"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(directory / name, 0o600)
