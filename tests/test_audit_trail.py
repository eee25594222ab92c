"""The audit trail (SPEC §4.4, §6.4): tampering is detected and named, writes fail closed, retention erases
exactly what has expired, and the auditor's query, disclosure and monthly report read it back.

Real files in tmp_path; a real full filesystem (a small tmpfs) for the fail-closed case. Resident codes are
synthetic (99…), and none of them may appear in any file of the trail.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from server.audit import (
    JST,
    PROVISION,
    AuditEvent,
    AuditKeys,
    AuditorKeys,
    AuditTrail,
    AuditUnavailable,
    Problem,
    VerifyReport,
    monthly_report,
    provisions_of,
    query,
    verify,
)
from server.audit.entries import CHECKPOINTS, canonical, encode_entry, sha256_hex
from server.audit.merkle import verify_consistency
from server.audit.note import verify_note
from server.audit.proofs import consistency
from server.audit.verify import Witnessed

POLICE = "spiffe://juki.mie/agency/police"
EDUCATION = "spiffe://juki.mie/agency/education"
OPERATOR = "spiffe://juki.mie/operator/op-0042"
LOOKUP = "/juki.v1.Prefecture/Lookup"
PROVIDE = "/juki.v1.Prefecture/Provide"
SEARCH = "/juki.v1.Prefecture/Search"
CODES = [f"990000{i:05d}" for i in range(50)]  # synthetic resident codes
ITEMS = ("resident_code", "name", "birth_date", "sex", "address")


class Clock:
    """The trail's injectable clock: set or advanced by the test."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


@pytest.fixture(scope="module")
def keys() -> AuditKeys:
    return AuditKeys.generate()


def provision(keys: AuditKeys, code: str, *, caller: str = POLICE, outcome: str = "OK") -> AuditEvent:
    return AuditEvent(
        caller=caller,
        role="agency",
        method=PROVIDE,
        purpose="別表第六-1 (犯罪捜査)",
        outcome=outcome,
        subjects=(keys.subject_hash(code),),
        items=ITEMS if outcome == "OK" else (),
        request_id=f"req-{code[-4:]}",
        source="LOCAL",
        count=1 if outcome == "OK" else 0,
        kind=PROVISION,
    )


def write_trail(
    directory: Path,
    keys: AuditKeys,
    clock: Clock,
    entries: int,
    *,
    checkpoint_every: int = 5,
    step: dt.timedelta = dt.timedelta(minutes=7),
) -> None:
    """`entries` provisions, a checkpoint after every `checkpoint_every`, closed cleanly."""
    with AuditTrail.open(directory, keys, now=clock) as trail:
        for i in range(entries):
            trail.append(provision(keys, CODES[i % len(CODES)]))
            clock.now += step
            if (i + 1) % checkpoint_every == 0:
                trail.checkpoint()


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("trail-*.log"))


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def entry_at(path: Path, line: int) -> dict[str, Any]:
    return dict(json.loads(lines_of(path)[line - 1]))


