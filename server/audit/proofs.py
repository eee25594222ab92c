"""Proofs of a trail directory, read from its files (the tree files, checkpoints.log, the segments).

Only checkpointed sizes are proven: a proof is worth something only next to a signed checkpoint of the size
it leads to. The files are read, never written, so a proof can be served by any process (the server, or
an auditor's copy). An entry is found by seq with a binary search over the offsets of its segment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from server.audit.entries import CHECKPOINTS, list_segments, parse_entry, read_lines
from server.audit.merkle import consistency_proof, inclusion_proof
from server.audit.tree import TreeReader

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class NoProof(LookupError):
    """What was asked for is not in the trail (no such entry, no checkpoint of that size)."""


@dataclass(frozen=True)
class Inclusion:
    index: int
    size: int
    hashes: list[bytes]
    entry: bytes  # the entry line without its `\n`
    checkpoint: str  # the signed note of `size`


@dataclass(frozen=True)
class Consistency:
    first: int
    second: int
    hashes: list[bytes]
    first_checkpoint: str
    second_checkpoint: str


def _notes(directory: Path) -> Iterator[tuple[int, str]]:
    """(size, note) of every checkpoint line carrying a signed note, in file order."""
    for _, raw in read_lines(directory / CHECKPOINTS):
        try:
            cp = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(cp, dict) and isinstance(cp.get("note"), str) and isinstance(cp.get("seq"), int):
            yield cp["seq"], cp["note"]


def checkpoint_note(directory: Path, size: int = 0) -> tuple[int, str]:
    """(size, note) of the newest checkpoint (size 0) or of the newest one of exactly `size`."""
    found: tuple[int, str] | None = None
    for seq, note in _notes(directory):
        if size == 0 or seq == size:
            found = (seq, note)
    if found is None:
        raise NoProof("no signed checkpoint of that size" if size else "no signed checkpoint yet")
    return found


def _line_at(fd: int, offset: int, end: int) -> bytes | None:
    """The complete line starting at `offset` (with its `\\n`), None when there is none."""
    size = 4096
    while True:
        chunk = os.pread(fd, size, offset)
        cut = chunk.find(b"\n")
        if cut >= 0:
            return chunk[: cut + 1]
        if offset + len(chunk) >= end or size >= 1 << 20:
            return None
        size *= 4


def _seq_at(fd: int, offset: int, end: int) -> tuple[int, int, bytes] | None:
    """(seq, offset, line) of the first entry line starting at or after `offset`."""
    if offset and os.pread(fd, 1, offset - 1) != b"\n":
        partial = _line_at(fd, offset, end)
        if partial is None:
            return None
        offset += len(partial)
    while offset < end:
        line = _line_at(fd, offset, end)
        if line is None:
            return None
        entry = parse_entry(line)
        if entry is not None:
            return int(entry["seq"]), offset, line
        offset += len(line)
    return None


def find_entry(directory: Path, seq: int) -> bytes:
    """The line of entry `seq` (without its `\\n`); NoProof when the trail does not hold it."""
    for name in reversed(list_segments(directory)):
        fd = os.open(directory / name, os.O_RDONLY | _O_CLOEXEC)
        try:
            end = os.fstat(fd).st_size
            first = _seq_at(fd, 0, end)
            if first is None or first[0] > seq:
                continue
            lo, hi = 0, end  # the entry, if in order here, starts in [lo, hi)
            while hi - lo > 4096:
                mid = (lo + hi) // 2
                found = _seq_at(fd, mid, end)
                if found is None or found[0] > seq:
                    hi = mid
                elif found[0] == seq:
                    return found[2][:-1]
                else:
                    lo = found[1] + len(found[2])
            at = lo
            while (found := _seq_at(fd, at, end)) is not None and found[0] <= seq:
                if found[0] == seq:
                    return found[2][:-1]
                at = found[1] + len(found[2])
            for _, raw in read_lines(directory / name):  # out of order (tampered): a plain scan
                entry = parse_entry(raw) if raw.endswith(b"\n") else None
                if entry is not None and entry["seq"] == seq:
                    return raw[:-1]
        finally:
            os.close(fd)
    raise NoProof(f"the trail holds no entry seq {seq}")


def inclusion(directory: Path, seq: int, size: int = 0) -> Inclusion:
    size, note = checkpoint_note(directory, size)
    if not 1 <= seq <= size:
        raise NoProof(f"seq {seq} is not in the checkpoint of size {size}")
    entry = find_entry(directory, seq)
    with TreeReader(directory) as reader:
        if reader.size < size:
            raise NoProof("the Merkle tree files are shorter than the checkpoint")
        hashes = inclusion_proof(reader.subtree, seq - 1, size)
    return Inclusion(seq - 1, size, hashes, entry, note)


def consistency(directory: Path, first: int, second: int = 0) -> Consistency:
    second, second_note = checkpoint_note(directory, second)
    if not 0 <= first <= second:
        raise NoProof(f"size {first} is not at or before the checkpoint of size {second}")
    try:
        first_note = checkpoint_note(directory, first)[1] if first else ""
    except NoProof:
        first_note = ""  # a size no checkpoint here names (e.g. the witness's, from another copy)
    with TreeReader(directory) as reader:
        if reader.size < second:
            raise NoProof("the Merkle tree files are shorter than the checkpoint")
        hashes = consistency_proof(reader.subtree, first, second)
    return Consistency(first, second, hashes, first_note, second_note)
