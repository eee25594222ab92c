"""Verifying a trail against the checkpoint a witness cosigned (the newest it holds for the log).

The walk of `verify()` rebuilds the Merkle tree of the entries; here it is compared with what was witnessed:

- `witness_truncated`: the trail holds fewer entries than the witness saw (a tail cut, a rollback to an
  older copy, a wipe);
- `witness_mismatch`: the first N entries do not hash to the witnessed root (altered after being
  witnessed; the altered seq is named when the leaf file still matches the witnessed tree);
- `witness_checkpoint_deleted`: checkpoints.log ends before the witnessed checkpoint (its last lines cut or
  the file replaced by an older copy);
- `unwitnessed`: entries after the witnessed size (appended after it — a forgery — or written within the
  last checkpoint interval: verify again after the next checkpoint);
- `witness_invalid`: the witnessed checkpoint is not signed by this log's key, is of another log, or is not
  cosigned by the witness key given.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from server.audit.entries import CHECKPOINTS, list_segments, parse_entry, read_lines
from server.audit.merkle import leaf_hash
from server.audit.note import Checkpoint, NoteError, verify_cosignature, verify_note
from server.audit.problems import (
    UNWITNESSED,
    WITNESS_CHECKPOINT_DELETED,
    WITNESS_INVALID,
    WITNESS_MISMATCH,
    WITNESS_TRUNCATED,
    Problem,
)
from server.audit.tree import TreeReader


@dataclass(frozen=True)
class Witnessed:
    """A checkpoint a witness cosigned: the note as served (log signature and cosignatures)."""

    note: str
    witness: str = ""  # the witness's key name; "" to skip checking the cosignature
    witness_key: Ed25519PublicKey | None = None


def witnessed_checkpoint(
    witnessed: Witnessed, key: Ed25519PublicKey, problems: list[Problem]
) -> tuple[Checkpoint, str] | None:
    origin = witnessed.note.split("\n", 1)[0]
    try:
        note, checkpoint = verify_note(witnessed.note, origin, key)
        when = ""
        if witnessed.witness_key is not None:
            stamp = verify_cosignature(note, witnessed.witness, witnessed.witness_key)
            when = f", cosigned {dt.datetime.fromtimestamp(stamp, dt.UTC).isoformat()}"
    except NoteError as e:
        problems.append(Problem(WITNESS_INVALID, CHECKPOINTS, 0, None, f"witnessed checkpoint: {e}"))
        return None
    return checkpoint, f"the witnessed checkpoint (size {checkpoint.size}{when})"


@dataclass(frozen=True)
class Walked:
    """What the chain walk found, as the comparison with the witnessed checkpoint needs it."""

    held: int  # the last seq the trail holds (0: none)
    last: tuple[str, int] | None  # (segment, line) of that entry
    root: bytes | None  # the Merkle root of the first N entries (N: the witnessed size), None: not hashed
    clean: bool  # no problem was found in the entries (so a missing root is itself a problem)
    origin: str  # of the checkpoints in checkpoints.log ("" when none has a note)
    noted_size: int  # the largest size a valid note there names (-1: none)


def check_witnessed(
    directory: Path, checkpoint: Checkpoint, what: str, walked: Walked, problems: list[Problem]
) -> None:
    """The problems of a trail against the checkpoint the witness cosigned (`what` describes it)."""
    n = checkpoint.size
    origin = walked.origin
    if origin and checkpoint.origin != origin:
        problems.append(
            Problem(
                WITNESS_INVALID,
                CHECKPOINTS,
                0,
                None,
                f"{what} is of log {checkpoint.origin}, not {origin}",
            )
        )
        return
    held = walked.held
    end = f"seq {held} at {walked.last[0]}:{walked.last[1]}" if walked.last else "no entry (wiped)"
    where = walked.last or (CHECKPOINTS, 0)
    if held < n:
        problems.append(
            Problem(
                WITNESS_TRUNCATED,
                *where,
                held + 1,
                f"the trail ends at {end} but {what} names {n} entries: seq {held + 1}–{n} missing "
                "(tail cut, trail rolled back or wiped)",
            )
        )
    elif walked.root is not None and walked.root != checkpoint.root:
        problems.append(Problem(WITNESS_MISMATCH, *where, None, _mismatch(directory, checkpoint, what)))
    elif walked.root is None and walked.clean:
        problems.append(
            Problem(
                WITNESS_MISMATCH, *where, None, f"entries 1–{n} could not be hashed to compare with {what}"
            )
        )
    if walked.noted_size < n:
        newest = f"size {walked.noted_size}" if walked.noted_size >= 0 else "none"
        problems.append(
            Problem(
                WITNESS_CHECKPOINT_DELETED,
                CHECKPOINTS,
                0,
                n,
                f"{CHECKPOINTS} ends before {what} (newest there: {newest}): its last checkpoint lines were "
                "deleted or the file replaced by an older copy",
            )
        )
    if held > n:
        problems.append(
            Problem(
                UNWITNESSED,
                *where,
                n + 1,
                f"seq {n + 1}–{held} come after {what}: not covered by any witnessed checkpoint "
                "(appended after it — a forgery — or written within the last checkpoint interval: "
                "verify again after the next)",
            )
        )


def _mismatch(directory: Path, checkpoint: Checkpoint, what: str) -> str:
    """Which seq differs, when the leaf file still holds the witnessed tree (its root proves it)."""
    base = f"entries 1–{checkpoint.size} do not hash to the root of {what}: altered after being witnessed"
    try:
        with TreeReader(directory) as reader:
            if reader.size < checkpoint.size or reader.root(checkpoint.size) != checkpoint.root:
                return base
            seen = 0
            for name in list_segments(directory):
                for _, raw in read_lines(directory / name):
                    entry = parse_entry(raw) if raw.endswith(b"\n") else None
                    if entry is None or not seen < entry["seq"] <= checkpoint.size:
                        continue
                    if entry["seq"] != seen + 1 and seen:
                        return f"{base} — seq {seen + 1}–{entry['seq'] - 1} missing before {name}"
                    seen = entry["seq"]
                    if reader.leaf(seen - 1) != leaf_hash(raw[:-1]):
                        return f"{base} — first at {name}, seq {seen}"
    except (LookupError, OSError):
        pass
    return base
