"""The subject index of a trail (`subjects.lmdb` in its directory): subject hash -> seqs of the entries a
resident's disclosure (開示) lists — every provision (提供 / 移転) and every refusal concerning them.

Derived from the trail and rebuilt from it when missing or behind (`through` names the last seq indexed):
the trail writes it at each flush, after the entries are synced. It holds keyed subject hashes and seqs
only (the file itself: `server.storage.subject_index`). Lookups read the seqs for one subject (a B-tree
lookup, not a scan); the entries themselves are read from the segments by seq (`proofs.find_entry`).
"""

from __future__ import annotations

from pathlib import Path

from server.audit.entries import PROVISION, parse_entry, read_lines, segments_from
from server.storage.subject_index import INDEX_DIR, SubjectIndexFile, seqs_of

__all__ = ["INDEX_DIR", "SubjectIndex", "disclosed", "seqs_of"]


def disclosed(kind: str, outcome: str) -> bool:
    """Whether an entry belongs in the disclosure of its subjects: a provision, or any refusal."""
    return kind == PROVISION or outcome != "OK"


class SubjectIndex(SubjectIndexFile):
    """The writer's side (the trail's flush), and its rebuild from the trail's segments."""

    def rebuild(self, directory: Path, last_seq: int) -> int:
        """Index the entries after `through` from the segments (once, after a crash or for an older trail);
        the number of seqs added."""
        start = self.through
        if start >= last_seq:
            return 0
        items: list[tuple[int, list[str]]] = []
        for name in segments_from(directory, start + 1):
            for _, raw in read_lines(directory / name):
                entry = parse_entry(raw) if raw.endswith(b"\n") else None
                if entry is None or not start < entry["seq"] <= last_seq or not entry["subjects"]:
                    continue
                if disclosed(entry["kind"], entry["outcome"]):
                    items.append((entry["seq"], entry["subjects"]))
        self.add(items, last_seq)
        return len(items)
