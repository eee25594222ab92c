"""A consistent copy of one LMDB environment while its server keeps writing (for encrypted backups).

LMDB's own compacting copy runs inside one read transaction of a read-only handle, in a thread that fills a
pipe; the reader takes the bytes from the pipe. The backup layer (`server.backup.archive`) seals what it
reads; this module only knows LMDB.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import IO, Any

import lmdb


class SnapshotError(Exception):
    """The environment could not be copied (its message names the directory, never any data)."""


class Snapshot:
    """A consistent copy of one LMDB environment, read from a pipe that a copying thread fills.

    The copy is LMDB's own (compacting) copy inside one read transaction of a read-only handle in this
    process, so the server may keep writing: the snapshot shows the environment as of that transaction.
    """

    def __init__(self, path: Path) -> None:
        try:
            # lock=True: the writer must see our reader slot, or it could reuse pages we are still copying.
            self._env: Any = lmdb.open(
                str(path), readonly=True, lock=True, subdir=True, create=False, max_dbs=0, max_readers=1024
            )
        except lmdb.Error as exc:
            hint = ""
            if "already open" in str(exc):  # py-lmdb: one handle per environment and process
                hint = " (the server holds it open: back it up from another process, as backup_schedule does)"
            raise SnapshotError(f"cannot open the LMDB environment in {path}: {exc}{hint}") from None
        self.path = path
        self.txn_id = 0
        self._error: BaseException | None = None
        read_fd, self._write_fd = os.pipe()
        self._pipe = os.fdopen(read_fd, "rb", buffering=0)
        self._thread = threading.Thread(target=self._copy, name=f"backup-copy-{path.name}", daemon=True)
        self._thread.start()

    def _copy(self) -> None:
        try:
            txn = self._begin()
            try:
                self.txn_id = int(txn.id())
                self._env.copyfd(self._write_fd, compact=True, txn=txn)
            finally:
                txn.abort()
        except BaseException as exc:  # handed to the reading thread
            self._error = exc
        finally:
            os.close(self._write_fd)  # the reader sees the end of the snapshot

    def _begin(self) -> Any:
        for _ in range(10):
            try:
                return self._env.begin(buffers=False)
            except lmdb.MapResizedError:  # the server grew its map since we opened: adopt the new size
                self._env.set_mapsize(0)
        raise SnapshotError(f"{self.path}: the environment kept growing while the snapshot began")

    def read(self, size: int) -> bytes:
        """The next `size` bytes, fewer only at the end of the snapshot."""
        return read_exact(self._pipe, size)

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._pipe.close()  # a copy still writing gets EPIPE and stops
        self._thread.join()
        self._env.close()
        if exc_type is None and self._error is not None:
            raise SnapshotError(f"snapshot of {self.path} failed: {self._error}") from self._error


def read_exact(stream: IO[bytes], size: int) -> bytes:
    parts: list[bytes] = []
    remaining = size
    while remaining:
        part = stream.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)
