"""What every record file has in common (the prefectural and national resident files, the 附票 files).

A record file is one LMDB environment holding one kind of record, its history and the shared indexes
(4情報, municipality, removals: keyed by the record's 4情報 view, a ResidentRecord; every one written in the
transaction that writes the record, so an index never disagrees with the records), the sequences and applied
notices of its municipalities, the outbox (and set-aside changes) for the national server and counters.
Services reach it only through domain operations: reads in a read view (`reader`; a scan in a worker
thread), writes as one operation or as a rule applied in one durable transaction, always on the
environment's single writer thread (LmdbEnv). No raw transaction, environment or put leaves server/storage.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import struct
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message
from juki.v1 import national_pb2, records_pb2

from server.domain.errors import DomainError
from server.storage.lmdbenv import LmdbEnv
from server.storage.sealing import MyNumberSealer

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
_U64 = struct.Struct(">Q")
_ACTIVE, _REMOVED = b"A", b"R"
# the databases every record file has besides its records, history and whatever its kind needs
SHARED_DB_NAMES = (
    "idx_name",
    "idx_birth",
    "idx_address",
    "idx_name_address",
    "idx_municipality",
    "idx_removed",
    "sequences",
    "applied",
    "outbox",
    "outbox_aside",
    "meta",
)
# Scans that may take long (4情報 search, 整合 digests) run in these threads, not on the event loop.
_SCANS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lmdb-scan")


def u64(value: int) -> bytes:
    return _U64.pack(value)


def dob_key(iso_date: str) -> bytes:
    return iso_date.replace("-", "").encode()


MAX_KEY_BYTES = 511  # LMDB's key size
NAME_KEY_BYTES = MAX_KEY_BYTES - 1 - 8 - 11  # 清音化かな + NUL + YYYYMMDD + 住民票コード
ADDRESS_KEY_BYTES = MAX_KEY_BYTES - 1 - 11  # address + NUL + 住民票コード
# 清音化かな + NUL + sex + address + NUL + 住民票コード: the kana cut as in idx_name, the address to the rest
NAME_ADDRESS_TEXT_BYTES = MAX_KEY_BYTES - 1 - 1 - 1 - 11


def index_text(text: str, limit: int) -> bytes:
    """The text part of an idx_name / idx_address key (or of a prefix scanning them): its UTF-8, cut to
    `limit` bytes at a character boundary."""
    raw = text.encode()
    if len(raw) <= limit:
        return raw
    return raw[:limit].decode("utf-8", "ignore").encode()


def name_address_within(name: bytes, sex: int, address_prefix: str) -> bytes:
    """What follows `name` + NUL in the idx_name_address keys of this sex whose address begins with
    `address_prefix` (the prefix cut as the keys of that name cut their address)."""
    return bytes((sex,)) + index_text(address_prefix, NAME_ADDRESS_TEXT_BYTES - len(name))


def index_keys(
    search_kana: str, birth_date: str, sex: int, address: str, removed: bool, code: bytes
) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    """The keys of idx_name, idx_birth, idx_address and idx_name_address, and the value the four share."""
    dob = dob_key(birth_date)
    sex_byte = bytes((sex,))
    value = (_REMOVED if removed else _ACTIVE) + sex_byte + dob
    name = index_text(search_kana, NAME_KEY_BYTES)
    return (
        name + b"\x00" + dob + code,
        dob + sex_byte + code,
        index_text(address, ADDRESS_KEY_BYTES) + b"\x00" + code,
        name + b"\x00" + name_address_within(name, sex, address) + b"\x00" + code,
        value,
    )


@dataclass(frozen=True)
class AsideChange:
    """A change set aside by the relay: its stream (file prefix + 市町村コード), outbox key, why, when."""

    stream: str
    key: bytes
    reason: str
    enqueued_ms: int
    set_aside_ms: int
    held: bool  # behind a refused change of its stream, not refused itself


def _aside_key(stream: str, key: bytes) -> bytes:
    return stream.encode() + b"\0" + key


@dataclass(frozen=True, slots=True)
class IndexHit:
    """One index entry: enough to filter without reading the record."""

    key: bytes
    resident_code: str
    removed: bool
    sex: int
    birth: bytes  # YYYYMMDD


def _hit(key: bytes, value: Any) -> IndexHit:
    return IndexHit(
        key=key,
        resident_code=key[-11:].decode(),
        removed=value[:1] == _REMOVED,
        sex=value[1],
        birth=bytes(value[2:10]),
    )


@dataclass(frozen=True, slots=True)
class NameGroup:
    """The entries of one distinct name in a name-first index (清音化かな + NUL + …) that `name_group` found;
    `looked`: every entry it looked at, those around the group included."""

    name: bytes
    hits: list[IndexHit]
    looked: int
    overflow: bool  # more entries than the limit: `hits` holds only the first ones


class RecordTxn:
    """Record-level operations inside one LMDB transaction, common to every record file. `get` gives the
    4情報 view of a record (a ResidentRecord) that search, finding and the indexes work on."""

    def __init__(self, store: RecordFile[Any], txn: Any) -> None:
        self._store = store
        self._txn = txn
        self._dbs = store.env.dbs

    def get(self, resident_code: str) -> records_pb2.ResidentRecord | None:
        raise NotImplementedError

    def erase_person(self, resident_code: str) -> int:
        """Erase a removed person wholly (record, indexes, history); how many history entries."""
        raise NotImplementedError

    def record_digest(self, resident_code: str) -> bytes | None:
        """The 整合 digest of the record held (server/domain/reconcile.py), computed now; None: none held."""
        raise NotImplementedError

    def municipality_digests(self, municipality_code: str, after: str = "") -> Iterator[tuple[str, bytes]]:
        """(resident code, record digest) of every record of a municipality (after `after`), in code order,
        each digest computed now (none is stored)."""
        for code in self.municipality_codes(municipality_code, after):
            digest = self.record_digest(code)
            if digest is not None:
                yield code, digest

    # reads ---------------------------------------------------------------------------------------
    def first_code(self) -> str | None:
        """The lowest 住民票コード held (a sample to show), None for an empty file."""
        with self._txn.cursor(db=self._dbs["records"]) as cur:
            return bytes(cur.key()).decode() if cur.first() else None

    def last_sequence(self, municipality_code: str) -> int:
        raw = self._txn.get(municipality_code.encode(), db=self._dbs["sequences"])
        return 0 if raw is None else int(_U64.unpack(raw)[0])

    def applied(self, municipality_code: str, sequence: int) -> tuple[bytes, bytes] | None:
        """(notice digest, serialized ApplyResult) of an applied notice."""
        raw = self._txn.get(municipality_code.encode() + u64(sequence), db=self._dbs["applied"])
        return None if raw is None else (bytes(raw[:32]), bytes(raw[32:]))

    def outbox_depth(self) -> int:
        return int(self._txn.stat(self._dbs["outbox"])["entries"])

    def scan(self, index: str, start: bytes, prefix: bytes, stop: bytes | None) -> Iterator[IndexHit]:
        """Index entries from `start` (exclusive when it is a previous key) while they begin with `prefix`
        and sort before `stop`."""
        with self._txn.cursor(db=self._dbs[index]) as cur:
            if not cur.set_range(start):
                return
            for key, value in cur:
                if not key.startswith(prefix) or (stop is not None and key >= stop):
                    return
                if key == start:
                    continue
                yield _hit(bytes(key), value)

    def scan_by_name(
        self, index: str, start: bytes, prefix: bytes, within: bytes
    ) -> Iterator[tuple[bytes, IndexHit | None]]:
        """Entries of a name-first index (清音化かな + NUL + …) whose name begins with `prefix` and whose rest
        begins with `within`, from `start` (exclusive), in key order, with one seek per distinct name: the
        work is the matching entries plus at most two other keys per name, however many entries each name
        holds. (key, hit) for a match, (key, None) for each other key looked at."""
        with self._txn.cursor(db=self._dbs[index]) as cur:
            if not cur.set_range(start):
                return
            while True:
                key = bytes(cur.key())
                if not key.startswith(prefix):
                    return
                name_end = key.index(b"\x00")
                group = key[: name_end + 1] + within
                if key.startswith(group):
                    if key != start:
                        yield key, _hit(key, cur.value())
                    if not cur.next():
                        return
                    continue
                if key != start:
                    yield key, None
                # before the name's group: seek into it; past it: on to the next name (N + 0x01 > N + NUL + …)
                if not cur.set_range(group if key < group else key[:name_end] + b"\x01"):
                    return

    def name_group(
        self, index: str, seek: bytes, prefix: bytes, within: Callable[[bytes], bytes], limit: int
    ) -> NameGroup | None:
        """The first distinct name at or after `seek` that begins with `prefix` in a name-first index, with
        its entries whose rest (after name + NUL) begins with `within(name)`: at most `limit` of them (then
        `overflow`), found with one or two seeks. None: no such name is left."""
        with self._txn.cursor(db=self._dbs[index]) as cur:
            if not cur.set_range(seek):
                return None
            key = bytes(cur.key())
            if not key.startswith(prefix):
                return None
            name = key[: key.index(b"\x00")]
            group = name + b"\x00" + within(name)
            looked = 0
            if not key.startswith(group):
                looked = 1
                if key > group or not cur.set_range(group):
                    return NameGroup(name, [], looked, overflow=False)
            hits: list[IndexHit] = []
            for raw_key, value in cur:
                if not raw_key.startswith(group):
                    looked += 1
                    break
                if len(hits) >= limit:
                    return NameGroup(name, hits, looked + len(hits), overflow=True)
                hits.append(_hit(bytes(raw_key), value))
            return NameGroup(name, hits, looked + len(hits), overflow=False)

    def count(self, db: str) -> int:
        return int(self._txn.stat(self._dbs[db])["entries"])

    def removed_before(self, cutoff: str) -> Iterator[str]:
        """Codes of persons removed before `cutoff` (YYYY-MM-DD), oldest removal first."""
        stop = dob_key(cutoff)
        with self._txn.cursor(db=self._dbs["idx_removed"]) as cur:
            if not cur.first():
                return
            for key in cur.iternext(keys=True, values=False):
                if bytes(key[:8]) >= stop:
                    return
                yield bytes(key[8:]).decode()

    def municipality_codes(self, municipality_code: str, after: str = "") -> Iterator[str]:
        """The resident codes of every record of a municipality (after `after`), in code order."""
        prefix = municipality_code.encode()
        start = prefix + after.encode()
        with self._txn.cursor(db=self._dbs["idx_municipality"]) as cur:
            if not cur.set_range(start):
                return
            for key in cur.iternext(keys=True, values=False):
                if not key.startswith(prefix):
                    return
                if after and key == start:
                    continue
                yield bytes(key[len(prefix) :]).decode()

    def outbox_batch(self, limit: int) -> list[tuple[bytes, bytes]]:
        """The oldest `limit` queued changes, in order: (key, opened payload)."""
        batch: list[tuple[bytes, bytes]] = []
        with self._txn.cursor(db=self._dbs["outbox"]) as cur:
            if not cur.first():
                return batch
            for key, value in cur:
                key = bytes(key)
                batch.append((key, self._store.sealer.open_blob(b"outbox" + key, bytes(value[8:]))))
                if len(batch) >= limit:
                    break
        return batch

    def outbox_oldest_ms(self) -> int | None:
        """Enqueue time (ms since the epoch) of the oldest undelivered change."""
        with self._txn.cursor(db=self._dbs["outbox"]) as cur:
            return int(_U64.unpack(cur.value()[:8])[0]) if cur.first() else None

    def counter(self, name: bytes) -> int:
        raw = self._txn.get(name, db=self._dbs["meta"])
        return 0 if raw is None else int(_U64.unpack(raw)[0])

    def keyed_digest(self, digest: bytes) -> bytes:
        """The store's keyed form of a digest over data that may hold a My Number (see `sealing`)."""
        return self._store.sealer.keyed_digest(digest)

    # writes --------------------------------------------------------------------------------------
    def set_last_sequence(self, municipality_code: str, sequence: int) -> None:
        self._txn.put(municipality_code.encode(), u64(sequence), db=self._dbs["sequences"])

    def record_applied(self, municipality_code: str, sequence: int, digest: bytes, result: bytes) -> None:
        """`digest` is a keyed one (`keyed_digest`), as `applied` gives it back."""
        self._txn.put(municipality_code.encode() + u64(sequence), digest + result, db=self._dbs["applied"])

    def enqueue_outbox(self, change: Message | bytes, enqueued_ms: int) -> None:
        """Queue a change (a PropagatedChange, or its bytes) for the national server: the enqueue time in
        clear (for the age metric), then the change sealed, since a change notice carries a My Number.
        Fields outside the schema are dropped first: only what was validated is forwarded."""
        if isinstance(change, bytes):
            change = national_pb2.PropagatedChange.FromString(change)
        change.DiscardUnknownFields()
        key = u64(self._next_counter(b"outbox_counter"))
        sealed = self._store.sealer.seal_blob(b"outbox" + key, change.SerializeToString())
        self._txn.put(key, u64(enqueued_ms) + sealed, db=self._dbs["outbox"])

    def count_attempt(self, *, failed: bool) -> None:
        """Persist delivery attempt and failure counts (the metrics restart with the process)."""
        self.bump(b"relay_attempts")
        if failed:
            self.bump(b"relay_failures")

    def remove_delivered(self, keys: list[bytes]) -> None:
        for key in keys:
            self._txn.delete(key, db=self._dbs["outbox"])
        self.bump(b"outbox_delivered", len(keys))

    def set_aside(self, key: bytes, stream: str, reason: str, now_ms: int, *, held: bool = False) -> None:
        """Move a queued change to the set-aside table, sealed as it was (its key keeps its place);
        `held`: not refused itself, only behind a refused change of its stream."""
        value = self._txn.pop(key, db=self._dbs["outbox"])
        if value is None:
            return
        reason_bytes = reason.encode()[:255]
        head = bytes(value[:8]) + u64(now_ms) + (b"H" if held else b"R")
        head += bytes([len(reason_bytes)]) + reason_bytes
        self._txn.put(_aside_key(stream, key), head + bytes(value[8:]), db=self._dbs["outbox_aside"])
        if held:
            self.bump(b"outbox_aside_held")

    def aside_streams(self) -> set[str]:
        """Streams with a change set aside (their later changes are held too): one seek per stream."""
        streams: set[str] = set()
        with self._txn.cursor(db=self._dbs["outbox_aside"]) as cur:
            found = cur.first()
            while found:
                stream = bytes(cur.key()).split(b"\0", 1)[0]
                streams.add(stream.decode())
                found = cur.set_range(stream + b"\x01")
        return streams

    def aside_counts(self) -> tuple[int, int]:
        """(changes refused and set aside, changes held behind them)."""
        total = int(self._txn.stat(self._dbs["outbox_aside"])["entries"])
        held = self.counter(b"outbox_aside_held")
        return total - held, held

    def aside_changes(self, limit: int) -> list[AsideChange]:
        """The first `limit` set-aside changes, by stream then in their order."""
        found: list[AsideChange] = []
        with self._txn.cursor(db=self._dbs["outbox_aside"]) as cur:
            for raw_key, value in cur:
                if len(found) >= limit:
                    break
                stream, _, key = bytes(raw_key).partition(b"\0")
                found.append(
                    AsideChange(
                        stream=stream.decode(),
                        key=key,
                        reason=bytes(value[18 : 18 + value[17]]).decode(),
                        enqueued_ms=int(_U64.unpack(value[:8])[0]),
                        set_aside_ms=int(_U64.unpack(value[8:16])[0]),
                        held=bytes(value[16:17]) == b"H",
                    )
                )
        return found

    def aside_payload(self, change: AsideChange) -> bytes:
        """The opened change of a set-aside entry."""
        value = bytes(self._txn.get(_aside_key(change.stream, change.key), db=self._dbs["outbox_aside"]))
        return self._store.sealer.open_blob(b"outbox" + change.key, value[18 + value[17] :])

    def requeue_stream(self, stream: str) -> int:
        """Put a stream's set-aside changes back in the outbox, in their places; how many."""
        prefix = stream.encode() + b"\0"
        moved: list[tuple[bytes, bytes]] = []
        with self._txn.cursor(db=self._dbs["outbox_aside"]) as cur:
            found = cur.set_range(prefix)
            while found and bytes(cur.key()).startswith(prefix):
                moved.append((bytes(cur.key()), bytes(cur.value())))
                found = cur.next()
        held = 0
        for aside_key, value in moved:
            self._txn.delete(aside_key, db=self._dbs["outbox_aside"])
            held += value[16:17] == b"H"
            self._txn.put(
                aside_key[len(prefix) :], value[:8] + value[18 + value[17] :], db=self._dbs["outbox"]
            )
        self.bump_signed(b"outbox_aside_held", -held)
        return len(moved)

    def bump(self, name: bytes, by: int = 1) -> None:
        self._txn.put(name, u64(self.counter(name) + by), db=self._dbs["meta"])

    def bump_signed(self, name: bytes, by: int) -> None:
        """A counter that may go down (kept ≥ 0): e.g. removed persons, who may be created again."""
        self._txn.put(name, u64(max(0, self.counter(name) + by)), db=self._dbs["meta"])

    def _next_counter(self, name: bytes) -> int:
        self.bump(name)
        return self.counter(name)

    def _reindex(
        self, previous: records_pb2.ResidentRecord | None, record: records_pb2.ResidentRecord | None
    ) -> None:
        """Move the index entries of a record's 4情報 view from `previous` (None: new) to `record` (None:
        erased), with the count of removed persons. `record.search_kana` is set."""
        was_removed = previous is not None and previous.deleted_flag
        is_removed = record is not None and record.deleted_flag
        if was_removed != is_removed:
            self.bump_signed(b"records_removed", 1 if is_removed else -1)
        if previous is not None:
            key = previous.resident_code.encode()
            for db, index_key, _ in index_entries(previous):
                self._txn.delete(index_key, db=self._dbs[db])
            self._txn.delete(previous.municipality_code.encode() + key, db=self._dbs["idx_municipality"])
            if previous.deleted_flag:
                self._txn.delete(dob_key(previous.removed_date) + key, db=self._dbs["idx_removed"])
        if record is not None:
            key = record.resident_code.encode()
            for db, index_key, value in index_entries(record):
                self._txn.put(index_key, value, db=self._dbs[db])
            self._txn.put(record.municipality_code.encode() + key, b"", db=self._dbs["idx_municipality"])
            if record.deleted_flag:
                self._txn.put(dob_key(record.removed_date) + key, b"", db=self._dbs["idx_removed"])

    def _erase_history(self, resident_code: str) -> int:
        key = resident_code.encode()
        erased = 0
        with self._txn.cursor(db=self._dbs["history"]) as cur:
            while cur.set_range(key) and bytes(cur.key()).startswith(key):
                cur.delete()
                erased += 1
        return erased


