"""One LMDB environment: opening, named databases, map growth and the single writer.

Reads run on the caller's thread (the event loop's for a key lookup, a worker thread's for a scan: any
number at once); writes go through one writer thread so that an
fsync never blocks the event loop and LMDB's single-writer rule holds by construction (SPEC §10). Several
processes may open the same environment (prefectural workers on one port): LMDB serialises their writers,
and a map grown by one is adopted by the others when their next transaction finds it larger. The directory
is 0700, data.mdb and lock.mdb 0600, whatever the umask.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import lmdb

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MAP_SIZE = 1 << 30
MAX_MAP_SIZE = 1 << 40


def _make_private(path: Path, mode: int) -> None:
    """0600 files and a 0700 directory whatever the umask (another user's files, e.g. a restored copy
    opened read-only, are left as they are)."""
    with contextlib.suppress(FileNotFoundError, PermissionError):
        if os.stat(path).st_mode & 0o777 != mode:
            os.chmod(path, mode)


class LmdbEnv:
    """An LMDB environment with named databases, growing its map when a write finds it full."""

    def __init__(
        self,
        path: Path,
        db_names: Sequence[str],
        *,
        map_size: int = DEFAULT_MAP_SIZE,
        max_readers: int = 1024,
        readonly: bool = False,
    ) -> None:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        _make_private(path, 0o700)
        self.path = path
        self.readonly = readonly
        self.env: Any = lmdb.open(
            str(path),
            map_size=map_size,
            max_dbs=len(db_names) + 8,  # room for the databases of an older schema, while migrating
            max_readers=max_readers,
            subdir=True,
            sync=True,
            metasync=True,
            writemap=False,
            map_async=False,
            readahead=False,
            readonly=readonly,
            lock=True,
            mode=0o600,  # data.mdb and lock.mdb (less the umask); files made before are narrowed below
        )
        for name in ("data.mdb", "lock.mdb"):
            _make_private(path / name, 0o600)
        # A process killed while reading leaves its reader slot behind; clear those now.
        stale = self.env.reader_check()
        if stale:
            log.info("cleared stale LMDB reader slots", extra={"count": stale})
        self.dbs: dict[str, Any] = {
            name: self.env.open_db(name.encode(), create=not readonly) for name in db_names
        }
        # set_mapsize needs no transaction open in this process: readers share this gate, the resizer has it
        # alone (so a scan in a worker thread never makes a reader on the event loop wait).
        self._gate = _SharedGate()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"lmdb-writer-{path.name}")

    def existing_db(self, txn: Any, name: str) -> Any | None:
        """A named database that is not one of this environment's (an older schema's), opened in the
        write transaction `txn`; None when absent."""
        try:
            return self.env.open_db(name.encode(), txn=txn, create=False)
        except lmdb.NotFoundError:
            return None

    def read(self) -> AbstractContextManager[Any]:
        """A read transaction; keep it short on the event loop (scans belong in a thread), never await
        inside it."""
        return _Reading(self)

    def begin_read(self) -> Any:
        """A read transaction under the shared gate; hand it back to `end_read` (`read()` does both)."""
        gate = self._gate
        gate.enter()
        try:
            return self.env.begin(buffers=False)
        except lmdb.MapResizedError:
            pass
        except BaseException:
            gate.leave()
            raise
        gate.leave()
        with gate.exclusive():  # another process grew the map: adopt it with no reader open here
            self._adopt_map_size()
        gate.enter()
        try:
            return self.env.begin(buffers=False)
        except BaseException:
            gate.leave()
            raise

    def end_read(self, txn: Any) -> None:
        try:
            txn.abort()  # a read transaction: nothing to commit
        finally:
            self._gate.leave()

    def write_sync(self, work: Callable[[Any], T]) -> T:
        """`write` for a caller that may block (offline tools, worker threads): the work still runs on the
        environment's one writer thread, so no two write transactions of this process ever overlap and a map
        resize never races one (never call it from inside a write)."""
        return self._writer.submit(self._write_now, work).result()

    def _write_now(self, work: Callable[[Any], T]) -> T:
        """Run `work(txn)` in one write transaction, committed durably; grow the map and retry when full.

        `work` must be safe to run again from scratch: a full map aborts the whole transaction.
        """
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    return work(txn)
            except lmdb.MapFullError:
                self._grow()
            except lmdb.MapResizedError:
                with self._gate.exclusive():
                    self._adopt_map_size()

    async def write(self, work: Callable[[Any], T]) -> T:
        """Run `work(txn)` in one durable write transaction on the single writer thread (see `_write_now`)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self._write_now, work)

    def reserve(self, more: int) -> None:
        """Grow the map now so that `more` bytes fit beside what is used: a large write then runs once,
        instead of being aborted by `MapFullError` and run again after each doubling."""
        used, current = self.map_use()
        if used + more > current:
            self._set_map_size(min(max(used + more, current * 2), MAX_MAP_SIZE))

    def _adopt_map_size(self) -> None:
        """Another process (a worker sharing this environment) grew the map past ours: map the size it
        committed. LMDB persists only increases and serialises writers across processes, so each process
        growing its own map on `MapFullError` and adopting on `MapResizedError` is safe. The caller holds
        the gate (no read transaction of this process is open) and no write transaction is open."""
        self.env.set_mapsize(0)
        size = self.env.info()["map_size"]
        log.info("LMDB map size adopted from another process", extra={"map_size": size})

    def _grow(self) -> None:
        current = self.env.info()["map_size"]
        new_size = min(current * 2, MAX_MAP_SIZE)
        if new_size <= current:
            raise lmdb.MapFullError("LMDB map at its maximum size")
        self._set_map_size(new_size)

    def _set_map_size(self, size: int) -> None:
        with self._gate.exclusive():
            self.env.set_mapsize(size)
        log.info("LMDB map grown", extra={"map_size": size})

    def map_use(self) -> tuple[int, int]:
        """(bytes used, map size)."""
        info = self.env.info()
        stat = self.env.stat()
        return (info["last_pgno"] + 1) * stat["psize"], info["map_size"]

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self.env.close()


class _SharedGate:
    """Many readers at once, or one resizer alone (readers arriving meanwhile wait for it)."""

    def __init__(self) -> None:
        self._lock = threading.Condition(threading.Lock())
        self._readers = 0
        self._waiting = 0  # resizers waiting for the readers to leave

    def enter(self) -> None:
        with self._lock:
            self._readers += 1

    def leave(self) -> None:
        with self._lock:
            self._readers -= 1
            if not self._readers and self._waiting:
                self._lock.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._lock:
            self._waiting += 1
            try:
                while self._readers:
                    self._lock.wait()
            finally:
                self._waiting -= 1
            yield


class _Reading:
    """`LmdbEnv.read()`: a read transaction for one `with` block (a plain class: this is on every call's
    path, and a generator-based context manager costs several times more)."""

    __slots__ = ("_env", "_txn")

    def __init__(self, env: LmdbEnv) -> None:
        self._env = env
        self._txn: Any = None

    def __enter__(self) -> Any:
        self._txn = self._env.begin_read()
        return self._txn

    def __exit__(self, *exc: object) -> None:
        txn, self._txn = self._txn, None
        self._env.end_read(txn)
