"""The writer of the audit trail (監査証跡): append-only, hash-chained, a Merkle log with signed checkpoints.

Every entry is also leaf seq − 1 of the trail's Merkle tree (RFC 9162 hashing, `merkle`): it is added to a
compact range (one leaf hash, amortised one node hash, nothing re-read) off the caller's path, by the next
flush or checkpoint (`append()` only keeps the written line), and the hashes reach the tree files (`tree`)
at that flush, after the entries themselves are synced. A checkpoint carries the tree size and root as a
C2SP signed note (`note`); the server hands every checkpoint to a witness (`witness`).

Durability window: `append()` hands its line to the OS (one `write` on an O_APPEND descriptor) before it
returns, so an entry survives a crash of the process; it survives a crash of the machine once `flush()`
(every 100 ms, from the server) or a checkpoint has fsynced it. A checkpoint is written only after the
entries it names are on disk, so a crash can lose unflushed entries after the last checkpoint but never
makes a checkpoint name an entry that is not there.

Fail closed: when a line cannot be written (ENOSPC, EROFS, EIO, EFBIG, …) `append()` raises
`AuditUnavailable`, leaves the file exactly as it was (a partial line is cut off again) and does not advance
`seq` or the chain, so the next successful append continues an intact chain.

One writer per directory: the trail holds an exclusive lock on `<directory>/.lock` while it is open.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

from server.audit.entries import (
    CHECKPOINT_GENESIS_PREV,
    CHECKPOINTS,
    JST,
    LOCK_FILE,
    AuditEvent,
    canonical,
    encode_entry,
    format_time,
    jst_now,
    lines_backwards,
    list_segments,
    month_end,
    parse_entry,
    parse_time,
    read_lines,
    segment_month,
    segment_name,
    segments_from,
    sha256_hex,
)
from server.audit.keys import AuditKeys
from server.audit.merkle import CompactRange, leaf_hash
from server.audit.note import Checkpoint, sign
from server.audit.subjects import SubjectIndex, disclosed
from server.audit.tree import LEVELS, TreeReader, TreeWriter, repair
from server.storage.errors import StorageError

log = logging.getLogger(__name__)

_TAIL_CHUNK = 64 * 1024
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class AuditUnavailable(Exception):
    """An audit line could not be written: the call must fail and return no data (SPEC §4.4)."""

    def __init__(self, message: str, error: OSError | None = None) -> None:
        super().__init__(message)
        self.errno = error.errno if error is not None else None


class Erased(NamedTuple):
    """What a retention run removed: counts only, never identities."""

    segments: int
    entries: int


class _Tail(NamedTuple):
    seq: int
    hash: str
    segment: str


def _years_before(moment: dt.datetime, years: int) -> dt.datetime:
    try:
        return moment.replace(year=moment.year - years)
    except ValueError:  # 29 February
        return moment.replace(year=moment.year - years, day=28)


def _complete_size(fd: int, size: int) -> int:
    """The size of the file up to and including its last `\\n` (0 when it has none)."""
    end = size
    while end > 0:
        start = max(0, end - _TAIL_CHUNK)
        chunk = os.pread(fd, end - start, start)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        end = start
    return 0


def _cut_torn_tail(path: Path) -> int:
    """Truncate a line a crash left without its `\\n`; the number of bytes cut."""
    fd = os.open(path, os.O_RDWR | _O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return 0
        keep = _complete_size(fd, size)
        os.ftruncate(fd, keep)
        os.fsync(fd)
        return size - keep
    finally:
        os.close(fd)


class _AppendFile:
    """One O_APPEND file that is only ever extended by whole lines, or left as it was."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | _O_CLOEXEC, 0o600)
        self.size = os.fstat(self.fd).st_size
        self.dirty: int | None = None  # offset to cut back to before the next write (a failed cut)

    def write_line(self, data: bytes) -> None:
        """Write all of `data` or nothing; OSError when not written (the file is then as before)."""
        if self.dirty is not None:
            os.ftruncate(self.fd, self.dirty)  # OSError: still unwritable, nothing written
            self.size = self.dirty
            self.dirty = None
        before = self.size
        try:
            written = os.write(self.fd, data)
            while written < len(data):  # a short write: the next one says why (ENOSPC, EFBIG)
                n = os.write(self.fd, data[written:])
                if n <= 0:
                    raise OSError(errno.EIO, "short write to the audit trail")
                written += n
        except OSError:
            self._cut_back(before)
            raise
        self.size = before + written

    def _cut_back(self, offset: int) -> None:
        try:
            if os.fstat(self.fd).st_size != offset:
                os.ftruncate(self.fd, offset)
        except OSError:
            self.dirty = offset
            log.error("audit trail: a partial line could not be cut off yet; retried before the next write")

    def close(self) -> None:
        os.close(self.fd)