def index_entries(record: records_pb2.ResidentRecord) -> Iterator[tuple[str, bytes, bytes]]:
    """(index, key, value) of the 4情報 index entries of a record's 4情報 view (`search_kana` set)."""
    info = record.four_info
    name, birth, address, name_address, value = index_keys(
        record.search_kana,
        info.birth_date,
        info.sex,
        info.address,
        record.deleted_flag,
        record.resident_code.encode(),
    )
    yield "idx_name", name, value
    yield "idx_birth", birth, value
    yield "idx_address", address, value
    yield "idx_name_address", name_address, value


TxnT = TypeVar("TxnT", bound=RecordTxn)


class RecordFile(Generic[TxnT]):
    """One record file: its environment, its keys, and the domain operations every record file has."""

    txn_type: type[TxnT]
    schema_version: bytes

    def __init__(self, env: LmdbEnv, sealer: MyNumberSealer) -> None:
        self.env = env
        self.sealer = sealer
        if not env.readonly:
            with env.read() as txn:
                version = txn.get(b"schema_version", db=env.dbs["meta"])
            if version is not None and bytes(version) in self._migrations():
                # a migration rewrites whole indexes in one transaction: room for it up front, since a full
                # map would abort it and run it again after each doubling
                env.reserve(env.map_use()[0])
            self.env.write_sync(self._init_meta)

    def _migrations(self) -> dict[bytes, tuple[Callable[[Any], dict[str, int]], str]]:
        """Older schema version → (migration to the next version, in the opening write transaction, its
        log message). A store several versions behind takes each in turn, all in that one transaction."""
        return {}

    def _opened(self, txn: Any) -> None:
        """What a file kind does once its schema is current, in the opening write transaction."""

    def _init_meta(self, txn: Any) -> None:
        meta = self.env.dbs["meta"]
        raw = txn.get(b"schema_version", db=meta)
        version = None if raw is None else bytes(raw)
        migrations = self._migrations()
        while version is not None and version in migrations:
            migrate, message = migrations[version]
            log.info(message, extra=migrate(txn))
            version = str(int(version) + 1).encode()
        if version is not None and version != self.schema_version:
            raise RuntimeError(f"store schema {version!r} is not {self.schema_version!r}")
        txn.put(b"schema_version", self.schema_version, db=meta)
        self._opened(txn)

    def build_name_address_index(self, txn: Any, *, progress_every: int = 1_000_000) -> dict[str, int]:
        """Migration to the kana + sex + address index: idx_name_address built from the records (whatever it
        held is dropped first), its entries sorted and appended (full pages), in the opening transaction:
        whole or not at all. Logs its progress on a large file (counts only). Counts, for the log."""
        dbs = self.env.dbs
        tx = self._view(txn)
        total = int(txn.stat(dbs["records"])["entries"])
        entries: list[tuple[bytes, bytes]] = []
        with txn.cursor(db=dbs["records"]) as cur:
            for n, code in enumerate(cur.iternext(keys=True, values=False), start=1):
                view = tx.get(bytes(code).decode())
                assert view is not None
                entries += [(k, v) for db, k, v in index_entries(view) if db == "idx_name_address"]
                if n % progress_every == 0:
                    log.info("building idx_name_address", extra={"records": n, "of": total})
        entries.sort()
        txn.drop(dbs["idx_name_address"], delete=False)
        with txn.cursor(db=dbs["idx_name_address"]) as cur:
            cur.putmulti(entries, append=True)
        return {"records": total, "name_address_entries": len(entries)}

    def _view(self, txn: Any) -> TxnT:
        return self.txn_type(self, txn)

    # reads ---------------------------------------------------------------------------------------
    def reader(self) -> AbstractContextManager[TxnT]:
        """A read view; keep it short and never await inside it."""
        return _ReadView(self)

    async def municipality_digests(
        self, municipality_code: str, *, per_read: int = 2000
    ) -> list[tuple[str, bytes]]:
        """`RecordTxn.municipality_digests` in short reads in a scan thread, letting other calls be served
        in between (a resident's digest opens a My Number: about 5 µs; 四日市 has 305k residents)."""

        def part(after: str) -> list[tuple[str, bytes]]:
            with self.reader() as tx:
                return list(itertools.islice(tx.municipality_digests(municipality_code, after), per_read))

        loop = asyncio.get_running_loop()
        found: list[tuple[str, bytes]] = []
        while True:
            after = found[-1][0] if found else ""
            chunk = await loop.run_in_executor(_SCANS, part, after)
            found += chunk
            if len(chunk) < per_read:
                return found

    # writes: every one on the environment's single writer thread, none with a raw transaction ------
    async def apply(self, work: Callable[[TxnT], T]) -> T:
        """Run `work` on the record-level view of one durable write transaction. `work` may run again
        from scratch (a full map aborts the transaction), so it must only read and write through `tx`."""
        return await self.env.write(lambda txn: work(self._view(txn)))

    def apply_sync(self, work: Callable[[TxnT], T]) -> T:
        """`apply` for offline tools (seeding, bootstrap) and worker threads."""
        return self.env.write_sync(lambda txn: work(self._view(txn)))

    async def apply_batch(
        self, items: Sequence[Any], rule: Callable[[TxnT, Any], R]
    ) -> tuple[list[R], DomainError | None]:
        """Apply `rule` to each item in order in one write transaction; stop at the first item it refuses
        (DomainError, which writes nothing of that item), keep those before. (results, the refusal)."""

        def work(tx: TxnT) -> tuple[list[R], DomainError | None]:
            done: list[R] = []
            for item in items:
                try:
                    done.append(rule(tx, item))
                except DomainError as err:
                    return done, err
            return done, None

        return await self.apply(work)

    async def erase_removed_before(self, keep_from: str, limit: int) -> tuple[int, int]:
        """Erase at most `limit` persons removed before `keep_from` (YYYY-MM-DD) with their history, in one
        transaction: (persons, history entries) erased."""

        def work(tx: TxnT) -> tuple[int, int]:
            codes = list(itertools.islice(tx.removed_before(keep_from), limit))
            return len(codes), sum(tx.erase_person(code) for code in codes)

        return await self.apply(work)

    async def count_relay_attempt(self, *, failed: bool) -> None:
        """Persist a delivery attempt (and its failure), for `juki outbox status`."""
        await self.apply(lambda tx: tx.count_attempt(failed=failed))

    async def confirm_delivered(self, keys: list[bytes]) -> None:
        """The national server took these queued changes: remove them, count the attempt."""

        def work(tx: TxnT) -> None:
            tx.remove_delivered(keys)
            tx.count_attempt(failed=False)

        await self.apply(work)

    async def set_aside(self, entries: list[tuple[bytes, str, str]], now_ms: int, held_reason: str) -> None:
        """Move queued changes (key, stream, reason) to the set-aside table, in one transaction; those with
        `held_reason` are only held behind a refused change of their stream."""

        def work(tx: TxnT) -> None:
            for key, stream, reason in entries:
                tx.set_aside(key, stream, reason, now_ms, held=reason == held_reason)

        await self.apply(work)

    async def probe(self) -> None:
        """A write that commits, or raises the storage error that stops writes now."""
        await self.apply(lambda tx: tx.bump(b"storage_probes"))

    def close(self) -> None:
        self.env.close()


class _ReadView(Generic[TxnT]):
    """`RecordFile.reader()`: the typed view of one read transaction for one `with` block (a plain class,
    not a generator: this is on the path of every lookup)."""

    __slots__ = ("_file", "_txn")

    def __init__(self, file: RecordFile[TxnT]) -> None:
        self._file = file
        self._txn: Any = None

    def __enter__(self) -> TxnT:
        file = self._file
        self._txn = file.env.begin_read()
        return file.txn_type(file, self._txn)

    def __exit__(self, *exc: object) -> None:
        txn, self._txn = self._txn, None
        self._file.env.end_read(txn)
