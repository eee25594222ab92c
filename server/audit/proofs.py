"""Proofs of a trail directory, read from its files (the tree files, checkpoints.log, the segments).

Only checkpointed sizes are proven: a proof is worth something only next to a signed checkpoint of the size
it leads to. The files are read, never written, so a proof can be served by any process (the server, or
an auditor's copy). An entry is found by seq with a binary search over the offsets of its segment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from server.audit.entries import CHECKPOINTS, lines_backwards, list_segments, parse_entry, read_lines
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


def _note_of(raw: bytes) -> tuple[int, str] | None:
    try:
        cp = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(cp, dict) and isinstance(cp.get("note"), str) and isinstance(cp.get("seq"), int):
        return cp["seq"], cp["note"]
    return None


def checkpoint_note(directory: Path, size: int = 0) -> tuple[int, str]:
    """(size, note) of the newest checkpoint (size 0, read from the end) or of one of exactly `size`
    (a binary search: checkpoints.log is in size order), without reading the whole file."""
    try:
        fd = os.open(directory / CHECKPOINTS, os.O_RDONLY | _O_CLOEXEC)
    except FileNotFoundError:
        raise NoProof("no signed checkpoint yet") from None
    try:
        end = os.fstat(fd).st_size
        if size == 0:
            for raw in lines_backwards(fd, end):
                found = _note_of(raw)
                if found is not None:
                    return found
            raise NoProof("no signed checkpoint yet")
        hit = _search(fd, end, size, lambda line: n[0] if (n := _note_of(line)) else None)
        if hit is not None:
            note = _note_of(hit)
            assert note is not None
            return note
    finally:
        os.close(fd)
    raise NoProof("no signed checkpoint of that size")


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


def _entry_seq(line: bytes) -> int | None:
    entry = parse_entry(line)
    return int(entry["seq"]) if entry is not None else None


def _seq_at(
    fd: int, offset: int, end: int, seq_of: Callable[[bytes], int | None] = _entry_seq
) -> tuple[int, int, bytes] | None:
    """(seq, offset, line) of the first line with a seq starting at or after `offset`."""
    if offset and os.pread(fd, 1, offset - 1) != b"\n":
        partial = _line_at(fd, offset, end)
        if partial is None:
            return None
        offset += len(partial)
    while offset < end:
        line = _line_at(fd, offset, end)
        if line is None:
            return None
        seq = seq_of(line)
        if seq is not None:
            return seq, offset, line
        offset += len(line)
    return None


def _search(fd: int, end: int, seq: int, seq_of: Callable[[bytes], int | None] = _entry_seq) -> bytes | None:
    """A line of `seq` in a file whose lines are in seq order (binary search over offsets); None if none."""
    lo, hi = 0, end  # the line, if here, starts in [lo, hi)
    while hi - lo > 4096:
        mid = (lo + hi) // 2
        found = _seq_at(fd, mid, end, seq_of)
        if found is None or found[0] > seq:
            hi = mid
        elif found[0] == seq:
            return found[2]
        else:
            lo = found[1] + len(found[2])
    at = lo
    while (found := _seq_at(fd, at, end, seq_of)) is not None and found[0] <= seq:
        if found[0] == seq:
            return found[2]
        at = found[1] + len(found[2])
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
            line = _search(fd, end, seq)
            if line is not None:
                return line[:-1]
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
