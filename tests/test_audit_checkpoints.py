"""Checkpoints as C2SP signed notes (SPEC §4.4): the format, when they are written, and older trails.

Real trails in tmp_path, the real Ed25519 keys; the signed-note test vector is the one of Go's
golang.org/x/mod/sumdb/note documentation.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from server.audit import JST, AuditEvent, AuditKeys, AuditTrail, verify
from server.audit.entries import CHECKPOINT_GENESIS_PREV, CHECKPOINTS, canonical, list_segments, sha256_hex
from server.audit.note import Checkpoint, Note, NoteError, key_id, verifier_key, verify_note
from server.audit.tree import LEVELS, level_file

GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_NOTE = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
    "\n"
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNX"
    "gKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2025, 4, 1, 9, 0, tzinfo=JST)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def event(i: int) -> AuditEvent:
    return AuditEvent(
        caller="spiffe://juki.mie/operator/op-0001",
        role="operator",
        method="/juki.v1.Prefecture/Lookup",
        purpose="identity-check",
        outcome="OK",
        subjects=(f"{i:032x}",),
        items=("name",),
        count=1,
    )


def checkpoints(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (directory / CHECKPOINTS).read_bytes().splitlines()]


def ref_root(lines: list[bytes]) -> bytes:
    hashes = [hashlib.sha256(b"\x00" + line).digest() for line in lines]
    if not hashes:
        return hashlib.sha256(b"").digest()
    while len(hashes) > 1:  # the same MTH, bottom-up: an odd last node is carried up unchanged
        hashes = [
            hashlib.sha256(b"\x01" + hashes[i] + hashes[i + 1]).digest() if i + 1 < len(hashes) else hashes[i]
            for i in range(0, len(hashes), 2)
        ]
    return hashes[0]


def entry_lines(directory: Path) -> list[bytes]:
    return [
        line for name in list_segments(directory) for line in (directory / name).read_bytes().splitlines()
    ]


@pytest.fixture(scope="module")
def keys() -> AuditKeys:
    return AuditKeys.generate()


def test_signed_note_format_matches_the_c2sp_test_vector() -> None:
    name, kid, b64 = GO_VKEY.split("+")
    raw = base64.b64decode(b64)
    assert raw[0] == 0x01  # Ed25519
    public = Ed25519PublicKey.from_public_bytes(raw[1:])
    assert key_id(name, public).hex() == kid
    assert verifier_key(name, public) == GO_VKEY
    note = Note.parse(GO_NOTE)
    assert note.text() == GO_NOTE
    public.verify(note.signatures[0].blob, note.body.encode())
    with pytest.raises(NoteError):
        verify_note(GO_NOTE.replace("problem,", "problem;"), name, public)


def test_every_checkpoint_is_a_signed_note_of_the_tree(tmp_path: Path, keys: AuditKeys) -> None:
    directory = tmp_path / "audit"
    with AuditTrail.open(directory, keys, origin="juki.mie/audit/prefecture") as trail:
        for i in range(7):
            trail.append(event(i))
        trail.checkpoint()
    lines = entry_lines(directory)
    cps = checkpoints(directory)
    assert [cp["kind"] for cp in cps] == ["genesis", "interval", "shutdown"]
    public = AuditKeys.auditor_keys(keys).public_key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    for cp in cps:
        note, checkpoint = verify_note(cp["note"], "juki.mie/audit/prefecture", public)
        assert checkpoint == Checkpoint("juki.mie/audit/prefecture", cp["seq"], ref_root(lines[: cp["seq"]]))
        body = f"juki.mie/audit/prefecture\n{cp['seq']}\n{base64.b64encode(checkpoint.root).decode()}\n"
        assert note.body == body
        (sig,) = note.signatures
        assert sig.name == "juki.mie/audit/prefecture"
        assert sig.id == hashlib.sha256(b"juki.mie/audit/prefecture\n\x01" + raw).digest()[:4]
    assert verify(directory, public).ok


def test_checkpoints_every_few_seconds_while_busy_and_a_heartbeat_when_idle(
    tmp_path: Path, keys: AuditKeys
) -> None:
    clock = Clock()
    with AuditTrail.open(tmp_path / "audit", keys, now=clock) as trail:  # the defaults: 5 s, 60 s
        trail.append(event(0))
        clock.advance(4.9)
        assert trail.maybe_checkpoint() is None
        clock.advance(0.1)
        assert trail.maybe_checkpoint() is not None  # 5 s after the last one, with something new
        clock.advance(59)
        assert trail.maybe_checkpoint() is None  # idle, not yet a minute
        clock.advance(1)
        beat = trail.maybe_checkpoint()
        assert beat is not None and beat["kind"] == "heartbeat" and beat["seq"] == 1
    kinds = [cp["kind"] for cp in checkpoints(tmp_path / "audit")]
    assert kinds == ["genesis", "interval", "heartbeat", "shutdown"]


def make_legacy(directory: Path, keys: AuditKeys) -> None:
    """The trail as the hash-chain-only version wrote it: checkpoints without notes, no tree files."""
    prev = CHECKPOINT_GENESIS_PREV
    out = []
    for cp in checkpoints(directory):
        body = {k: v for k, v in cp.items() if k not in ("note", "sig")}
        body["prev"] = prev
        body["sig"] = keys.signing_key.sign(canonical(body).encode()).hex()
        line = (canonical(body) + "\n").encode()
        out.append(line)
        prev = sha256_hex(line)
    (directory / CHECKPOINTS).write_bytes(b"".join(out))
    for level in LEVELS:
        level_file(directory, level).unlink(missing_ok=True)


def test_an_older_trail_verifies_the_old_way_and_gets_its_tree_at_open(
    tmp_path: Path, keys: AuditKeys
) -> None:
    directory = tmp_path / "audit"
    public = keys.auditor_keys().public_key
    with AuditTrail.open(directory, keys) as trail:
        for i in range(9):
            trail.append(event(i))
    make_legacy(directory, keys)
    assert all("note" not in cp for cp in checkpoints(directory))
    assert verify(directory, public).ok  # the old part: chain and signed JSON checkpoints
    with AuditTrail.open(directory, keys) as trail:  # migrated: the tree is built from the entries, once
        for i in range(9, 12):
            trail.append(event(i))
    report = verify(directory, public)
    assert report.ok, [str(p) for p in report.problems]
    assert report.tree_size == 12
    last = checkpoints(directory)[-1]
    _, checkpoint = verify_note(last["note"], last["note"].split("\n")[0], public)
    assert checkpoint.size == 12 and checkpoint.root == ref_root(entry_lines(directory))
    # the old part is still checked the old way: an edit there is named
    segment = directory / list_segments(directory)[0]
    segment.write_bytes(segment.read_bytes().replace(b'"count":1', b'"count":2', 1))
    report = verify(directory, public)
    assert {p.kind for p in report.problems} == {"edited"}


def test_the_subject_index_is_rebuilt_from_the_trail(tmp_path: Path, keys: AuditKeys) -> None:
    """A trail without its subject index (an older trail, or one whose index was lost) gets it at open, so
    a disclosure finds the resident's provisions and refusals — and nothing else."""
    import shutil

    from server.audit.disclosure import disclosure
    from server.audit.subjects import INDEX_DIR, seqs_of

    directory = tmp_path / "audit"
    subject = keys.subject_hash("99000000001")
    with AuditTrail.open(directory, keys) as trail:
        for i in range(12):
            kind = "provision" if i % 3 == 0 else ""
            outcome = "PERMISSION_DENIED" if i % 4 == 1 else "OK"
            subjects = (subject,) if i % 2 else (f"{i:032x}",)
            trail.append(
                AuditEvent(
                    "spiffe://juki.mie/agency/police", "agency", "/m", "p", outcome, subjects, kind=kind
                )
            )
    expected = [i + 1 for i in range(12) if i % 2 and (i % 3 == 0 or i % 4 == 1)]
    assert seqs_of(directory, subject) == expected
    copy = tmp_path / "older"
    shutil.copytree(directory, copy, ignore=shutil.ignore_patterns(INDEX_DIR))
    assert seqs_of(copy, subject) is None
    AuditTrail.open(copy, keys).close()
    assert seqs_of(copy, subject) == expected
    listed = disclosure(copy, subject)
    assert [e.seq for e in listed.entries] == expected and all(e.tree_size for e in listed.entries)
