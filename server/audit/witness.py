"""A witness (c2sp.org/tlog-witness, in our own terms): cosigns a log's checkpoint only when it is consistent
with the newest one it cosigned for that log before.

Per log (by origin) it keeps the newest checkpoint it cosigned, durably (`state.json`, replaced whole:
written, fsynced, renamed). A new checkpoint is accepted only when

- the log is known and the note carries a valid signature of the log's key (`UNKNOWN_LOG`, `BAD_SIGNATURE`);
- the submitter's `old_size` is the size the witness holds (`OLD_SIZE_MISMATCH`, with the witness's size,
  so that an honest log can prove from there);
- the new size is not smaller (`ROLLBACK`) and the consistency proof from the held checkpoint verifies
  (`INCONSISTENT`; for an equal size: the same root).

The answer is a timestamped cosignature (`note.cosign`). Nothing here knows about gRPC.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from server.audit.merkle import ProofError, verify_consistency
from server.audit.note import Note, NoteError, Signature, cosign, verify_note

log = logging.getLogger(__name__)

STATE_FILE = "state.json"

UNKNOWN_LOG = "UNKNOWN_LOG"
BAD_SIGNATURE = "BAD_SIGNATURE"
OLD_SIZE_MISMATCH = "OLD_SIZE_MISMATCH"
ROLLBACK = "ROLLBACK"
INCONSISTENT = "INCONSISTENT"
MALFORMED = "MALFORMED"


class Refused(Exception):
    """The witness refuses the checkpoint; `reason` is one of the names above, `size` what it holds."""

    def __init__(self, reason: str, message: str, size: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.size = size


@dataclass(frozen=True)
class Held:
    """The newest checkpoint the witness cosigned for a log."""

    size: int
    root: bytes
    note: str  # the note as cosigned: log signature and this witness's cosignature


LogKeys = Callable[[str], Ed25519PublicKey | None]  # origin -> the log's public key (None: unknown log)


class Witness:
    def __init__(
        self,
        name: str,
        key: Ed25519PrivateKey,
        directory: Path,
        logs: LogKeys,
        *,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.name = name
        self._key = key
        self._directory = directory
        self._logs = logs
        self._now = now
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._held = self._load()

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def _load(self) -> dict[str, Held]:
        path = self._directory / STATE_FILE
        if not path.exists():
            return {}
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {
            origin: Held(int(v["size"]), base64.b64decode(v["root"]), str(v["note"]))
            for origin, v in raw.items()
        }

    def _save(self, held: dict[str, Held]) -> None:
        body = {
            origin: {"size": h.size, "root": base64.b64encode(h.root).decode(), "note": h.note}
            for origin, h in sorted(held.items())
        }
        tmp = self._directory / f".{STATE_FILE}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(body, f, ensure_ascii=False, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._directory / STATE_FILE)
        dir_fd = os.open(self._directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def held(self, origin: str) -> Held | None:
        return self._held.get(origin)

    def add_checkpoint(self, old_size: int, proof: Sequence[bytes], text: str) -> Signature:
        """Cosign the checkpoint note `text` of a log, proven consistent from `old_size`; Refused else."""
        origin = text.split("\n", 1)[0]
        key = self._logs(origin) if origin else None
        if key is None:
            raise Refused(UNKNOWN_LOG, "the witness does not know this log")
        try:
            note, checkpoint = verify_note(text, origin, key)
        except NoteError as e:
            raise Refused(BAD_SIGNATURE, f"checkpoint: {e}") from None
        with self._lock:
            held = self._held.get(origin)
            size = held.size if held is not None else 0
            if old_size != size:
                raise Refused(OLD_SIZE_MISMATCH, f"the witness holds size {size}, not {old_size}", size)
            if checkpoint.size < size:
                raise Refused(ROLLBACK, f"size {checkpoint.size} is older than the cosigned {size}", size)
            try:
                if held is not None:
                    verify_consistency(size, checkpoint.size, held.root, checkpoint.root, proof)
                elif proof:
                    raise ProofError("a first checkpoint comes without a proof")
            except ProofError as e:
                raise Refused(
                    INCONSISTENT, f"not consistent with the cosigned size {size}: {e}", size
                ) from None
            stamp = int(self._now().timestamp())
            signature = cosign(note, self.name, self._key, stamp)
            cosigned = Note(note.body, tuple(s for s in note.signatures if s.name == origin)).with_signature(
                signature
            )
            updated = {**self._held, origin: Held(checkpoint.size, checkpoint.root, cosigned.text())}
            self._save(updated)  # durable before the cosignature is given out
            self._held = updated
        return signature


def parse_proof(hashes: Sequence[bytes]) -> list[bytes]:
    """The proof's hashes, each 32 bytes; Refused(MALFORMED) else."""
    if any(len(h) != 32 for h in hashes):
        raise Refused(MALFORMED, "a consistency proof hash is not 32 bytes")
    if len(hashes) > 128:
        raise Refused(MALFORMED, "a consistency proof longer than any tree needs")
    return list(hashes)


def note_or_refuse(text: str) -> Note:
    try:
        return Note.parse(text)
    except NoteError as e:
        raise Refused(MALFORMED, str(e)) from None
