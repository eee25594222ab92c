"""Streams a synthetic population into the resident store.

An empty store is filled by a bulk load (server.storage.residents.BulkLoad: every database written in key
order, in one durable transaction). A large generated `Population` is generated in a second process, which
shares the preparing with this one and sorts the index entries, so that two cores share the work; the keys
never leave this process. A store that already holds residents gets record-level writes instead, one
durable transaction per batch, the same writes as ApplyUpdate's.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import io
import marshal
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from juki.v1 import records_pb2

from server.seed.population import Population, SeedEntry
from server.storage.residents import (
    INDEX_DATABASES,
    BulkLoad,
    IndexEntries,
    IndexLists,
    PreparedRecord,
    ResidentStore,
    prepare_resident,
)

BATCH = 20_000
# Below this many residents a second process saves little more than it costs (start-up, imports: 0.2 s).
WORKER_MIN_COUNT = 50_000
_BATCH = 5_000  # residents per batch from the generator process
# Whether the generator process sends batches serialized for this one to prepare while it keeps up (False:
# it prepares every batch itself, as when this process is always behind).
_SHARE_PREPARING = True
_FRAME = struct.Struct(">Q")  # length of the marshal dump that follows
# Version 2: no back-references, which cost a lookup table entry per object shared between tuples.
_MARSHAL = 2


@dataclass(frozen=True)
class LoadReport:
    records: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


def load(
    store: ResidentStore,
    entries: Iterable[SeedEntry],
    *,
    batch: int = BATCH,
    progress: Callable[[int], object] | None = None,
    worker: bool | None = None,
) -> LoadReport:
    """Write every entry (history first, then the current version), durably.

    Into an empty store as one bulk load: `progress` counts entries as they are prepared, and the store is
    written at the end; resident codes must be distinct (they are in a generated population). `worker`
    says whether a `Population` is generated in a second process (default: when it is large).
    """
    with store.reader() as tx:
        empty = tx.count("records") == 0
    if not empty:
        return load_each(store, entries, batch=batch, progress=progress)
    started = time.perf_counter()
    if worker is None:
        worker = isinstance(entries, Population) and entries.count >= WORKER_MIN_COUNT
    if worker and not isinstance(entries, Population):
        raise TypeError("only a generated Population can be generated in a worker process")
    # Tens of millions of tuples of bytes and no reference cycles: cyclic GC would only walk them again and
    # again as they pile up (a tenth of the time), so it is paused for the load.
    collecting = gc.isenabled()
    gc.disable()
    try:
        count = _bulk_load(store, entries, worker, progress)
    finally:
        if collecting:
            gc.enable()
    return LoadReport(count, time.perf_counter() - started)


def _bulk_load(
    store: ResidentStore,
    entries: Iterable[SeedEntry],
    worker: bool,
    progress: Callable[[int], object] | None,
) -> int:
    """The residents written; the gathered entries are let go of before this returns."""
    bulk = BulkLoad(store)
    if isinstance(entries, Population) and worker:
        with _Generator(entries) as generator:
            for prepared in generator.batches():
                bulk.add_prepared(prepared)
                if progress:
                    progress(len(prepared))
            return bulk.write(sorted_indexes=generator.sorted_indexes())
    for batch in _batches(entries):
        records, indexes = zip(*map(_prepare, batch), strict=True)
        bulk.add_prepared(records)
        bulk.add_indexes(indexes)
        if progress:
            progress(len(batch))
    return bulk.write()


def load_each(
    store: ResidentStore,
    entries: Iterable[SeedEntry],
    *,
    batch: int = BATCH,
    progress: Callable[[int], object] | None = None,
) -> LoadReport:
    """Write every entry with record-level writes (replacing residents already there), one durable
    transaction per batch."""
    started = time.perf_counter()
    total = 0
    for chunk in _batches(entries, batch):
        total += store.put_residents((entry.record, entry.history) for entry in chunk)
        if progress:
            progress(len(chunk))
    return LoadReport(total, time.perf_counter() - started)


def _batches(entries: Iterable[SeedEntry], size: int = _BATCH) -> Iterator[list[SeedEntry]]:
    batch: list[SeedEntry] = []
    for entry in entries:
        batch.append(entry)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _prepare(entry: SeedEntry) -> tuple[PreparedRecord, IndexEntries]:
    return prepare_resident(entry.record, entry.record.my_number, entry.history)


def _prepare_serialized(record: bytes, history: tuple[bytes, ...]) -> tuple[PreparedRecord, IndexEntries]:
    current = records_pb2.ResidentRecord.FromString(record)
    return prepare_resident(
        current, current.my_number, [records_pb2.ResidentRecord.FromString(old) for old in history]
    )


# A batch from the generator process: residents it prepared (it keeps their index entries), or residents as
# serialized records (the current version, then its history) for this process to prepare.
_Batch = tuple[bool, list[PreparedRecord] | list[tuple[bytes, tuple[bytes, ...]]]]
_GENERATOR_MAIN = "from server.seed.load import _generator_main; _generator_main()"


class _Generator:
    """A second process that generates a population, shares the preparing, and sorts the index entries.

    Neither process waits for the other: the generator prepares a batch itself while this process is behind
    (batches queue up in the generator), and otherwise sends it serialized, for this process to prepare. The
    4情報 and municipality index entries (half of all entries) stay in the generator or are sent there, and
    when the population is out it sorts them while this process seals, sorts and writes the rest. Keys never
    leave this process.

    It is a fresh interpreter (not a fork: this process may hold an LMDB environment and threads; not
    multiprocessing's spawn either, which would run the caller's main module again). On its stdin it reads
    the population's parameters and how to batch (a pickle), then the index entries of the batches
    prepared here, until EOF; on a pipe it sends batches, None, then the sorted index lists, or its
    exception's text. Both ways, frames are marshal dumps (plain tuples, bytes and str; three times faster
    to write than pickles), each after its length.
    """

    def __init__(self, population: Population) -> None:
        read_fd, write_fd = os.pipe()
        _widen(write_fd)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _GENERATOR_MAIN, str(write_fd)],
                stdin=subprocess.PIPE,
                pass_fds=(write_fd,),
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            )
        finally:
            os.close(write_fd)
        self._from = os.fdopen(read_fd, "rb", buffering=0)
        assert self._process.stdin is not None
        self._to = self._process.stdin
        try:
            _widen(self._to.fileno())
            pickle.dump((population, _BATCH, _SHARE_PREPARING), self._to)
            self._to.flush()
        except BaseException:
            self.__exit__()
            raise

    def __enter__(self) -> _Generator:
        return self

    def __exit__(self, *exc: object) -> None:
        self._from.close()
        with contextlib.suppress(BrokenPipeError):
            self._to.close()
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()

    def batches(self) -> Iterator[list[PreparedRecord]]:
        """The residents' prepared records, batch by batch; index entries of those prepared here go back."""
        while (message := self._receive()) is not None:
            serialized, batch = message
            if not serialized:
                yield batch
                continue
            records, indexes = zip(*(_prepare_serialized(*resident) for resident in batch), strict=True)
            _write_frame(self._to, marshal.dumps(indexes, _MARSHAL))
            yield list(records)
        self._to.close()  # all index entries are there: the generator sorts them now

    def sorted_indexes(self) -> Iterator[list[tuple[bytes, bytes]]]:
        """The entries of INDEX_DATABASES, each sorted by key, in that order (after `batches`)."""
        return (self._receive() for _ in INDEX_DATABASES)

    def _receive(self) -> Any:
        message = marshal.loads(_read_frame(self._from))
        if isinstance(message, str):
            raise RuntimeError(f"the seed generator failed:\n{message}")
        return message


