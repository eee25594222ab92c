"""What a resident's disclosure (開示, 住基法 30条の32) lists from the audit trails, with its proofs.

Every provision (提供 / 移転) and every refusal concerning the resident, from the trail in the directory and
its worker trails, oldest first: found through the subject index (`subjects`), read by seq from the
segments, each with an inclusion proof to the trail's newest witnessed checkpoint (`witnessed.note`, the
cosigned note the server got back) or, before any was witnessed, its newest checkpoint. Entries written
after that checkpoint come without a proof (they are within the last checkpoint interval).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.audit.entries import WITNESSED_FILE, parse_entry, trail_directories
from server.audit.merkle import inclusion_proof, leaf_hash
from server.audit.note import Note, NoteError
from server.audit.proofs import NoProof, checkpoint_note, find_entry
from server.audit.subjects import disclosed, seqs_of
from server.audit.tree import TreeReader


@dataclass(frozen=True)
class Listed:
    entry: dict[str, Any]
    line: bytes  # the entry line (without `\n`): its leaf is SHA-256(0x00 || line)
    trail: str  # "" the main trail, "w1", …
    tree_size: int  # the checkpoint the proof leads to (0: none yet)
    proof: list[bytes]

    @property
    def seq(self) -> int:
        return int(self.entry["seq"])

    @property
    def leaf(self) -> bytes:
        return leaf_hash(self.line)


@dataclass
class Disclosure:
    entries: list[Listed] = field(default_factory=list)
    checkpoints: dict[str, str] = field(default_factory=dict)  # trail -> the note the proofs lead to


def _checkpoint(directory: Path) -> tuple[int, str] | None:
    try:
        text = (directory / WITNESSED_FILE).read_text(encoding="utf-8")
        return Note.parse(text).checkpoint().size, text
    except (OSError, NoteError):
        pass
    try:
        return checkpoint_note(directory)
    except NoProof:
        return None


def disclosure(directory: Path, subject: str, *, flush: Callable[[], None] | None = None) -> Disclosure:
    """The entries of one subject hash (`AuditKeys.subject_hash`) across the trails, with proofs.

    `flush`: the caller's own trail's flush, so that its entries of the last 100 ms are indexed too (a
    worker trail's index is at most one flush interval behind).
    """
    if flush is not None:
        flush()
    out = Disclosure()
    for d in trail_directories(directory):
        name = "" if d == directory else d.name
        seqs = seqs_of(d, subject)
        if not seqs:
            continue
        held = _checkpoint(d)
        size, note = held if held is not None else (0, "")
        if note:
            out.checkpoints[name] = note
        with TreeReader(d) as reader:
            for seq in seqs:
                try:
                    line = find_entry(d, seq)
                except NoProof:
                    continue  # erased after its retention period
                entry = parse_entry(line + b"\n")
                if entry is None or subject not in entry["subjects"]:
                    continue
                if not disclosed(entry["kind"], entry["outcome"]):
                    continue
                proof = inclusion_proof(reader.subtree, seq - 1, size) if seq <= size else []
                out.entries.append(Listed(entry, line, name, size if seq <= size else 0, proof))
    out.entries.sort(key=lambda e: (str(e.entry["time"]), e.trail, e.seq))
    return out