def forged_line(entry: dict[str, Any]) -> bytes:
    """What someone without the signing key can do: any content, correctly hashed."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return (canonical({**body, "hash": sha256_hex(canonical(body).encode())}) + "\n").encode()


def only_problem(report: VerifyReport) -> Problem:
    assert not report.ok
    assert len(report.problems) == 1, [str(p) for p in report.problems]
    return report.problems[0]


@pytest.fixture
def trail20(tmp_path: Path, keys: AuditKeys) -> Path:
    """20 entries in one segment, checkpoints after every 5th, closed."""
    directory = tmp_path / "audit"
    write_trail(directory, keys, Clock(dt.datetime(2025, 4, 1, 9, 0, tzinfo=JST)), 20)
    return directory


# ---- the written form ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "plain",
        'quote " and \\ backslash',
        "tab\tnewline\n\x00\x1f",
        "三重県 津市 ｶﾀｶﾅ",
        "emoji 😀 \u2028\u2029",
    ],
)
def test_hand_built_line_is_canonical_json(text: str) -> None:
    event = AuditEvent(text, text, text, text, text, (text, "x"), (text,), text, text, 3, text)
    digest, line = encode_entry(event, 7, "2025-04-01T09:00:00.000000+09:00", "ab" * 32)
    entry = json.loads(line)
    assert line == canonical(entry) + "\n"
    assert (
        digest
        == entry["hash"]
        == sha256_hex(canonical({k: v for k, v in entry.items() if k != "hash"}).encode())
    )
    assert entry["purpose"] == text and entry["subjects"] == [text, "x"] and entry["count"] == 3


def test_entries_chain_across_segments_and_checkpoints_are_signed(tmp_path: Path, keys: AuditKeys) -> None:
    directory = tmp_path / "audit"
    clock = Clock(dt.datetime(2025, 1, 31, 23, 0, tzinfo=JST))
    write_trail(directory, keys, clock, 12, step=dt.timedelta(days=10))
    names = [p.name for p in segments(directory)]
    assert names == [
        "trail-202501.log",
        "trail-202502.log",
        "trail-202503.log",
        "trail-202504.log",
        "trail-202505.log",
    ]
    first_of_feb = entry_at(directory / "trail-202502.log", 1)
    last_of_jan = entry_at(directory / "trail-202501.log", len(lines_of(directory / "trail-202501.log")))
    assert first_of_feb["prev"] == last_of_jan["hash"] and first_of_feb["seq"] == last_of_jan["seq"] + 1
    assert first_of_feb["time"].endswith("+09:00")
    checkpoints = [json.loads(raw) for raw in lines_of(directory / CHECKPOINTS)]
    assert [c["kind"] for c in checkpoints] == ["genesis", "interval", "interval", "shutdown"]
    assert checkpoints[-1]["seq"] == 12 and checkpoints[-1]["segment"] == "trail-202505.log"
    report = verify(directory, keys.public_key_pem())
    assert report.ok, [str(p) for p in report.problems]
    assert (report.entries, report.first_seq, report.last_seq, report.unanchored) == (12, 1, 12, 0)


def test_untouched_trail_verifies_after_reopening(tmp_path: Path, keys: AuditKeys) -> None:
    directory = tmp_path / "audit"
    clock = Clock(dt.datetime(2025, 4, 1, 9, 0, tzinfo=JST))
    write_trail(directory, keys, clock, 7)
    write_trail(directory, keys, clock, 7)
    with AuditTrail.open(directory, keys, now=clock) as trail:
        assert trail.seq == 14
    report = verify(directory, keys.public_key_pem())
    assert report.ok and report.last_seq == 14 and report.checkpoints == 1 + 1 + 1 + 1 + 1 + 1


def test_a_second_writer_is_refused(tmp_path: Path, keys: AuditKeys) -> None:
    with AuditTrail.open(tmp_path / "audit", keys), pytest.raises(AuditUnavailable, match="another process"):
        AuditTrail.open(tmp_path / "audit", keys)


# ---- tampering -------------------------------------------------------------------------------------------


def test_any_single_byte_changed_is_named_at_its_line(trail20: Path, keys: AuditKeys) -> None:
    segment = segments(trail20)[0]
    original = lines_of(segment)
    target = 8
    for position in range(len(original[target - 1]) - 1):  # every byte but the line's end
        changed = bytearray(original[target - 1])
        changed[position] ^= 0x01
        write_lines(segment, [*original[: target - 1], bytes(changed), *original[target:]])
        problem = only_problem(verify(trail20, keys.public_key_pem()))
        assert (problem.kind, problem.segment, problem.line, problem.seq) == ("edited", segment.name, 8, 8), (
            position,
            str(problem),
        )


def test_deleted_entry_is_named(trail20: Path, keys: AuditKeys) -> None:
    segment = segments(trail20)[0]
    lines = lines_of(segment)
    write_lines(segment, lines[:6] + lines[7:])  # seq 7 gone
    problem = only_problem(verify(trail20, keys.public_key_pem()))
    assert (problem.kind, problem.line, problem.seq) == ("deleted", 7, 7)


def test_swapped_entries_are_named(trail20: Path, keys: AuditKeys) -> None:
    segment = segments(trail20)[0]
    lines = lines_of(segment)
    lines[10], lines[11] = lines[11], lines[10]  # seq 11 and 12
    write_lines(segment, lines)
    problem = only_problem(verify(trail20, keys.public_key_pem()))
    assert problem.kind == "reordered" and problem.line in (11, 12) and problem.seq in (11, 12)


def test_entry_moved_far_from_its_place_is_named(trail20: Path, keys: AuditKeys) -> None:
    segment = segments(trail20)[0]
    lines = lines_of(segment)
    moved = lines.pop(2)  # seq 3, written again after seq 17
    lines.insert(16, moved)
    write_lines(segment, lines)
    problem = only_problem(verify(trail20, keys.public_key_pem()))
    assert (problem.kind, problem.line, problem.seq) == ("reordered", 17, 3)


def test_inserted_entry_is_named(trail20: Path, keys: AuditKeys) -> None:
    segment = segments(trail20)[0]
    lines = lines_of(segment)
    seventh = json.loads(lines[6])
    fake = {**json.loads(lines[7]), "caller": EDUCATION, "prev": seventh["hash"]}  # a plausible seq 8
    write_lines(segment, [*lines[:7], forged_line(fake), *lines[7:]])
    problem = only_problem(verify(trail20, keys.public_key_pem()))
    assert (problem.kind, problem.line, problem.seq) == ("inserted", 8, 8)


def test_copied_entry_is_named(trail20: Path, keys: AuditKeys) -> None:
    segment = segments(trail20)[0]
    lines = lines_of(segment)
    write_lines(segment, [*lines[:14], lines[4], *lines[14:]])  # seq 5 again after seq 14
    problem = only_problem(verify(trail20, keys.public_key_pem()))
    assert (problem.kind, problem.line, problem.seq) == ("inserted", 15, 5)


def test_entry_altered_and_rehashed_breaks_the_chain_after_it(trail20: Path, keys: AuditKeys) -> None:
    segment = segments(trail20)[0]
    lines = lines_of(segment)
    lines[8] = forged_line({**json.loads(lines[8]), "purpose": "別表第六-9"})  # seq 9
    write_lines(segment, lines)
    problem = only_problem(verify(trail20, keys.public_key_pem()))
    assert (problem.kind, problem.line, problem.seq) == ("chain_break", 10, 10)
    assert "seq 9" in problem.detail


def test_truncated_tail_is_named(trail20: Path, keys: AuditKeys) -> None:
    segment = segments(trail20)[0]
    write_lines(segment, lines_of(segment)[:17])  # seq 18–20 gone; the shutdown checkpoint names 20
    problem = only_problem(verify(trail20, keys.public_key_pem()))
    assert (problem.kind, problem.line, problem.seq) == ("truncated", 17, 18)
    assert "seq 18–20" in problem.detail


def test_rechained_forgery_without_the_key_is_detected(trail20: Path, keys: AuditKeys) -> None:
    segment = segments(trail20)[0]
    forged: list[bytes] = []
    prev = json.loads(lines_of(segment)[0])["prev"]  # even starting from the real genesis
    for raw in lines_of(segment):
        entry = {**json.loads(raw), "caller": EDUCATION, "prev": prev}
        forged.append(forged_line(entry))
        prev = json.loads(forged[-1])["hash"]
    write_lines(segment, forged)

    report = verify(trail20, keys.public_key_pem())  # the real checkpoints no longer match
    assert not report.ok
    assert {p.kind for p in report.problems} == {"checkpoint_mismatch"}
    assert [p.seq for p in report.problems] == [5, 10, 15, 20, 20]

    other = AuditKeys.generate()  # checkpoints re-signed with another key
    resigned = []
    prev_line = "0" * 64
    for raw in lines_of(trail20 / CHECKPOINTS):
        cp = json.loads(raw)
        if cp["seq"]:
            cp["hash"] = json.loads(forged[cp["seq"] - 1])["hash"]
        body = {k: v for k, v in cp.items() if k != "sig"} | {"prev": prev_line}
        line = (
            canonical({**body, "sig": other.signing_key.sign(canonical(body).encode()).hex()}) + "\n"
        ).encode()
        resigned.append(line)
        prev_line = sha256_hex(line)
    write_lines(trail20 / CHECKPOINTS, resigned)
    report = verify(trail20, keys.public_key_pem())
    assert {p.kind for p in report.problems} >= {"checkpoint_signature"}
    assert len([p for p in report.problems if p.kind == "checkpoint_signature"]) == len(resigned)

    (trail20 / CHECKPOINTS).unlink()
    assert "checkpoints_missing" in {p.kind for p in verify(trail20, keys.public_key_pem()).problems}


def test_checkpoints_kept_elsewhere_catch_a_cut_checkpoint_file(trail20: Path, keys: AuditKeys) -> None:
    kept = verify(trail20, keys.public_key_pem()).last_checkpoint
    assert kept is not None and kept["kind"] == "shutdown"
    segment = segments(trail20)[0]
    write_lines(segment, lines_of(segment)[:10])
    write_lines(trail20 / CHECKPOINTS, lines_of(trail20 / CHECKPOINTS)[:3])  # up to the seq-10 checkpoint
    assert verify(trail20, keys.public_key_pem()).ok  # the cut cannot be seen from the directory alone
    problem = only_problem(verify(trail20, keys.public_key_pem(), known=[kept]))
    assert problem.kind == "checkpoint_deleted" and problem.seq == 20


def test_deleted_and_forged_checkpoint_lines_are_named(trail20: Path, keys: AuditKeys) -> None:
    path = trail20 / CHECKPOINTS
    lines = lines_of(path)  # genesis, 5, 10, 15, 20, shutdown 20
    write_lines(path, lines[:2] + lines[3:])
    problem = only_problem(verify(trail20, keys.public_key_pem()))
    assert (problem.kind, problem.segment, problem.line, problem.seq) == (
        "checkpoint_deleted",
        CHECKPOINTS,
        3,
        15,
    )

    cp = json.loads(lines[2])
    cp["seq"], cp["hash"] = (
        9,
        entry_at(segments(trail20)[0], 9)["hash"],
    )  # a checkpoint forged without the key
    write_lines(path, [*lines[:2], (canonical(cp) + "\n").encode(), *lines[3:]])
    problem = only_problem(verify(trail20, keys.public_key_pem()))
    assert (problem.kind, problem.line, problem.seq) == ("checkpoint_signature", 3, 9)


def test_missing_segment_is_named(tmp_path: Path, keys: AuditKeys) -> None:
    directory = tmp_path / "audit"
    write_trail(
        directory, keys, Clock(dt.datetime(2025, 1, 20, 12, tzinfo=JST)), 12, step=dt.timedelta(days=7)
    )
    names = [p.name for p in segments(directory)]
    assert names == ["trail-202501.log", "trail-202502.log", "trail-202503.log", "trail-202504.log"]
    (directory / "trail-202502.log").unlink()
    problem = only_problem(verify(directory, keys.public_key_pem()))
    assert (problem.kind, problem.segment, problem.line) == ("missing_segment", "trail-202503.log", 1)
    assert "trail-202502.log" in problem.detail

    (directory / "trail-202501.log").unlink()  # the oldest one too, with no erasure checkpoint
    kinds = [(p.kind, p.seq) for p in verify(directory, keys.public_key_pem()).problems]
    assert kinds == [("missing_segment", 1)]


def test_garbage_line_is_unparseable(trail20: Path, keys: AuditKeys) -> None:
    segment = segments(trail20)[0]
    lines = lines_of(segment)
    write_lines(segment, [*lines[:3], b"not an entry\n", *lines[3:]])
    problem = only_problem(verify(trail20, keys.public_key_pem()))
    assert (problem.kind, problem.line, problem.seq) == ("unparseable", 4, None)


# ---- crashes and failing disks ----------------------------------------------------------------------------


def test_torn_last_line_is_cut_at_open(tmp_path: Path, keys: AuditKeys) -> None:
    directory = tmp_path / "audit"
    key_file = tmp_path / "audit-keys.json"
    keys.save(key_file)
    crash = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from server.audit import AuditEvent, AuditKeys, AuditTrail
        trail = AuditTrail.open(Path({str(directory)!r}), AuditKeys.load(Path({str(key_file)!r})))
        for i in range(5):
            trail.append(AuditEvent("{POLICE}", "agency", "{LOOKUP}", "p", "OK", request_id=str(i)))
        trail.flush()
        segment = next(Path({str(directory)!r}).glob("trail-*.log"))
        fd = os.open(segment, os.O_WRONLY | os.O_APPEND)
        os.write(fd, b'{{"caller":"spiffe://juki.mie/agency/po')  # the machine died mid-write
        os._exit(9)
        """
    )
    run = subprocess.run([sys.executable, "-c", crash], cwd=Path(__file__).parent.parent, capture_output=True)
    assert run.returncode == 9, run.stderr.decode()
    assert "torn_line" in {p.kind for p in verify(directory, keys.public_key_pem()).problems}

    with AuditTrail.open(directory, keys) as trail:
        assert trail.recovered_torn_bytes == len(b'{"caller":"spiffe://juki.mie/agency/po')
        assert trail.seq == 5
        assert trail.append(provision(keys, CODES[0])) == 6
    report = verify(directory, keys.public_key_pem())
    assert report.ok and report.last_seq == 6, [str(p) for p in report.problems]


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB filesystem (tmpfs), so that writes really fail with ENOSPC."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)]).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=True)  # still busy after a failure