def _widen(fd: int) -> None:
    """A 1 MiB pipe buffer (Linux) rather than 64 KiB: frames are megabytes, and each time the buffer
    fills the writer waits for the reader."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is not None:
        with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size: the default works too
            fcntl.fcntl(fd, set_size, 1 << 20)


def _write_frame(stream: IO[bytes], payload: bytes) -> None:
    stream.write(_FRAME.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def _read_frame(stream: io.RawIOBase) -> bytearray:
    """One frame: its length, then that many bytes."""
    header = _read_exactly(stream, _FRAME.size)
    return _read_exactly(stream, _FRAME.unpack(header)[0])


def _read_exactly(stream: io.RawIOBase, size: int) -> bytearray:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = stream.readinto(view[got:])
        if not n:
            raise RuntimeError("the seed generator stopped before it finished")
        got += n
    return buffer


def _generator_main() -> None:
    """The second process (see `_Generator`). Threads move the frames, so generating goes on while the
    other process is busy; a batch is prepared here when earlier ones are still queued for sending."""
    gc.disable()  # see `load`
    received = sys.stdin.buffer
    population, batch_size, share = pickle.load(received)
    indexes = IndexLists()
    sent_back: list[bytes] = []  # index entries of the batches the other process prepared
    outbox: queue.Queue[bytes | None] = queue.Queue(maxsize=4)

    def send() -> None:
        with os.fdopen(int(sys.argv[1]), "wb") as pipe:
            while (payload := outbox.get()) is not None:
                _write_frame(pipe, payload)

    def receive() -> None:
        while header := received.read(_FRAME.size):
            sent_back.append(received.read(_FRAME.unpack(header)[0]))

    sender = threading.Thread(target=send, name="seed-sender")
    receiver = threading.Thread(target=receive, name="seed-receiver", daemon=True)
    sender.start()
    receiver.start()
    try:
        for batch in _batches(population, batch_size):
            message: _Batch
            if share and outbox.empty():
                message = (True, [(e.record.SerializeToString(), _serialized(e.history)) for e in batch])
            else:
                records, entries = zip(*map(_prepare, batch), strict=True)
                indexes.add(entries)
                message = (False, list(records))
            outbox.put(marshal.dumps(message, _MARSHAL))
        outbox.put(marshal.dumps(None, _MARSHAL))
        receiver.join()
        while sent_back:
            indexes.add(marshal.loads(sent_back.pop()))
        for index in indexes.sorted():
            outbox.put(marshal.dumps(index, _MARSHAL))
            del index  # let go of each list once it is sent
    except BaseException:
        outbox.put(marshal.dumps(traceback.format_exc(), _MARSHAL))
        raise
    finally:
        outbox.put(None)
        sender.join()


def _serialized(history: tuple[records_pb2.ResidentRecord, ...]) -> tuple[bytes, ...]:
    return tuple(old.SerializeToString() for old in history) if history else ()