class AuditTrail:
    """The append side of one trail directory. Thread-safe; one per process and directory.

    `append` runs on the caller's thread (microseconds); `flush`, `maybe_checkpoint` and `erase_expired`
    fsync and may take milliseconds, so the server runs them off the event loop.
    """

    def __init__(
        self,
        directory: Path,
        keys: AuditKeys,
        *,
        now: Callable[[], dt.datetime],
        checkpoint_interval: float,
        heartbeat_interval: float,
        origin: str,
        lock_fd: int,
    ) -> None:
        self.directory = directory
        self.origin = origin
        self.failures = 0
        self.recovered_torn_bytes = 0
        self.last_error: OSError | None = None
        self._keys = keys
        self._now = now
        self._interval = checkpoint_interval
        self._heartbeat = heartbeat_interval
        self._tree = CompactRange()  # the tree, its files and `_unhashed` are touched under _sync_lock only
        self._tree_files: TreeWriter | None = None
        self._unhashed: list[bytes] = []  # lines appended since the tree was last brought up to date
        self._index: SubjectIndex | None = None
        self._unindexed: list[tuple[int, tuple[str, ...]]] = []  # (seq, subjects) for the subject index
        self._indexed = 0  # the seq the index is written through
        self._lock_fd = lock_fd
        self._lock = threading.Lock()  # the head: seq, hash, current segment
        self._sync_lock = threading.Lock()  # fsync, checkpoints, erasure, close
        self._dir_fd = os.open(directory, os.O_RDONLY | _O_CLOEXEC)
        self._segment: _AppendFile | None = None
        self._segment_key = 0
        self._retired: list[_AppendFile] = []
        self._unsynced = False
        self._dir_unsynced = False
        self._seq = 0
        self._head = ""
        self._head_segment = ""
        self._checkpoints: _AppendFile | None = None
        self._cp_prev = CHECKPOINT_GENESIS_PREV
        self._cp_seq = 0
        self._cp_time: dt.datetime | None = None
        self._closed = False
        self._healthy = True

    # ---- opening -------------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: Path,
        keys: AuditKeys,
        *,
        now: Callable[[], dt.datetime] = jst_now,
        checkpoint_interval: float = 5.0,
        heartbeat_interval: float = 60.0,
        origin: str | None = None,
    ) -> AuditTrail:
        """Open (or start) the trail in `directory`, recovering its head and Merkle tree after a crash.

        `origin`: the log's name in its checkpoints (default `jukinet/audit/<directory name>`).

        Raises AuditUnavailable when another process holds the trail or the directory cannot be written.
        """
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock_fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | _O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise AuditUnavailable(f"another process is writing the audit trail in {directory}") from None
        trail = cls(
            directory,
            keys,
            now=now,
            checkpoint_interval=checkpoint_interval,
            heartbeat_interval=heartbeat_interval,
            origin=origin or f"jukinet/audit/{directory.name}",
            lock_fd=lock_fd,
        )
        try:
            trail._recover()
        except OSError as e:
            trail._close_files()
            raise AuditUnavailable(f"the audit trail in {directory} cannot be opened: {e}", e) from e
        except BaseException:
            trail._close_files()
            raise
        return trail

    def _recover(self) -> None:
        segments = list_segments(self.directory)
        tail: _Tail | None = None
        for name in reversed(segments):  # the newest segment with an entry holds the head
            self.recovered_torn_bytes += _cut_torn_tail(self.directory / name)
            tail = self._last_entry(name)
            if tail is not None:
                break
        cp_path = self.directory / CHECKPOINTS
        last_cp: dict[str, Any] | None = None
        if cp_path.exists():
            self.recovered_torn_bytes += _cut_torn_tail(cp_path)
            last_cp = self._last_checkpoint(cp_path)
        fresh = not segments and last_cp is None
        self._checkpoints = _AppendFile(cp_path)
        if last_cp is not None:
            self._cp_seq = last_cp["seq"]
            self._cp_time = last_cp["time"]
            self._cp_prev = last_cp["_line_hash"]
            if tail is None or tail.seq < self._cp_seq:
                if tail is not None:
                    log.error(
                        "audit trail ends before its last checkpoint; continuing after the checkpoint",
                        extra={"trail_seq": tail.seq, "checkpoint_seq": self._cp_seq},
                    )
                tail = _Tail(self._cp_seq, last_cp["hash"], last_cp["segment"])
        if segments:
            newest = segments[-1]
            self._segment = _AppendFile(self.directory / newest)
            self._segment_key = segment_month(newest) or 0
        if tail is not None:
            self._seq, self._head, self._head_segment = tail
        self._recover_tree()
        self._index = SubjectIndex(self.directory)
        self._index.rebuild(self.directory, self._seq)
        self._indexed = self._seq
        if self.recovered_torn_bytes:
            log.warning("audit trail: cut a torn last line", extra={"bytes": self.recovered_torn_bytes})
        if fresh:
            self._head = sha256_hex(
                f"jukinet audit trail {self.directory.name} {secrets.token_hex(16)}".encode()
            )
            with self._sync_lock:
                self._write_checkpoint("genesis", {})
        elif last_cp is None:
            log.error("audit trail has entries but no checkpoints.log; verification will say so")
        os.fsync(self._dir_fd)

    def _recover_tree(self) -> None:
        """The compact range of the tree files, completed from the trail where a crash (or an older
        version of the trail, without a tree) left it behind the entries."""
        size = repair(self.directory)
        with TreeReader(self.directory) as reader:
            if size > self._seq:  # entries after the last checkpoint are gone, their leaves are not
                log.error(
                    "audit trail ends before its Merkle tree; continuing after the tree",
                    extra={"trail_seq": self._seq, "tree_size": size},
                )
                self._seq, self._head = size, reader.leaf(size - 1).hex()
            tree = CompactRange.of(size, reader.subtree)
        self._tree_files = TreeWriter(self.directory, size)
        self._tree = CompactRange(
            tree.size, tree.nodes, levels=frozenset(LEVELS[1:]), on_node=self._tree_files.node
        )
        if size < self._seq:
            self._rebuild_tree(size)
            self._flush_tree()

    def _rebuild_tree(self, size: int) -> None:
        """Add the leaves of the entries after leaf `size`, read from the segments (once)."""
        missing = 0
        for name in segments_from(self.directory, size + 1):
            for _, raw in read_lines(self.directory / name):
                entry = parse_entry(raw) if raw.endswith(b"\n") else None
                if entry is None or entry["seq"] <= self._tree.size:
                    continue
                while self._tree.size < min(entry["seq"], self._seq + 1) - 1:  # a gap: unknown leaves
                    self._add_leaf(leaf_hash(b""))
                    missing += 1
                if self._tree.size < self._seq:
                    self._add_leaf(leaf_hash(raw[:-1]))
        while self._tree.size < self._seq:
            self._add_leaf(leaf_hash(b""))
            missing += 1
        if missing:
            log.error(
                "audit trail: entries missing when rebuilding its Merkle tree", extra={"missing": missing}
            )
        if size:
            log.warning(
                "audit Merkle tree completed from the trail", extra={"leaves": self._tree.size - size}
            )

    def _add_leaf(self, leaf: bytes) -> None:
        self._tree.append(leaf)
        assert self._tree_files is not None
        self._tree_files.leaf(leaf)

    def _flush_tree(self) -> None:
        assert self._tree_files is not None
        taken = self._tree_files.take()
        try:
            self._tree_files.write(taken)
        except OSError:
            self._tree_files.put_back(taken)
            raise

    def _last_entry(self, name: str) -> _Tail | None:
        fd = os.open(self.directory / name, os.O_RDONLY | _O_CLOEXEC)
        try:
            for raw in lines_backwards(fd, os.fstat(fd).st_size):
                entry = parse_entry(raw)
                if entry is not None:
                    return _Tail(entry["seq"], entry["hash"], name)
                log.error("audit trail: skipping an unreadable line at the end of a segment")
        finally:
            os.close(fd)
        return None

    @staticmethod
    def _last_checkpoint(path: Path) -> dict[str, Any] | None:
        fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
        try:
            for raw in lines_backwards(fd, os.fstat(fd).st_size):
                try:
                    cp = json.loads(raw)
                    if not isinstance(cp, dict) or not isinstance(cp.get("seq"), int):
                        continue
                    if not isinstance(cp.get("hash"), str) or not isinstance(cp.get("segment"), str):
                        continue
                    cp["time"] = parse_time(cp["time"])
                    if cp["time"].tzinfo is None:
                        continue
                except (ValueError, TypeError, KeyError):
                    continue  # not a checkpoint: verification reports it; chain onto the last real one
                cp["_line_hash"] = sha256_hex(raw)
                return cp
        finally:
            os.close(fd)
        return None

    # ---- the hot path --------------------------------------------------------------------------------

    @property
    def seq(self) -> int:
        """The seq of the last entry written."""
        return self._seq

    @property
    def head(self) -> str:
        """The hash of the last entry written (the chain head)."""
        return self._head

    @property
    def healthy(self) -> bool:
        """False after a failed write until the next successful one (for readiness probes)."""
        return self._healthy and not self._closed

    def subject_hash(self, resident_code: str) -> str:
        return self._keys.subject_hash(resident_code)

    def append(self, event: AuditEvent) -> int:
        """Write one entry (to the OS, before returning); its seq. AuditUnavailable when not written."""
        with self._lock:
            if self._closed:
                raise AuditUnavailable("the audit trail is closed")
            moment = self._now()
            if moment.tzinfo is None:
                raise ValueError("the audit clock must return timezone-aware datetimes")
            moment = moment.astimezone(JST)
            key = moment.year * 100 + moment.month
            segment = self._segment
            if segment is None or key > self._segment_key:  # a clock that steps back never reopens a month
                segment = self._rotate(key)
            seq = self._seq + 1
            digest, line = encode_entry(event, seq, moment.isoformat(timespec="microseconds"), self._head)
            try:
                data = line.encode()
            except UnicodeEncodeError:  # a lone surrogate cannot be UTF-8: keep the entry, mark the spot
                digest, line = encode_entry(
                    _clean(event), seq, moment.isoformat(timespec="microseconds"), self._head
                )
                data = line.encode()
            try:
                segment.write_line(data)
            except OSError as e:
                raise self._failed("an audit entry could not be written", e) from e
            self._unhashed.append(data)
            if event.subjects and disclosed(event.kind, event.outcome):
                self._unindexed.append((seq, event.subjects))
            self._seq = seq
            self._head = digest
            self._head_segment = segment.path.name
            self._unsynced = True
            self._healthy = True
            return seq

    def _rotate(self, key: int) -> _AppendFile:
        if self._segment is not None and self._segment.dirty is not None:
            try:  # leave the old month's file whole before leaving it
                os.ftruncate(self._segment.fd, self._segment.dirty)
                self._segment.dirty = None
            except OSError as e:
                raise self._failed("the audit trail could not be repaired", e) from e
        try:
            segment = _AppendFile(self.directory / segment_name(key))
        except OSError as e:
            raise self._failed("a new audit segment could not be created", e) from e
        if self._segment is not None:
            self._retired.append(self._segment)  # fsynced and closed by the next flush
        self._segment = segment
        self._segment_key = key
        self._dir_unsynced = True
        return segment

    def _failed(self, message: str, error: OSError) -> AuditUnavailable:
        self.failures += 1
        self.last_error = error
        self._healthy = False
        log.error(message, extra={"errno": error.errno, "failures": self.failures})
        return AuditUnavailable(f"{message}: {error.strerror or error}", error)

    # ---- durability ----------------------------------------------------------------------------------

    def flush(self) -> None:
        """fsync what was appended since the last flush (the server calls this every 100 ms)."""
        with self._sync_lock:
            self._flush_locked()

    def _hash(self, lines: list[bytes]) -> None:
        """Add the leaves of lines taken from `_unhashed` (under _sync_lock, off the caller's path)."""
        for data in lines:
            self._add_leaf(leaf_hash(data[:-1]))

    def _flush_locked(self) -> None:
        with self._lock:
            unhashed, self._unhashed = self._unhashed, []
            unindexed, self._unindexed, through = self._unindexed, [], self._seq
            current = self._segment if self._unsynced else None
            retired = self._retired
            sync_dir = self._dir_unsynced
            self._retired = []
            self._unsynced = False
            self._dir_unsynced = False
        self._hash(unhashed)  # in memory: the leaves are written below, only after their entries are synced
        try:
            while retired:
                os.fsync(retired[0].fd)
                retired.pop(0).close()
            if current is not None:
                os.fsync(current.fd)
            if sync_dir:
                os.fsync(self._dir_fd)
            self._flush_tree()  # after the entries: a leaf on disk always has its entry on disk
            if self._index is not None and (unindexed or through > self._indexed):
                self._index.add(unindexed, through)
                self._indexed = through
            unindexed = []
        except (OSError, StorageError) as e:
            if not isinstance(e, OSError):
                e = OSError(errno.EIO, f"the subject index could not be written: {e}")
            with self._lock:
                self._unindexed[:0] = unindexed
                self._retired[:0] = retired
                self._unsynced = self._unsynced or current is not None
                self._dir_unsynced = self._dir_unsynced or sync_dir
            raise self._failed("the audit trail could not be synced to disk", e) from e

    def maybe_checkpoint(self) -> dict[str, Any] | None:
        """An interval checkpoint when new entries exist and `checkpoint_interval` has passed, a
        heartbeat when none came for `heartbeat_interval`; the checkpoint written, or None."""
        idle = self._seq == self._cp_seq
        moment = self._now()
        since = (moment - self._cp_time).total_seconds() if self._cp_time is not None else None
        if since is not None and since < (self._heartbeat if idle else self._interval):
            return None
        with self._sync_lock:
            if self._closed:
                return None
            return self._checkpoint_locked("heartbeat" if self._seq == self._cp_seq else "interval", {})

    def checkpoint(self) -> dict[str, Any]:
        """Sync the trail and sign a checkpoint of its head now; the checkpoint written."""
        with self._sync_lock:
            if self._closed:
                raise AuditUnavailable("the audit trail is closed")
            return self._checkpoint_locked("interval", {})

    def _checkpoint_locked(self, kind: str, extra: dict[str, Any]) -> dict[str, Any]:
        head = self._snapshot()
        self._flush_locked()  # the entries (and leaves) a checkpoint names are on disk before it is
        return self._write_checkpoint(kind, extra, head)

    def _snapshot(self) -> tuple[int, str, str, bytes]:
        """The head and the tree root over exactly the entries up to it (under _sync_lock)."""
        with self._lock:
            unhashed, self._unhashed = self._unhashed, []
            seq, head, segment = self._seq, self._head, self._head_segment
        self._hash(unhashed)
        assert self._tree.size == seq
        return seq, head, segment, self._tree.root()

    def _write_checkpoint(
        self, kind: str, extra: dict[str, Any], head: tuple[int, str, str, bytes] | None = None
    ) -> dict[str, Any]:
        assert self._checkpoints is not None
        seq, digest, segment, root = head or self._snapshot()
        moment = self._now()
        note = sign(Checkpoint(self.origin, seq, root), self.origin, self._keys.signing_key)
        body: dict[str, Any] = {
            "seq": seq,
            "hash": digest,
            "time": format_time(moment),
            "segment": segment,
            "kind": kind,
            "prev": self._cp_prev,
            "note": note.text(),
            **extra,
        }
        body["sig"] = self._keys.signing_key.sign(canonical(body).encode()).hex()
        data = (canonical(body) + "\n").encode()
        try:
            self._checkpoints.write_line(data)
        except OSError as e:
            raise self._failed("an audit checkpoint could not be written", e) from e
        self._cp_prev = sha256_hex(data)
        self._cp_seq = seq
        self._cp_time = moment
        try:
            os.fsync(self._checkpoints.fd)
        except OSError as e:
            raise self._failed("an audit checkpoint could not be synced to disk", e) from e
        return body

    # ---- retention -----------------------------------------------------------------------------------

    def erase_expired(self, now: dt.datetime, years: int = 7) -> Erased:
        """Delete whole segments whose month ended more than `years` before `now` (SPEC §6.4).

        Never the segment being written or the one holding the head. An "erasure" checkpoint naming the
        erased segments and the seq and hash of their last entries is written (and synced) first, so that
        the rest of the trail verifies from that signed anchor.
        """
        cutoff = _years_before(now, years)
        with self._sync_lock:
            if self._closed:
                raise AuditUnavailable("the audit trail is closed")
            with self._lock:
                keep = {self._head_segment, self._segment.path.name if self._segment else ""}
            expired: list[str] = []
            for name in list_segments(self.directory):
                key = segment_month(name)
                if name in keep or key is None or month_end(key) >= cutoff:
                    break
                expired.append(name)
            if not expired:
                return Erased(0, 0)
            erased = [self._summarise(name) for name in expired]
            last = next((e for e in reversed(erased) if e["entries"]), None)
            self._checkpoint_locked(
                "erasure",
                {
                    "erased": erased,
                    "erased_seq": last["last_seq"] if last else None,
                    "erased_hash": last["last_hash"] if last else None,
                },
            )
            for name in expired:  # oldest first: an interrupted run leaves a contiguous trail
                (self.directory / name).unlink(missing_ok=True)
            os.fsync(self._dir_fd)
        result = Erased(len(expired), sum(int(e["entries"]) for e in erased))
        log.info("audit segments erased", extra={"segments": result.segments, "entries": result.entries})
        return result

    def _summarise(self, name: str) -> dict[str, Any]:
        first: dict[str, Any] | None = None
        last: dict[str, Any] | None = None
        count = 0
        for _, raw in read_lines(self.directory / name):
            entry = parse_entry(raw) if raw.endswith(b"\n") else None
            if entry is None:
                continue
            count += 1
            if first is None:
                first = entry
            last = entry
        return {
            "segment": name,
            "entries": count,
            "first_seq": first["seq"] if first else None,
            "last_seq": last["seq"] if last else None,
            "last_hash": last["hash"] if last else None,
        }

    # ---- closing -------------------------------------------------------------------------------------

    def close(self) -> dict[str, Any] | None:
        """Sync, write the "shutdown" checkpoint and release the trail; the checkpoint (None: closed)."""
        with self._sync_lock:
            if self._closed:
                return None
            try:
                return self._checkpoint_locked("shutdown", {})
            finally:
                with self._lock:
                    self._closed = True
                self._close_files()

    def _close_files(self) -> None:
        files = [*self._retired, self._segment, self._checkpoints]
        self._retired = []
        self._segment = self._checkpoints = None
        for f in files:
            if f is not None:
                f.close()
        if self._tree_files is not None:
            self._tree_files.close()
            self._tree_files = None
        for fd in (self._dir_fd, self._lock_fd):
            os.close(fd)  # closing the lock descriptor releases the flock

    def __enter__(self) -> AuditTrail:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _clean(event: AuditEvent) -> AuditEvent:
    """The event with every string made encodable (a lone surrogate becomes "?")."""

    def fix(s: str) -> str:
        return s.encode("utf-8", "replace").decode("utf-8")

    return AuditEvent(
        caller=fix(event.caller),
        role=fix(event.role),
        method=fix(event.method),
        purpose=fix(event.purpose),
        outcome=fix(event.outcome),
        subjects=tuple(map(fix, event.subjects)),
        items=tuple(map(fix, event.items)),
        request_id=fix(event.request_id),
        source=fix(event.source),
        count=event.count,
        kind=fix(event.kind),
        requester=fix(event.requester),
        part=event.part,
    )