def fill(directory: Path, leave: int) -> Path:
    """Fill the filesystem up to about `leave` bytes."""
    filler = directory / "filler"
    with filler.open("ab", buffering=0) as f:
        try:
            while os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize > leave:
                f.write(b"\0" * 1024)
        except OSError:
            pass
    return filler


def test_full_disk_fails_closed_and_the_chain_resumes(
    tiny_disk: Path, keys: AuditKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tiny_disk / "audit"
    trail = AuditTrail.open(directory, keys)
    for code in CODES[:3]:
        trail.append(provision(keys, code))
    segment = segments(directory)[0]
    filler = fill(tiny_disk, 0)
    written = segment.read_bytes()
    with pytest.raises(AuditUnavailable) as failed:
        for code in CODES[3:]:  # the last page of the segment fills up, then a line does not fit
            trail.append(provision(keys, code))
            written = segment.read_bytes()
    assert failed.value.errno == errno.ENOSPC
    assert segment.read_bytes() == written  # no partial line
    assert trail.failures == 1 and not trail.healthy
    seq, head = trail.seq, trail.head
    with pytest.raises(AuditUnavailable):
        trail.append(provision(keys, CODES[0]))
    assert (trail.seq, trail.head, trail.failures) == (seq, head, 2)
    with contextlib.suppress(AuditUnavailable):  # the tree files and index cannot grow: kept for the next
        trail.flush()

    filler.unlink()  # space again: the chain continues where it stopped
    assert trail.append(provision(keys, CODES[1])) == seq + 1
    assert trail.healthy

    # A partial line that cannot be cut off at once (truncate fails too) is cut before the next write.
    filler = fill(tiny_disk, 0)
    real_ftruncate = os.ftruncate

    def broken_ftruncate(fd: int, length: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "ftruncate", broken_ftruncate)
    with pytest.raises(AuditUnavailable):
        for code in CODES:
            trail.append(provision(keys, code))
    monkeypatch.setattr(os, "ftruncate", real_ftruncate)
    assert not segment.read_bytes().endswith(b"\n")  # the partial line is still there…
    seq = trail.seq
    filler.unlink()
    assert trail.append(provision(keys, CODES[2])) == seq + 1  # …and is cut before this line is written
    assert segment.read_bytes().count(b"\n") == seq + 1
    trail.close()
    report = verify(directory, keys.public_key_pem())
    assert report.ok and report.last_seq == seq + 1, [str(p) for p in report.problems]
    last = json.loads(lines_of(directory / CHECKPOINTS)[-1])  # the Merkle tree missed no leaf either
    report = verify(directory, keys.public_key_pem(), witnessed=Witnessed(last["note"]))
    assert report.ok and report.tree_size == seq + 1, [str(p) for p in report.problems]


# ---- retention -------------------------------------------------------------------------------------------


def test_retention_erases_exactly_the_expired_segments(tmp_path: Path, keys: AuditKeys) -> None:
    directory = tmp_path / "audit"
    clock = Clock(dt.datetime(2017, 1, 15, 10, 0, tzinfo=JST))
    with AuditTrail.open(directory, keys, now=clock) as trail:
        for month in range(100):  # 2017-01 … 2025-04, two entries a month
            clock.now = dt.datetime(2017 + month // 12, month % 12 + 1, 15, 10, 0, tzinfo=JST)
            trail.append(provision(keys, CODES[month % 50]))
            trail.append(provision(keys, CODES[month % 50], outcome="PERMISSION_DENIED"))
            trail.maybe_checkpoint()
    assert len(segments(directory)) == 100

    clock.now = dt.datetime(2025, 4, 20, 3, 0, tzinfo=JST)
    with AuditTrail.open(directory, keys, now=clock) as trail:
        erased = trail.erase_expired(clock.now)  # months that ended before 2018-04-20: 2017-01 … 2018-03
        assert (erased.segments, erased.entries) == (15, 30)
        assert trail.erase_expired(clock.now) == (0, 0)
        trail.append(provision(keys, CODES[0]))
    remaining = [p.name for p in segments(directory)]
    assert remaining[0] == "trail-201804.log" and len(remaining) == 85
    erasure = [json.loads(raw) for raw in lines_of(directory / CHECKPOINTS) if b'"erasure"' in raw]
    assert len(erasure) == 1 and erasure[0]["erased_seq"] == 30
    assert [e["segment"] for e in erasure[0]["erased"]][::14] == ["trail-201701.log", "trail-201803.log"]
    report = verify(directory, keys.public_key_pem())
    assert report.ok and report.first_seq == 31 and report.erased_through == 30, [
        str(p) for p in report.problems
    ]
    # the erased range stays in the Merkle tree as its leaf hashes: the whole tree verifies against the
    # newest checkpoint, and the tree of a checkpoint from before the erasure is proven a prefix of it
    newest = json.loads(lines_of(directory / CHECKPOINTS)[-1])
    report = verify(directory, keys.public_key_pem(), witnessed=Witnessed(newest["note"]))
    assert report.ok and report.tree_size == newest["seq"] == 201, [str(p) for p in report.problems]
    before = next(
        json.loads(raw) for raw in lines_of(directory / CHECKPOINTS) if json.loads(raw)["seq"] == 20
    )
    proof = consistency(directory, 20)
    _, old = verify_note(before["note"], before["note"].split("\n")[0], keys.public_key)
    _, new = verify_note(proof.second_checkpoint, old.origin, keys.public_key)
    verify_consistency(20, new.size, old.root, new.root, proof.hashes)

    (directory / "trail-201804.log").unlink()  # not expired: its loss is still caught
    assert [p.kind for p in verify(directory, keys.public_key_pem()).problems] == ["missing_segment"]


def test_interrupted_erasure_still_verifies(tmp_path: Path, keys: AuditKeys) -> None:
    directory = tmp_path / "audit"
    clock = Clock(dt.datetime(2015, 1, 10, tzinfo=JST))
    with AuditTrail.open(directory, keys, now=clock) as trail:
        for month in range(6):
            clock.now = dt.datetime(2015, month + 1, 10, tzinfo=JST)
            trail.append(provision(keys, CODES[month]))
    kept = (directory / "trail-201504.log").read_bytes()
    with AuditTrail.open(directory, keys, now=clock) as trail:
        assert trail.erase_expired(dt.datetime(2022, 5, 15, tzinfo=JST)) == (4, 4)
    (directory / "trail-201504.log").write_bytes(kept)  # a crash before the last file was unlinked
    report = verify(directory, keys.public_key_pem())
    assert report.ok and report.first_seq == 4, [str(p) for p in report.problems]


def test_retention_never_erases_the_segment_being_written(tmp_path: Path, keys: AuditKeys) -> None:
    directory = tmp_path / "audit"
    clock = Clock(dt.datetime(2010, 5, 1, tzinfo=JST))
    with AuditTrail.open(directory, keys, now=clock) as trail:
        trail.append(provision(keys, CODES[0]))
        assert trail.erase_expired(dt.datetime(2030, 1, 1, tzinfo=JST)) == (0, 0)
        assert trail.append(provision(keys, CODES[1])) == 2
    assert verify(directory, keys.public_key_pem()).ok


def test_seq_is_never_reused_after_the_tail_is_cut(trail20: Path, keys: AuditKeys) -> None:
    segment = segments(trail20)[0]
    write_lines(segment, lines_of(segment)[:12])  # seq 13–20 gone, though checkpoints name 15 and 20
    with AuditTrail.open(trail20, keys, now=Clock(dt.datetime(2025, 4, 2, tzinfo=JST))) as trail:
        assert trail.append(provision(keys, CODES[0])) == 21
    problem = only_problem(verify(trail20, keys.public_key_pem()))
    assert (problem.kind, problem.line, problem.seq) == ("deleted", 13, 13) and "13–20" in problem.detail


def test_clock_stepping_back_never_reopens_a_month(tmp_path: Path, keys: AuditKeys) -> None:
    directory = tmp_path / "audit"
    clock = Clock(dt.datetime(2025, 4, 30, 23, 59, 59, tzinfo=JST))
    with AuditTrail.open(directory, keys, now=clock) as trail:
        trail.append(provision(keys, CODES[0]))
        clock.now = dt.datetime(2025, 5, 1, 0, 0, 1, tzinfo=JST)
        trail.append(provision(keys, CODES[1]))
        clock.now = dt.datetime(2025, 4, 30, 23, 59, 59, 500000, tzinfo=JST)  # NTP stepped the clock back
        trail.append(provision(keys, CODES[2]))
    assert [len(lines_of(p)) for p in segments(directory)] == [1, 2]
    assert verify(directory, keys.public_key_pem()).ok
    assert monthly_report(directory, "2025-04").entries == 2


def test_swap_across_segments_is_named(tmp_path: Path, keys: AuditKeys) -> None:
    directory = tmp_path / "audit"
    write_trail(
        directory, keys, Clock(dt.datetime(2025, 4, 30, 23, 0, tzinfo=JST)), 6, step=dt.timedelta(minutes=20)
    )
    april, may = segments(directory)
    a, m = lines_of(april), lines_of(may)
    a[-1], m[0] = m[0], a[-1]
    write_lines(april, a)
    write_lines(may, m)
    problem = only_problem(verify(directory, keys.public_key_pem()))
    assert (problem.kind, problem.segment, problem.line, problem.seq) == ("reordered", april.name, 3, 4)


# ---- checkpoints and keys --------------------------------------------------------------------------------


def test_interval_checkpoints_only_when_there_is_something_new(tmp_path: Path, keys: AuditKeys) -> None:
    clock = Clock(dt.datetime(2025, 4, 1, 9, 0, tzinfo=JST))
    with AuditTrail.open(
        tmp_path / "audit", keys, now=clock, checkpoint_interval=60, heartbeat_interval=3600
    ) as trail:
        assert not trail.maybe_checkpoint()
        trail.append(provision(keys, CODES[0]))
        assert not trail.maybe_checkpoint()  # the genesis checkpoint was just written
        clock.advance(seconds=60)
        assert trail.maybe_checkpoint()
        trail.append(provision(keys, CODES[1]))
        clock.advance(seconds=59)
        assert not trail.maybe_checkpoint()
        clock.advance(seconds=1)
        assert trail.maybe_checkpoint()
        clock.advance(seconds=600)
        assert not trail.maybe_checkpoint()
    kinds = [json.loads(raw)["kind"] for raw in lines_of(tmp_path / "audit" / CHECKPOINTS)]
    assert kinds == ["genesis", "interval", "interval", "shutdown"]


def test_key_files(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "audit.json"
    keys = AuditKeys.load_or_create(path)
    assert path.stat().st_mode & 0o777 == 0o600
    again = AuditKeys.load_or_create(path)
    assert again.subject_key == keys.subject_key and again.public_key_pem() == keys.public_key_pem()
    assert keys.subject_hash(CODES[0]) != AuditKeys.generate().subject_hash(CODES[0])
    assert len(keys.subject_hash(CODES[0])) == 32

    keys.write_public_key(tmp_path / "audit.pem")
    keys.write_auditor_keys(tmp_path / "auditor.json")
    auditor = AuditorKeys.load(tmp_path / "auditor.json")
    assert auditor.subject_hash(CODES[0]) == keys.subject_hash(CODES[0])
    assert "signing_key" not in json.loads((tmp_path / "auditor.json").read_text())
    directory = tmp_path / "audit"
    write_trail(directory, keys, Clock(dt.datetime(2025, 4, 1, tzinfo=JST)), 3)
    assert verify(directory, tmp_path / "audit.pem").ok
    assert verify(directory, auditor.public_key).ok


# ---- reading: query, disclosure, monthly report ----------------------------------------------------------


def scripted(directory: Path, keys: AuditKeys) -> None:
    """A month of calls with known counts (April 2025; 1 April is a Tuesday)."""
    clock = Clock(dt.datetime(2025, 3, 31, 12, 0, tzinfo=JST))
    s = [keys.subject_hash(code) for code in CODES]

    def at(day: int, hour: int, minute: int = 0) -> None:
        clock.now = dt.datetime(2025, 4, day, hour, minute, tzinfo=JST)

    def search(found: tuple[str, ...]) -> AuditEvent:
        return AuditEvent(OPERATOR, "operator", SEARCH, "本人確認", "OK", found, ("name",), count=len(found))

    def lookup(subject: str, caller: str = OPERATOR) -> AuditEvent:
        role = "operator" if caller == OPERATOR else "agency"
        return AuditEvent(caller, role, LOOKUP, "本人確認", "OK", (subject,), ITEMS, count=1)

    with AuditTrail.open(directory, keys, now=clock) as trail:
        trail.append(lookup(s[9]))  # 31 March: not in the April report
        at(1, 9)
        trail.append(search((s[0], s[1])))  # followed by the lookup of s[1] below
        at(1, 9, 5)
        trail.append(search((s[2],)))  # never followed
        at(1, 9, 10)
        trail.append(search(()))  # nothing found
        at(1, 9, 30)
        trail.append(lookup(s[1]))
        at(1, 22)
        trail.append(search((s[3], s[4])))  # off hours, never followed (lookup of s[3] is by someone else)
        at(2, 10)
        trail.append(lookup(s[3], caller=POLICE))
        at(2, 11)
        trail.append(provision(keys, CODES[5]))
        at(3, 14)
        trail.append(provision(keys, CODES[6]))
        at(5, 10)  # Saturday
        trail.append(provision(keys, CODES[7], outcome="PERMISSION_DENIED"))
        at(7, 8, 29)  # Monday, one minute before office hours
        trail.append(AuditEvent("", "", LOOKUP, "", "UNAUTHENTICATED"))
        at(30, 17, 29)
        trail.append(search((s[10],)))  # followed by a provision (移転) of s[10] by the same operator
        trail.append(
            AuditEvent(
                OPERATOR, "operator", PROVIDE, "別表第五", "OK", (s[10],), ITEMS, count=1, kind=PROVISION
            )
        )
        clock.now = dt.datetime(2025, 5, 1, 0, 0, tzinfo=JST)
        trail.append(search((s[8],)))  # May


def test_monthly_report_counts(tmp_path: Path, keys: AuditKeys) -> None:
    directory = tmp_path / "audit"
    scripted(directory, keys)
    report = monthly_report(directory, "2025-04", unfollowed_threshold=2)
    assert (report.entries, report.first_seq, report.last_seq) == (12, 2, 13)
    assert report.volume[OPERATOR] == {LOOKUP: {"OK": 1}, PROVIDE: {"OK": 1}, SEARCH: {"OK": 5}}
    assert report.volume[POLICE] == {LOOKUP: {"OK": 1}, PROVIDE: {"OK": 2, "PERMISSION_DENIED": 1}}
    assert report.volume[""] == {LOOKUP: {"UNAUTHENTICATED": 1}}
    assert report.off_hours == {"": {LOOKUP: 1}, OPERATOR: {SEARCH: 1}, POLICE: {PROVIDE: 1}}
    assert report.searches == {OPERATOR: {"searches": 5, "with_results": 4, "unfollowed": 2, "empty": 1}}
    assert report.refusals == {
        "": {LOOKUP: {"UNAUTHENTICATED": 1}},
        POLICE: {PROVIDE: {"PERMISSION_DENIED": 1}},
    }
    assert report.callers[POLICE] == {
        "role": "agency",
        "calls": 4,
        "refused": 1,
        "off_hours": 1,
        "provisions": 3,
        "searches": 0,
        "distinct_subjects": 4,
    }
    flags = {(f["caller"], f["reason"], f["count"]) for f in report.flags}
    assert flags == {
        ("", "off_hours", 1),
        ("", "refusals", 1),
        (OPERATOR, "off_hours", 1),
        (OPERATOR, "unfollowed_searches", 2),
        (POLICE, "off_hours", 1),
        (POLICE, "refusals", 1),
    }
    assert report.checkpoint is not None and report.checkpoint["kind"] == "shutdown"

    as_json = json.loads(report.to_json())
    assert as_json["searches"][OPERATOR]["unfollowed"] == 2
    markdown = report.to_markdown()
    for heading in (
        "# 監査証跡 月次報告 2025-04",
        "## 要注意",
        "## 時間外の利用",
        "## 照会・提供に続かない検索",
        "## 拒否",
    ):
        assert heading in markdown
    assert f"| {OPERATOR} | 5 | 4 | 2 | 1 |" in markdown
    for text in (report.to_json(), markdown):  # no resident, not even as a subject hash
        assert not any(keys.subject_hash(code) in text or code in text for code in CODES)


def test_provisions_of_include_refusals(tmp_path: Path, keys: AuditKeys) -> None:
    directory = tmp_path / "audit"
    scripted(directory, keys)
    clock = Clock(dt.datetime(2025, 5, 2, 10, tzinfo=JST))
    with AuditTrail.open(directory, keys, now=clock) as trail:
        trail.append(provision(keys, CODES[7], caller=EDUCATION))
    found = provisions_of(directory, keys.subject_hash(CODES[7]))
    assert [(e["caller"], e["outcome"]) for e in found] == [(POLICE, "PERMISSION_DENIED"), (EDUCATION, "OK")]
    assert found[0]["time"] == "2025-04-05T10:00:00.000000+09:00" and found[0]["purpose"].startswith(
        "別表第六"
    )
    assert (
        provisions_of(directory, keys.subject_hash(CODES[9])) == []
    )  # looked up by an operator: no provision


def test_query_filters(tmp_path: Path, keys: AuditKeys) -> None:
    directory = tmp_path / "audit"
    scripted(directory, keys)
    s10 = keys.subject_hash(CODES[10])
    assert [e["seq"] for e in query(directory, subject=s10)] == [12, 13]
    assert [e["seq"] for e in query(directory, subject=s10, method=SEARCH)] == [12]
    assert [e["seq"] for e in query(directory, subject=keys.subject_hash(CODES[2]))] == [3]
    assert [e["seq"] for e in query(directory, caller=POLICE, outcome="OK")] == [7, 8, 9]
    assert [e["seq"] for e in query(directory, outcome="UNAUTHENTICATED")] == [11]
    april = {"since": dt.datetime(2025, 4, 1, tzinfo=JST), "until": dt.datetime(2025, 4, 2, tzinfo=JST)}
    assert [e["seq"] for e in query(directory, caller=OPERATOR, **april)] == [2, 3, 4, 5, 6]
    assert [e["seq"] for e in query(directory, purpose="別表第五", role="operator")] == [13]
    assert list(query(directory, caller="spiffe://juki.mie/agency/nobody")) == []


def test_no_resident_identity_in_any_file(tmp_path: Path, keys: AuditKeys) -> None:
    directory = tmp_path / "audit"
    scripted(directory, keys)
    write_trail(directory, keys, Clock(dt.datetime(2025, 6, 1, tzinfo=JST)), 30)
    names = ["三重 太郎", "ミエ タロウ"]  # what a resident's record would hold; never handed to the trail
    files = [p for p in directory.rglob("*") if p.is_file()]  # the tree files and subject index too
    assert {p.name for p in files} >= {
        "trail-202503.log",
        "trail-202504.log",
        "trail-202506.log",
        CHECKPOINTS,
    }
    for path in files:
        data = path.read_bytes()  # the Merkle tree files are binary hashes: search their bytes too
        for secret in [*CODES, *names]:
            assert secret.encode() not in data, (path.name, secret)


def test_append_speed_is_measured(tmp_path: Path, keys: AuditKeys) -> None:
    """Not a benchmark: a guard against the hot path growing by an order of magnitude."""
    import time

    event = provision(keys, CODES[0])
    with AuditTrail.open(tmp_path / "audit", keys) as trail:
        start = time.perf_counter()
        for _ in range(5000):
            trail.append(event)
        elapsed = time.perf_counter() - start
    assert elapsed / 5000 < 200e-6


def test_clock_must_be_timezone_aware(tmp_path: Path, keys: AuditKeys) -> None:
    naive: Callable[[], dt.datetime] = lambda: dt.datetime(2025, 4, 1, 9, 0)  # noqa: E731
    with pytest.raises(ValueError, match="timezone-aware"):
        AuditTrail.open(tmp_path / "audit", keys, now=naive)
    AuditTrail.open(tmp_path / "audit", keys).close()  # nothing was left locked
