"""The Merkle tree files of a trail directory: what serves proofs without re-reading the entries.

`merkle-00.bin` holds every leaf hash (32 bytes each, leaf i at offset 32·i); `merkle-08.bin`,
`merkle-16.bin` and `merkle-24.bin` hold the roots of the aligned perfect subtrees of 2^8, 2^16 and 2^24
leaves, as the compact range completes them. So the hash of any aligned subtree is at most 255 hashes
away, and a proof at 10^8 entries reads a few kilobytes.

The files hold hashes only (nothing about a resident, not even the keyed subject hash) and are derived
from the entries: the writer buffers what it appends and writes it at each flush, after the entries
themselves are synced; at open it repairs a torn file and rebuilds what a crash lost from the trail. An
erased segment's entries stay in the tree as their leaf hashes: the erased range stays provable.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from server.audit.merkle import HASH_SIZE, mth, node_hash

LEVELS = (0, 8, 16, 24)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def level_file(directory: Path, level: int) -> Path:
    return directory / f"merkle-{level:02d}.bin"


class TreeReader:
    """Subtree hashes of the tree files of a directory, read with `pread` (read-only; for proofs)."""

    def __init__(self, directory: Path, levels: tuple[int, ...] = LEVELS) -> None:
        self.directory = directory
        self._fds: dict[int, int] = {}
        for level in levels:
            try:
                self._fds[level] = os.open(level_file(directory, level), os.O_RDONLY | _O_CLOEXEC)
            except FileNotFoundError:
                continue

    @property
    def size(self) -> int:
        """The number of leaves in the leaf file."""
        fd = self._fds.get(0)
        return os.fstat(fd).st_size // HASH_SIZE if fd is not None else 0

    def _read(self, level: int, index: int, count: int) -> list[bytes]:
        fd = self._fds.get(level)
        data = os.pread(fd, count * HASH_SIZE, index * HASH_SIZE) if fd is not None else b""
        if len(data) != count * HASH_SIZE:
            raise LookupError(f"the Merkle tree file of level {level} is shorter than the tree")
        return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]

    def subtree(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) of an aligned perfect subtree, from the nearest stored level below it."""
        height = (hi - lo).bit_length() - 1
        stored = max(level for level in LEVELS if level <= height and level in self._fds)
        hashes = self._read(stored, lo >> stored, 1 << (height - stored))
        while len(hashes) > 1:
            hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
        return hashes[0]

    def leaf(self, index: int) -> bytes:
        return self._read(0, index, 1)[0]

    def leaves(self, start: int = 0, chunk: int = 4096) -> Iterator[bytes]:
        """Every leaf hash from `start`, in order."""
        index, size = start, self.size
        while index < size:
            count = min(chunk, size - index)
            yield from self._read(0, index, count)
            index += count

    def root(self, size: int) -> bytes:
        return mth(self.subtree, 0, size)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> TreeReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def repair(directory: Path) -> int:
    """Make the tree files agree with the leaf file (a crash may tear any of them); the number of leaves.

    A torn hash is cut off; an upper level longer than the leaves allow is cut back, a shorter one is
    completed from the level below.
    """
    leaves_path = level_file(directory, 0)
    if not leaves_path.exists():
        for level in LEVELS[1:]:
            level_file(directory, level).unlink(missing_ok=True)
        return 0
    sizes: dict[int, int] = {}
    for level in LEVELS:
        path = level_file(directory, level)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _O_CLOEXEC, 0o600)
        try:
            size = os.fstat(fd).st_size
            whole = size - size % HASH_SIZE
            if level:
                whole = min(whole, (sizes[0] >> level) * HASH_SIZE)
            if whole != size:
                os.ftruncate(fd, whole)
            sizes[level] = whole // HASH_SIZE
            if level and sizes[level] < sizes[0] >> level:  # complete it from the level below
                with TreeReader(directory, LEVELS[: LEVELS.index(level)]) as reader:
                    extra = b"".join(
                        reader.subtree(i << level, (i + 1) << level)
                        for i in range(sizes[level], sizes[0] >> level)
                    )
                os.pwrite(fd, extra, sizes[level] * HASH_SIZE)
                sizes[level] = sizes[0] >> level
            os.fsync(fd)
        finally:
            os.close(fd)
    return sizes[0]


class TreeWriter:
    """Buffers the hashes the compact range produces and writes them to the files at `write()`.

    Each level is written at the offset it should end at (`pwrite`), so a write that failed half-way is
    simply written again by the next flush.
    """

    def __init__(self, directory: Path, size: int) -> None:
        self.directory = directory
        self._pending: dict[int, list[bytes]] = {level: [] for level in LEVELS}
        self._written = {level: size >> level for level in LEVELS}  # hashes on disk per level
        self._fds: dict[int, int] = {}
        try:
            for level in LEVELS:
                path = level_file(directory, level)
                self._fds[level] = os.open(path, os.O_WRONLY | os.O_CREAT | _O_CLOEXEC, 0o600)
        except OSError:
            self.close()
            raise

    def leaf(self, h: bytes) -> None:
        self._pending[0].append(h)

    def node(self, level: int, index: int, h: bytes) -> None:
        self._pending[level].append(h)

    def take(self) -> dict[int, list[bytes]]:
        """What is pending, per level."""
        out = {level: hashes for level, hashes in self._pending.items() if hashes}
        for level in out:
            self._pending[level] = []
        return out

    def put_back(self, taken: dict[int, list[bytes]]) -> None:
        """Return what a failed `write()` did not write, ahead of what was appended since."""
        for level, hashes in taken.items():
            self._pending[level][:0] = hashes

    def write(self, taken: dict[int, list[bytes]]) -> None:
        """Write and fsync what `take()` returned, leaves first; OSError when not all written."""
        for level in LEVELS:
            hashes = taken.get(level)
            if not hashes:
                continue
            data = b"".join(hashes)
            offset = self._written[level] * HASH_SIZE
            done = 0
            while done < len(data):
                done += os.pwrite(self._fds[level], data[done:], offset + done)
            os.fsync(self._fds[level])
            self._written[level] += len(hashes)
            del taken[level]

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
