"""The standalone proof verifier: a proof file, the checkpoint it carries, the log's public key — no trail.

A proof file is JSON: `{"type": "inclusion", "origin", "leaf_index", "tree_size", "hashes": [base64],
"entry", "checkpoint"}` or `{"type": "consistency", "origin", "first", "second", "hashes", "first_checkpoint",
"second_checkpoint"}`, the checkpoints being C2SP signed notes. `check()` verifies the log's signature on
every checkpoint (and a witness's cosignature when a witness key is given), then the proof against the
checkpoints' roots; it says what it proved, or raises ProofError / NoteError saying what failed.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from server.audit.merkle import EMPTY_ROOT, ProofError, leaf_hash, verify_consistency, verify_inclusion
from server.audit.note import Checkpoint, NoteError, verify_cosignature, verify_note
from server.audit.proofs import Consistency, Inclusion


def inclusion_json(origin: str, proof: Inclusion) -> str:
    return inclusion_json_of(
        origin, proof.index, proof.size, proof.hashes, proof.checkpoint, entry=proof.entry
    )


def inclusion_json_of(
    origin: str,
    index: int,
    size: int,
    hashes: list[bytes],
    checkpoint: str,
    *,
    entry: bytes | None = None,
    leaf: bytes | None = None,
) -> str:
    """An inclusion proof file, of the entry line (or, when it is not to be shown, of its leaf hash)."""
    body: dict[str, Any] = {
        "type": "inclusion",
        "origin": origin,
        "leaf_index": index,
        "tree_size": size,
        "hashes": [base64.b64encode(h).decode() for h in hashes],
    }
    if entry is not None:
        body["entry"] = entry.decode()
    elif leaf is not None:
        body["leaf"] = base64.b64encode(leaf).decode()
    body["checkpoint"] = checkpoint
    return json.dumps(body, ensure_ascii=False, indent=1)


def consistency_json(origin: str, proof: Consistency) -> str:
    return json.dumps(
        {
            "type": "consistency",
            "origin": origin,
            "first": proof.first,
            "second": proof.second,
            "hashes": [base64.b64encode(h).decode() for h in proof.hashes],
            "first_checkpoint": proof.first_checkpoint,
            "second_checkpoint": proof.second_checkpoint,
        },
        ensure_ascii=False,
        indent=1,
    )


def _checkpoint(
    text: str, origin: str, key: Ed25519PublicKey, witness: tuple[str, Ed25519PublicKey] | None
) -> Checkpoint:
    note, checkpoint = verify_note(text, origin, key)
    if witness is not None:
        verify_cosignature(note, *witness)
    return checkpoint


def check(
    proof_text: str, key: Ed25519PublicKey, *, witness: tuple[str, Ed25519PublicKey] | None = None
) -> str:
    """What the proof proves (one sentence); ProofError or NoteError when it does not verify."""
    try:
        proof: dict[str, Any] = json.loads(proof_text)
        origin = str(proof["origin"])
        hashes = [base64.b64decode(h, validate=True) for h in proof["hashes"]]
    except (ValueError, KeyError, TypeError) as e:
        raise ProofError(f"not a proof file: {e}") from None
    if proof.get("type") == "inclusion":
        checkpoint = _checkpoint(str(proof["checkpoint"]), origin, key, witness)
        index, size = int(proof["leaf_index"]), int(proof["tree_size"])
        if size != checkpoint.size:
            raise ProofError(f"the proof is for size {size}, the checkpoint for {checkpoint.size}")
        root = base64.b64encode(checkpoint.root).decode()
        if "entry" not in proof:  # a leaf hash only: its entry is not shown
            verify_inclusion(index, size, base64.b64decode(str(proof["leaf"])), hashes, checkpoint.root)
            return f"the leaf of entry seq {index + 1} is in {origin} at size {size} (root {root})"
        entry = str(proof["entry"]).encode()
        verify_inclusion(index, size, leaf_hash(entry), hashes, checkpoint.root)
        seq = json.loads(entry).get("seq") if entry.startswith(b"{") else None
        if seq != index + 1:
            raise ProofError(f"the entry's seq {seq} is not leaf {index} + 1")
        return f"entry seq {index + 1} is in {origin} at size {size} (root {root})"
    if proof.get("type") == "consistency":
        first, second = int(proof["first"]), int(proof["second"])
        newer = _checkpoint(str(proof["second_checkpoint"]), origin, key, witness)
        if first and not proof.get("first_checkpoint"):
            raise ProofError(f"no checkpoint of size {first} to prove from")
        older = (
            _checkpoint(str(proof["first_checkpoint"]), origin, key, witness)
            if first
            else Checkpoint(origin, 0, EMPTY_ROOT)
        )
        if (older.size, newer.size) != (first, second):
            raise ProofError("the proof's sizes are not the checkpoints' sizes")
        verify_consistency(first, second, older.root, newer.root, hashes)
        return f"{origin} at size {second} extends its tree of size {first}"
    raise ProofError("unknown proof type")


__all__ = ["NoteError", "ProofError", "check", "consistency_json", "inclusion_json", "inclusion_json_of"]
