"""The witness (SPEC §4.4) and verification against what it witnessed: real trails in tmp_path, real keys.

A witness cosigns only checkpoints consistent with the newest one it cosigned; it refuses a rolled-back,
forked or foreign one. `verify(…, witnessed=…)` names each way of making a trail's history shorter or
different after it was witnessed: cut tail, deleted last checkpoint, older checkpoints plus a cut trail,
wipe, edit-and-rehash after the last checkpoint, appended forgery.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from server.audit import JST, AuditEvent, AuditKeys, AuditTrail, verify
from server.audit.entries import CHECKPOINTS, canonical, list_segments, sha256_hex
from server.audit.note import Note, verify_cosignature
from server.audit.proofs import checkpoint_note, consistency
from server.audit.verify import (
    UNWITNESSED,
    WITNESS_CHECKPOINT_DELETED,
    WITNESS_INVALID,
    WITNESS_MISMATCH,
    WITNESS_TRUNCATED,
    Witnessed,
)
from server.audit.witness import (
    BAD_SIGNATURE,
    INCONSISTENT,
    OLD_SIZE_MISMATCH,
    ROLLBACK,
    UNKNOWN_LOG,
    Refused,
    Witness,
)

ORIGIN = "juki.mie/audit/prefecture"
WITNESS = "juki.mie/witness/test"


def event(i: int) -> AuditEvent:
    return AuditEvent(
        caller="spiffe://juki.mie/agency/police",
        role="agency",
        method="/juki.v1.Prefecture/Provide",
        purpose="bt6-police-driving-licence",
        outcome="OK",
        subjects=(f"{i:032x}",),
        items=("name",),
        count=1,
        kind="provision",
    )


class Log:
    """A trail being written, with a clock the test moves."""

    def __init__(self, directory: Path, keys: AuditKeys) -> None:
        self.now = dt.datetime(2025, 4, 1, 9, 0, tzinfo=JST)
        self.trail = AuditTrail.open(directory, keys, now=lambda: self.now, origin=ORIGIN)
        self.count = 0

    def append(self, n: int) -> None:
        for _ in range(n):
            self.trail.append(event(self.count))
            self.count += 1
            self.now += dt.timedelta(seconds=1)

    def checkpoint(self) -> tuple[str, int]:
        cp = self.trail.checkpoint()
        return cp["note"], cp["seq"]


@pytest.fixture(scope="module")
def keys() -> AuditKeys:
    return AuditKeys.generate()


@pytest.fixture
def witness(tmp_path: Path, keys: AuditKeys) -> Witness:
    public = keys.public_key
    return Witness(WITNESS, Ed25519PrivateKey.generate(), tmp_path / "witness", {ORIGIN: public}.get)


def submit(witness: Witness, directory: Path, note: str, size: int, old: int | None = None) -> None:
    held = witness.held(ORIGIN)
    old = (held.size if held else 0) if old is None else old
    proof = consistency(directory, old, size).hashes if old else []
    witness.add_checkpoint(old, proof, note)


def test_a_witness_cosigns_consistent_checkpoints_and_keeps_the_newest(
    tmp_path: Path, keys: AuditKeys, witness: Witness
) -> None:
    log = Log(tmp_path / "audit", keys)
    for n in (3, 0, 5, 1):  # an equal size (a heartbeat) is consistent too
        log.append(n)
        note, size = log.checkpoint()
        submit(witness, tmp_path / "audit", note, size)
        held = witness.held(ORIGIN)
        assert held is not None and held.size == size
        stamp = verify_cosignature(Note.parse(held.note), WITNESS, witness.public_key)
        assert stamp > 0
    log.trail.close()
    again = Witness(
        WITNESS, Ed25519PrivateKey.generate(), tmp_path / "witness", {ORIGIN: keys.public_key}.get
    )
    assert again.held(ORIGIN) == witness.held(ORIGIN)  # durable


def test_a_witness_refuses_rollback_fork_foreign_and_stale_submissions(
    tmp_path: Path, keys: AuditKeys, witness: Witness
) -> None:
    log = Log(tmp_path / "audit", keys)
    log.append(4)
    old_note, old_size = log.checkpoint()
    submit(witness, tmp_path / "audit", old_note, old_size)
    log.append(4)
    note, size = log.checkpoint()
    submit(witness, tmp_path / "audit", note, size)
    held = witness.held(ORIGIN)

    def refused(reason: str, old: int, proof: list[bytes], text: str) -> Refused:
        with pytest.raises(Refused) as caught:
            witness.add_checkpoint(old, proof, text)
        assert caught.value.reason == reason
        assert witness.held(ORIGIN) == held  # nothing changed
        return caught.value

    # rolled back: the older checkpoint again
    refused(ROLLBACK, size, [], old_note)
    # a stale old size: told the size it holds
    assert refused(OLD_SIZE_MISMATCH, old_size, [], note).size == size
    # a fork: the same log key, another history of the same and of a greater size
    fork = Log(tmp_path / "fork", keys)
    fork.append(9)
    fork.count = 100
    fork.append(1)
    fork_note, fork_size = fork.checkpoint()
    refused(INCONSISTENT, size, consistency(tmp_path / "fork", size, fork_size).hashes, fork_note)
    fork2 = Log(tmp_path / "fork2", keys)
    fork2.count = 50
    fork2.append(size)
    refused(INCONSISTENT, size, [], fork2.checkpoint()[0])
    # a proof that is not one
    log.append(3)
    newer, newer_size = log.checkpoint()
    good = consistency(tmp_path / "audit", size, newer_size).hashes
    refused(INCONSISTENT, size, [bytes(32)] * len(good), newer)
    # a log it does not know, a note not signed by the log's key
    other = AuditKeys.generate()
    stranger = Log(tmp_path / "stranger", other)
    stranger.append(1)
    foreign = stranger.checkpoint()[0]
    refused(BAD_SIGNATURE, size, [], foreign)
    refused(UNKNOWN_LOG, size, [], foreign.replace(ORIGIN, "juki.mie/audit/elsewhere"))
    witness.add_checkpoint(size, good, newer)  # the honest next one still goes through
    for t in (log, fork, fork2, stranger):
        t.trail.close()


# ---- verifying a trail against the witnessed checkpoint ---------------------------------------------


@pytest.fixture
def witnessed_trail(tmp_path: Path, keys: AuditKeys, witness: Witness) -> tuple[Path, Witnessed]:
    """30 entries, checkpoints after 10 and 20 (witnessed), then the shutdown checkpoint at 30 (witnessed)."""
    directory = tmp_path / "audit"
    log = Log(directory, keys)
    for _ in range(2):
        log.append(10)
        submit(witness, directory, *log.checkpoint())
    log.append(10)
    last = log.trail.close()
    assert last is not None
    submit(witness, directory, last["note"], last["seq"])
    held = witness.held(ORIGIN)
    assert held is not None and held.size == 30
    return directory, Witnessed(held.note, WITNESS, witness.public_key)


def segment(directory: Path) -> Path:
    return directory / list_segments(directory)[-1]


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def kinds(directory: Path, keys: AuditKeys, witnessed: Witnessed) -> dict[str, str]:
    report = verify(directory, keys.public_key, witnessed=witnessed)
    assert not report.ok
    return {p.kind: p.detail for p in report.problems}


def rehash(entry: dict[str, Any], prev: str) -> bytes:
    body = {k: v for k, v in entry.items() if k != "hash"}
    body["prev"] = prev
    return (canonical({**body, "hash": sha256_hex(canonical(body).encode())}) + "\n").encode()


def cut_checkpoints(directory: Path, keep: int) -> None:
    path = directory / CHECKPOINTS
    path.write_bytes(b"".join(lines(path)[:keep]))


def test_the_untouched_trail_verifies_against_the_witness(
    witnessed_trail: tuple[Path, Witnessed], keys: AuditKeys
) -> None:
    directory, witnessed = witnessed_trail
    report = verify(directory, keys.public_key, witnessed=witnessed)
    assert report.ok, [str(p) for p in report.problems]
    assert report.witnessed_size == 30 and report.tree_size == 30 and report.origin == ORIGIN


def test_cut_tail_is_named(witnessed_trail: tuple[Path, Witnessed], keys: AuditKeys) -> None:
    directory, witnessed = witnessed_trail
    path = segment(directory)
    path.write_bytes(b"".join(lines(path)[:-3]))
    cut_checkpoints(directory, 3)  # and the checkpoints after the cut: the directory alone looks whole
    assert verify(directory, keys.public_key).ok  # what the issue found: OK without the witness
    found = kinds(directory, keys, witnessed)
    assert "seq 28–30 missing" in found[WITNESS_TRUNCATED]


def test_deleted_last_checkpoint_is_named(witnessed_trail: tuple[Path, Witnessed], keys: AuditKeys) -> None:
    directory, witnessed = witnessed_trail
    cut_checkpoints(directory, 3)  # genesis, 10, 20: the shutdown checkpoint (30) is gone
    found = kinds(directory, keys, witnessed)
    assert set(found) == {WITNESS_CHECKPOINT_DELETED}
    assert "newest there: size 20" in found[WITNESS_CHECKPOINT_DELETED]


def test_older_checkpoints_and_a_cut_trail_are_named(
    witnessed_trail: tuple[Path, Witnessed], keys: AuditKeys
) -> None:
    directory, witnessed = witnessed_trail
    cut_checkpoints(directory, 2)  # an older copy of checkpoints.log (genesis, 10)
    path = segment(directory)
    path.write_bytes(b"".join(lines(path)[:10]))
    assert verify(directory, keys.public_key).ok
    found = kinds(directory, keys, witnessed)
    assert set(found) == {WITNESS_TRUNCATED, WITNESS_CHECKPOINT_DELETED}
    assert "seq 11–30 missing" in found[WITNESS_TRUNCATED]


def test_a_wiped_trail_is_named(witnessed_trail: tuple[Path, Witnessed], keys: AuditKeys) -> None:
    directory, witnessed = witnessed_trail
    for name in list_segments(directory):
        (directory / name).unlink()
    cut_checkpoints(directory, 1)  # the genesis checkpoint only: "OK: 0 entries" before
    assert verify(directory, keys.public_key).ok
    found = kinds(directory, keys, witnessed)
    assert "no entry (wiped)" in found[WITNESS_TRUNCATED] and "seq 1–30 missing" in found[WITNESS_TRUNCATED]


def test_edit_and_rehash_after_the_last_checkpoint_is_named(
    witnessed_trail: tuple[Path, Witnessed], keys: AuditKeys
) -> None:
    """The last local checkpoint line is cut too, and entries 28–30 are re-chained: nothing in the directory
    shows it; the witnessed root does, and the leaf file (still matching that root) names seq 28."""
    directory, witnessed = witnessed_trail
    cut_checkpoints(directory, 3)
    path = segment(directory)
    out = lines(path)
    prev = json.loads(out[-4])["hash"]
    for i in (-3, -2, -1):
        entry = json.loads(out[i])
        if i == -3:
            entry["caller"] = "spiffe://juki.mie/agency/education"
        out[i] = rehash(entry, prev)
        prev = json.loads(out[i])["hash"]
    path.write_bytes(b"".join(out))
    assert verify(directory, keys.public_key).ok
    found = kinds(directory, keys, witnessed)
    assert "seq 28" in found[WITNESS_MISMATCH] and "altered after being witnessed" in found[WITNESS_MISMATCH]


def test_appended_forgery_is_named(witnessed_trail: tuple[Path, Witnessed], keys: AuditKeys) -> None:
    directory, witnessed = witnessed_trail
    path = segment(directory)
    out = lines(path)
    last = json.loads(out[-1])
    forged = {**last, "seq": 31, "caller": "spiffe://juki.mie/agency/education"}
    path.write_bytes(b"".join([*out, rehash(forged, last["hash"])]))
    assert verify(directory, keys.public_key).ok  # chained, after the last checkpoint: invisible before
    found = kinds(directory, keys, witnessed)
    assert set(found) == {UNWITNESSED}
    assert "seq 31–31 come after the witnessed checkpoint (size 30" in found[UNWITNESSED]


def test_a_checkpoint_not_signed_by_the_log_or_not_cosigned_is_refused(
    witnessed_trail: tuple[Path, Witnessed], keys: AuditKeys, tmp_path: Path
) -> None:
    directory, witnessed = witnessed_trail
    other = Witnessed(witnessed.note, WITNESS, Ed25519PrivateKey.generate().public_key())
    assert "not cosigned" in kinds(directory, keys, other)[WITNESS_INVALID]
    assert WITNESS_INVALID in kinds(directory, AuditKeys.generate(), witnessed)
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    size, note = checkpoint_note(copy)
    assert size == 30 and verify(copy, keys.public_key, witnessed=Witnessed(note)).ok  # no cosignature asked
