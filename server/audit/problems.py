"""What `verify()` reports: a Problem names its kind, the file, line and seq where it shows (the kinds are
described in `verify` and `witnessed`)."""

from __future__ import annotations

from dataclasses import dataclass

EDITED = "edited"
UNPARSEABLE = "unparseable"
DELETED = "deleted"
MISSING_SEGMENT = "missing_segment"
REORDERED = "reordered"
INSERTED = "inserted"
CHAIN_BREAK = "chain_break"
TRUNCATED = "truncated"
TORN_LINE = "torn_line"
CHECKPOINT_SIGNATURE = "checkpoint_signature"
CHECKPOINT_MISMATCH = "checkpoint_mismatch"
CHECKPOINT_DELETED = "checkpoint_deleted"
CHECKPOINTS_MISSING = "checkpoints_missing"
MERKLE_MISMATCH = "merkle_mismatch"
WITNESS_TRUNCATED = "witness_truncated"
WITNESS_MISMATCH = "witness_mismatch"
WITNESS_CHECKPOINT_DELETED = "witness_checkpoint_deleted"
UNWITNESSED = "unwitnessed"
WITNESS_INVALID = "witness_invalid"


@dataclass(frozen=True)
class Problem:
    kind: str
    segment: str  # file name in the trail directory ("checkpoints.log" for checkpoints)
    line: int  # from 1; 0 when the problem has no line (a missing file)
    seq: int | None
    detail: str

    def __str__(self) -> str:
        where = f"{self.segment}:{self.line}" if self.line else self.segment or "-"
        seq = f" seq {self.seq}" if self.seq is not None else ""
        return f"{self.kind} at {where}{seq}: {self.detail}"
