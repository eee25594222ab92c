"""Verification of a trail directory (監査証跡の検証), offline, with the public key only.

Each problem is named at the segment file, line and seq where it shows:

- `edited`: an entry's hash does not match its content (or the line is not in canonical form);
- `unparseable`: a line that is not an audit entry (or checkpoint) at all;
- `deleted`: entries missing from the chain (a seq gap);
- `missing_segment`: a segment file gone that no erasure checkpoint accounts for;
- `reordered`: an entry written out of its place;
- `inserted`: an entry that is not part of the chain (a second entry for a seq);
- `chain_break`: an entry whose `prev` is not the hash of the entry before it (a replaced entry, or an
  entry before it altered and re-hashed);
- `truncated`: a checkpoint names a seq beyond the end of the trail;
- `torn_line`: a last line without its `\\n` (a crash leftover, cut at the next open);
- `checkpoint_signature`, `checkpoint_mismatch`, `checkpoint_deleted`, `checkpoints_missing`: a checkpoint
  forged or edited, naming a hash the trail does not have, missing from the checkpoint chain, or no
  checkpoint file at all;
- `merkle_mismatch`: a checkpoint's signed note names a tree root the entries do not hash to.

Checked against a witnessed checkpoint (`witnessed`), also what `witnessed` describes (a cut tail, a
rollback, a wipe, an edit or an appended entry after what the witness saw).

Without a witnessed checkpoint, entries after the last checkpoint are protected by the chain only: a tail
cut exactly there, together with the last checkpoint lines, cannot be seen from the directory alone.

The entries are read once, as a stream with a small look-ahead window, so a trail of any length verifies in
constant memory.
"""

from __future__ import annotations

import bisect
import json
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from server.audit.entries import (
    CHECKPOINT_GENESIS_PREV,
    CHECKPOINTS,
    canonical,
    entry_hash,
    list_segments,
    parse_entry,
    read_lines,
    segment_month,
    sha256_hex,
)
from server.audit.keys import load_public_key
from server.audit.merkle import EMPTY_ROOT, CompactRange, leaf_hash
from server.audit.note import NoteError, verify_note
from server.audit.problems import (
    CHAIN_BREAK,
    CHECKPOINT_DELETED,
    CHECKPOINT_MISMATCH,
    CHECKPOINT_SIGNATURE,
    CHECKPOINTS_MISSING,
    DELETED,
    EDITED,
    INSERTED,
    MERKLE_MISMATCH,
    MISSING_SEGMENT,
    REORDERED,
    TORN_LINE,
    TRUNCATED,
    UNPARSEABLE,
    UNWITNESSED,
    WITNESS_CHECKPOINT_DELETED,
    WITNESS_INVALID,
    WITNESS_MISMATCH,
    WITNESS_TRUNCATED,
    Problem,
)
from server.audit.tree import TreeReader
from server.audit.witnessed import Walked, Witnessed, check_witnessed, witnessed_checkpoint

_WINDOW = 64  # look-ahead, in lines, for telling a reorder or an insertion from a gap
_CHECKPOINT_KEYS = {"seq", "hash", "time", "segment", "kind", "prev", "sig"}


@dataclass
class VerifyReport:
    """The outcome of `verify()`; `ok` when nothing is wrong."""

    ok: bool
    problems: list[Problem] = field(default_factory=list)
    entries: int = 0
    segments: list[str] = field(default_factory=list)
    first_seq: int | None = None
    last_seq: int | None = None
    head: str = ""  # hash of the last entry
    checkpoints: int = 0  # valid checkpoint lines
    last_checkpoint: dict[str, Any] | None = None  # the newest valid checkpoint, as written
    erased_through: int = 0  # last seq removed by retention (0: none)
    unanchored: int = 0  # entries after the last checkpoint that matched (chain-protected only)
    origin: str = ""  # the log's name in its checkpoint notes
    tree_size: int = 0  # entries covered by the Merkle tree the walk rebuilt (0: broken by a problem)
    witnessed_size: int | None = None  # size of the witnessed checkpoint checked against
    first_unwitnessed_time: str = ""  # time of the first entry after it ("" when none)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=2, sort_keys=True)


class _Rec(NamedTuple):
    segment: str
    line: int
    seq: int
    prev: str
    hash: str
    computed: str
    canonical: bool
    leaf: bytes
    time: str

    @property
    def valid(self) -> bool:
        return self.canonical and self.hash == self.computed


class _Unparsed(NamedTuple):
    segment: str
    line: int


class _Cp(NamedTuple):
    line: int
    seq: int
    hash: str
    kind: str
    time: str
    segment: str
    root: bytes | None  # the tree root its signed note names (None: a checkpoint from before the tree)


class _Erasures:
    """What valid erasure checkpoints say was removed on purpose."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.anchors: set[tuple[int, str]] = set()
        self._ranges: list[tuple[int, int]] = []
        self.through = 0

    def add(self, erased: Any) -> None:
        if not isinstance(erased, list):
            return
        for item in erased:
            if not isinstance(item, dict):
                continue
            self.names.add(str(item.get("segment", "")))
            first, last, digest = item.get("first_seq"), item.get("last_seq"), item.get("last_hash")
            if isinstance(first, int) and isinstance(last, int) and isinstance(digest, str):
                self._ranges.append((first, last))
                self.anchors.add((last, digest))
                self.through = max(self.through, last)

    def freeze(self) -> None:
        merged: list[tuple[int, int]] = []
        for lo, hi in sorted(self._ranges):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
            else:
                merged.append((lo, hi))
        self._ranges = merged
        self._starts = [lo for lo, _ in merged]

    def covers(self, lo: int, hi: int) -> bool:
        i = bisect.bisect_right(self._starts, lo) - 1
        return i >= 0 and self._ranges[i][0] <= lo and hi <= self._ranges[i][1]


class _CheckpointScan:
    """First pass over checkpoints.log: signatures, the checkpoint chain, genesis, erasures."""

    def __init__(self, path: Path, public_key: Ed25519PublicKey, problems: list[Problem]) -> None:
        self.path = path
        self.present = path.exists()
        self.bad: set[int] = set()
        self.genesis: str | None = None
        self.erasures = _Erasures()
        self.count = 0
        self.last: dict[str, Any] | None = None
        self.sigs: set[str] = set()
        self.segments: set[str] = set()
        self.origin = ""
        self.roots: dict[int, bytes] = {}  # line -> root of its valid note
        self.noted_size = -1  # the largest size a valid note names
        if not self.present:
            problems.append(Problem(CHECKPOINTS_MISSING, CHECKPOINTS, 0, None, "there is no checkpoint file"))
            return
        expected_prev = CHECKPOINT_GENESIS_PREV
        previous_bad = False
        for number, raw in read_lines(path):
            line_hash = sha256_hex(raw)
            problem = self._check(number, raw, expected_prev, previous_bad, public_key)
            if problem is not None:
                problems.append(problem)
                if problem.kind != CHECKPOINT_DELETED:  # a checkpoint after a gap still anchors the trail
                    self.bad.add(number)
            previous_bad = problem is not None and problem.kind != CHECKPOINT_DELETED
            expected_prev = line_hash
        if self.count == 0:
            problems.append(Problem(CHECKPOINTS_MISSING, CHECKPOINTS, 0, None, "no valid checkpoint"))
        elif self.genesis is None:
            problems.append(
                Problem(CHECKPOINT_DELETED, CHECKPOINTS, 1, 0, "the genesis checkpoint is missing")
            )
        self.erasures.freeze()

    def _check(
        self, number: int, raw: bytes, expected_prev: str, previous_bad: bool, public_key: Ed25519PublicKey
    ) -> Problem | None:
        if not raw.endswith(b"\n"):
            return Problem(
                TORN_LINE, CHECKPOINTS, number, None, "last checkpoint line has no end (crash leftover)"
            )
        try:
            cp = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            cp = None
        if not isinstance(cp, dict) or not cp.keys() >= _CHECKPOINT_KEYS or not isinstance(cp["seq"], int):
            return Problem(UNPARSEABLE, CHECKPOINTS, number, None, "not a checkpoint")
        seq: int = cp["seq"]
        body = {k: v for k, v in cp.items() if k != "sig"}
        try:
            public_key.verify(bytes.fromhex(str(cp["sig"])), canonical(body).encode())
        except (InvalidSignature, ValueError):
            return Problem(
                CHECKPOINT_SIGNATURE, CHECKPOINTS, number, seq, "signature does not verify (forged or edited)"
            )
        if (canonical(cp) + "\n").encode() != raw:
            return Problem(
                CHECKPOINT_SIGNATURE, CHECKPOINTS, number, seq, "line is not in canonical form (edited)"
            )
        if "note" in cp:
            problem = self._check_note(number, seq, cp["note"], public_key)
            if problem is not None:
                return problem
        self.count += 1
        self.last = cp
        self.sigs.add(str(cp["sig"]))
        if cp["segment"]:
            self.segments.add(str(cp["segment"]))
        if cp["kind"] == "genesis" and cp["prev"] == CHECKPOINT_GENESIS_PREV and seq == 0:
            self.genesis = str(cp["hash"])
        if cp["kind"] == "erasure":
            self.erasures.add(cp.get("erased"))
        if cp["prev"] != expected_prev and not previous_bad:
            what = (
                "the first checkpoint lines are"
                if number == 1
                else f"a checkpoint line before line {number} is"
            )
            return Problem(
                CHECKPOINT_DELETED, CHECKPOINTS, number, seq, f"{what} missing (checkpoint chain broken)"
            )
        return None

    def _check_note(self, number: int, seq: int, text: Any, public_key: Ed25519PublicKey) -> Problem | None:
        try:
            origin = str(text).split("\n", 1)[0]
            _, checkpoint = verify_note(str(text), origin, public_key)
        except NoteError as e:
            return Problem(CHECKPOINT_SIGNATURE, CHECKPOINTS, number, seq, f"signed note: {e}")
        if checkpoint.size != seq:
            return Problem(
                CHECKPOINT_SIGNATURE, CHECKPOINTS, number, seq, f"signed note names size {checkpoint.size}"
            )
        if self.origin and origin != self.origin:
            return Problem(
                CHECKPOINT_SIGNATURE, CHECKPOINTS, number, seq, f"signed note of another log ({origin})"
            )
        self.origin = origin
        self.roots[number] = checkpoint.root
        self.noted_size = max(self.noted_size, seq)
        return None

    def valid(self) -> Iterator[_Cp]:
        """The valid checkpoints in file order, seq never going back."""
        if not self.present:
            return
        last_seq = -1
        for number, raw in read_lines(self.path):
            if number in self.bad:
                continue
            cp = json.loads(raw)
            if cp["seq"] >= last_seq:
                last_seq = cp["seq"]
                yield _Cp(
                    number,
                    cp["seq"],
                    str(cp["hash"]),
                    str(cp["kind"]),
                    str(cp["time"]),
                    str(cp["segment"]),
                    self.roots.get(number),
                )


def _records(directory: Path, segments: list[str], problems: list[Problem]) -> Iterator[_Rec | _Unparsed]:
    for name in segments:
        for number, raw in read_lines(directory / name):
            if not raw.endswith(b"\n"):
                problems.append(
                    Problem(TORN_LINE, name, number, None, "last line has no end (crash leftover)")
                )
                continue
            entry = parse_entry(raw)
            if entry is None:
                yield _Unparsed(name, number)  # reported by the chain walk, which can tell what it replaced
                continue
            is_canonical, computed = entry_hash(raw, entry)
            yield _Rec(
                name,
                number,
                entry["seq"],
                entry["prev"],
                entry["hash"],
                computed,
                is_canonical,
                leaf_hash(raw[:-1]),
                entry["time"],
            )


def _at(rec: _Rec | _Unparsed) -> str:
    return f"{rec.segment}:{rec.line}"


class _Chain:
    """The chain walk: one pass over the entries, checkpoints merged in by seq."""

    def __init__(
        self,
        scan: _CheckpointScan,
        present: list[str],
        problems: list[Problem],
        directory: Path,
        witnessed_size: int | None,
    ) -> None:
        self.problems = problems
        self.erasures = scan.erasures
        self.genesis = scan.genesis
        self.last_seq = 0
        self.last_hashes: tuple[str, ...] = (scan.genesis,) if scan.genesis else ()
        self.last: _Rec | None = None
        self.first_seq: int | None = None
        self.entries = 0
        self.pending_unparsed = 0  # seqs that unreadable lines may stand for (no gap, no prev check)
        self.unparsed: list[_Unparsed] = []
        self.gaps: deque[tuple[int, int]] = deque(maxlen=10_000)
        self.deferred: dict[int, _Rec] = {}
        self.checkpoints = scan.valid()
        self.cp: _Cp | None = next(self.checkpoints, None)
        self.anchored_seq = 0
        names = set(present)
        self.missing_named = sorted(
            n for n in scan.segments if n not in names and n not in scan.erasures.names
        )
        self.reported_missing: set[str] = set()
        self.buf: deque[_Rec | _Unparsed] = deque()
        self.buf_seqs: Counter[int] = Counter()
        # The Merkle tree of the entries, rebuilt as they are accepted; dropped at the first problem (the
        # chain has named it; a root compared after it would only say the same again).
        self.tree: CompactRange | None = CompactRange()
        self.clean_problems = len(problems)
        self.directory = directory
        self.witnessed_size = witnessed_size
        self.witnessed_root: bytes | None = None  # the rebuilt root at the witnessed size
        self.first_unwitnessed_time = ""  # time of the first entry after the witnessed size
        self.tree_size = 0

    def report(self, kind: str, rec: _Rec | _Unparsed, seq: int | None, detail: str) -> None:
        self.problems.append(Problem(kind, rec.segment, rec.line, seq, detail))

    # -- the walk --

    def run(self, stream: Iterator[_Rec | _Unparsed]) -> None:
        while True:
            while len(self.buf) < _WINDOW:
                item = next(stream, None)
                if item is None:
                    break
                self.buf.append(item)
                if isinstance(item, _Rec):
                    self.buf_seqs[item.seq] += 1
            rec = self._next()
            if rec is None:
                return
            if isinstance(rec, _Unparsed):
                self.unparsed.append(rec)
                continue
            if self.unparsed:
                self._resolve_unparsed(rec)
            self.step(rec)

    def _next(self) -> _Rec | _Unparsed | None:
        if self.deferred:
            low = min(self.deferred)
            head = self.buf[0] if self.buf else None
            if low == self.last_seq + 1 or head is None or (isinstance(head, _Rec) and head.seq > low):
                return self.deferred.pop(low)
        if not self.buf:
            return None
        rec = self.buf.popleft()
        if isinstance(rec, _Rec):
            self.buf_seqs[rec.seq] -= 1
        return rec

    def _take(self, seq: int) -> _Rec | None:
        """Pull the entry for `seq` out of the look-ahead window."""
        if self.buf_seqs[seq] <= 0:
            return None
        for i, other in enumerate(self.buf):
            if isinstance(other, _Rec) and other.seq == seq:
                del self.buf[i]
                self.buf_seqs[seq] -= 1
                return other
        return None

    def _continues(self, rec: _Rec) -> bool:
        """Whether an entry in the window chains onto `rec`."""
        if self.buf_seqs[rec.seq + 1] <= 0:
            return False
        return any(isinstance(o, _Rec) and o.seq == rec.seq + 1 and o.prev == rec.hash for o in self.buf)

    def _fork(self, rec: _Rec) -> _Rec | None:
        """Another entry in the window claiming the same seq and chaining to the same predecessor."""
        if self.buf_seqs[rec.seq] <= 0:
            return None
        for o in self.buf:
            if isinstance(o, _Rec) and o.seq == rec.seq and o.prev in self.last_hashes:
                return o
        return None

    def step(self, rec: _Rec) -> None:
        expected = self.last_seq + 1
        if not rec.valid:
            self._edited(rec, expected)
            return
        if rec.seq == expected:
            if rec.prev in self.last_hashes or (self.genesis is None and expected == 1):
                other = self._fork(rec)
                if other is not None and self._continues(other) and not self._continues(rec):
                    self.report(
                        INSERTED, rec, rec.seq, f"not part of the chain: seq {rec.seq} is at {_at(other)}"
                    )
                    return
                self.accept(rec, rec.seq, (rec.hash,))
                return
            other = self._fork(rec)
            if other is not None:
                self.report(
                    INSERTED, rec, rec.seq, f"not part of the chain: seq {rec.seq} is at {_at(other)}"
                )
                return
            if not self.pending_unparsed:
                self._chain_break(rec)
            self.accept(rec, rec.seq, (rec.hash,))
            return
        if rec.seq > expected:
            head = self.buf[0] if self.buf else None
            if isinstance(head, _Rec) and head.seq == expected and rec.seq not in self.deferred:
                self.report(REORDERED, rec, rec.seq, f"written before seq {expected} at {_at(head)}")
                self.deferred[rec.seq] = rec
                return
            moved = self._take(expected)
            if moved is not None:
                self.report(REORDERED, moved, expected, f"written after seq {rec.seq} at {_at(rec)}")
                self.buf.appendleft(rec)
                self.buf_seqs[rec.seq] += 1
                self.step(moved)
                return
            self._gap(expected, rec)
            self.accept(rec, rec.seq, (rec.hash,))
            return
        # seq at or below what the chain already holds
        if any(lo <= rec.seq <= hi for lo, hi in self.gaps):
            self.report(REORDERED, rec, rec.seq, "written far from its place (reported missing there)")
        else:
            self.report(
                INSERTED,
                rec,
                rec.seq,
                f"seq {rec.seq} appears a second time (the chain is at seq {self.last_seq})",
            )

    def _resolve_unparsed(self, rec: _Rec) -> None:
        """Unreadable lines before `rec`: altered entries if they fill its seq gap, else foreign lines."""
        lines, self.unparsed = self.unparsed, []
        expected = self.last_seq + 1
        if rec.seq == expected + len(lines):
            for i, line in enumerate(lines):
                self.report(EDITED, line, expected + i, "line no longer reads as an audit entry (altered)")
            self.gaps.append((expected, rec.seq - 1))  # a checkpoint naming them is not a second problem
            self.last_seq += len(lines)
            self.pending_unparsed = len(lines)
            return
        for line in lines:
            self.report(UNPARSEABLE, line, None, "not an audit entry (a foreign or garbled line)")
        if rec.seq != expected:
            self.pending_unparsed = len(lines)

    def _edited(self, rec: _Rec, expected: int) -> None:
        head = next((o for o in self.buf if isinstance(o, _Rec)), None)
        seq = expected
        if rec.seq > expected and head is not None and head.seq == rec.seq + 1:
            seq = rec.seq  # its seq is right: entries before it are missing
            self._gap(expected, rec)
        what = "hash does not match the content" if rec.canonical else "line is not in canonical form"
        self.report(EDITED, rec, seq, f"{what} (entry altered)")
        self.accept(rec, seq, (rec.hash, rec.computed))

    def _chain_break(self, rec: _Rec) -> None:
        if self.last is None:
            detail = "prev is not the genesis hash of this trail (a trail that was not started here)"
        else:
            detail = (
                f"prev is not the hash of seq {self.last_seq} at {_at(self.last)}: that entry was altered "
                "and re-hashed, or this one replaced"
            )
        self.report(CHAIN_BREAK, rec, rec.seq, detail)

    def _gap(self, expected: int, rec: _Rec) -> None:
        lo, hi = expected, rec.seq - 1
        if self.pending_unparsed >= hi - lo + 1:
            return  # unparseable lines stood there, reported already
        if self.erasures.covers(lo, hi) and (hi, rec.prev) in self.erasures.anchors:
            return  # removed by retention, signed for
        if self.erasures.through >= lo and self.erasures.covers(lo, self.erasures.through):
            lo = self.erasures.through + 1  # the erased part of the gap is accounted for
            if lo > hi:
                self.report(CHAIN_BREAK, rec, rec.seq, "prev is not the hash of the last erased entry")
                return
        self.gaps.append((lo, hi))
        span = f"seq {lo}" if lo == hi else f"seq {lo}–{hi}"
        before = self.last.segment if self.last else ""
        missing = [n for n in self.missing_named if before < n < rec.segment]
        if missing:
            self.reported_missing.update(missing)
            self.report(MISSING_SEGMENT, rec, lo, f"{', '.join(missing)} missing: {span} absent")
            return
        if self.last is not None and rec.line == 1 and before != rec.segment and _apart(before, rec.segment):
            self.report(MISSING_SEGMENT, rec, lo, f"{span} missing between {before} and {rec.segment}")
            return
        self.report(DELETED, rec, lo, f"{span} missing before this entry (deleted)")

    def _grow_tree(self, rec: _Rec, seq: int) -> None:
        tree = self.tree
        if tree is None:
            return
        if len(self.problems) != self.clean_problems or not rec.valid:
            self.tree = None
            return
        if tree.size == 0 and seq > 1:  # the first entries were erased: their leaves are in the leaf file
            try:
                with TreeReader(self.directory) as reader:
                    tree = self.tree = CompactRange.of(seq - 1, reader.subtree)
            except (LookupError, ValueError, OSError):
                self.tree = None
                return
        if tree.size != seq - 1:
            self.tree = None
            return
        tree.append(rec.leaf)
        self.tree_size = tree.size
        if tree.size == self.witnessed_size:
            self.witnessed_root = tree.root()

    def accept(self, rec: _Rec, seq: int, hashes: tuple[str, ...]) -> None:
        self._grow_tree(rec, seq)
        if self.witnessed_size is not None and seq > self.witnessed_size and not self.first_unwitnessed_time:
            self.first_unwitnessed_time = rec.time
        self.last_seq = seq
        self.last_hashes = hashes
        self.last = rec
        self.entries += 1
        self.pending_unparsed = 0
        if self.first_seq is None:
            self.first_seq = seq
        while self.cp is not None and self.cp.seq <= seq:
            cp = self.cp
            if cp.seq == seq:
                if cp.hash not in hashes:
                    self.report(
                        CHECKPOINT_MISMATCH,
                        rec,
                        seq,
                        f"checkpoint {CHECKPOINTS}:{cp.line} ({cp.kind}, {cp.time}) signed another hash for "
                        "this seq (the trail was rewritten)",
                    )
                else:
                    self.anchored_seq = seq
                    if cp.root is not None and self.tree is not None and cp.root != self.tree.root():
                        self.report(
                            MERKLE_MISMATCH,
                            rec,
                            seq,
                            f"checkpoint {CHECKPOINTS}:{cp.line} ({cp.kind}) signed a tree root the "
                            f"entries 1–{seq} do not hash to",
                        )
            elif cp.seq > 0 and not self.erasures.covers(cp.seq, cp.seq) and not self._reported_gap(cp.seq):
                self.problems.append(
                    Problem(
                        CHECKPOINT_MISMATCH,
                        CHECKPOINTS,
                        cp.line,
                        cp.seq,
                        f"checkpoint ({cp.kind}) names seq {cp.seq}, which the trail does not hold",
                    )
                )
            self.cp = next(self.checkpoints, None)

    def _reported_gap(self, seq: int) -> bool:
        return any(lo <= seq <= hi for lo, hi in self.gaps)

    def finish(self) -> None:
        for line in self.unparsed:
            self.report(UNPARSEABLE, line, None, "not an audit entry (a foreign or garbled line)")
        self.unparsed = []
        for rec in sorted(self.deferred.values(), key=lambda r: r.seq):
            self.step(rec)
        self.deferred.clear()
        beyond = None
        while self.cp is not None:  # checkpoints past the end of the trail
            beyond = self.cp
            self.cp = next(self.checkpoints, None)
        if beyond is not None and beyond.seq > self.last_seq:
            end = f"seq {self.last_seq} at {_at(self.last)}" if self.last else "no entry"
            self.problems.append(
                Problem(
                    TRUNCATED,
                    self.last.segment if self.last else CHECKPOINTS,
                    self.last.line if self.last else 0,
                    self.last_seq + 1,
                    f"the trail ends at {end} but checkpoint {CHECKPOINTS}:{beyond.line} ({beyond.kind}, "
                    f"{beyond.time}) names seq {beyond.seq}: seq {self.last_seq + 1}–{beyond.seq} missing",
                )
            )
        for name in self.missing_named:
            if name not in self.reported_missing:
                self.problems.append(
                    Problem(MISSING_SEGMENT, name, 0, None, "named by a checkpoint, absent, and not erased")
                )


def _apart(earlier: str, later: str) -> bool:
    """Whether a whole month lies between two segments (a missing segment rather than missing lines)."""
    a, b = segment_month(earlier), segment_month(later)
    if a is None or b is None:
        return False
    return (b // 100 * 12 + b % 100) - (a // 100 * 12 + a % 100) > 1


def verify(
    directory: Path,
    public_key: Ed25519PublicKey | bytes | Path,
    *,
    known: Iterable[Mapping[str, Any]] = (),
    witnessed: Witnessed | None = None,
) -> VerifyReport:
    """Verify the chain, the checkpoints and their signatures, and the Merkle tree of the trail in
    `directory`; with `witnessed`, also that the trail holds exactly what the witness saw (and no more).

    `known`: checkpoints kept outside the directory (as written, with `sig`); each must still be there.
    """
    key = load_public_key(public_key)
    problems: list[Problem] = []
    if not directory.is_dir():
        problems.append(Problem(CHECKPOINTS_MISSING, str(directory), 0, None, "no trail directory"))
        return VerifyReport(ok=False, problems=problems)
    segments = list_segments(directory)
    scan = _CheckpointScan(directory / CHECKPOINTS, key, problems)
    for cp in known:
        if str(cp.get("sig", "")) not in scan.sigs:
            problems.append(
                Problem(
                    CHECKPOINT_DELETED,
                    CHECKPOINTS,
                    0,
                    int(cp.get("seq", -1)),
                    f"a checkpoint kept elsewhere ({cp.get('kind')}, {cp.get('time')}) is not in the file",
                )
            )
    target = witnessed_checkpoint(witnessed, key, problems) if witnessed is not None else None
    chain = _Chain(scan, segments, problems, directory, target[0].size if target else None)
    if target is not None and target[0].size == 0:
        chain.witnessed_root = EMPTY_ROOT
    chain.run(_records(directory, segments, problems))
    chain.finish()
    if target is not None:
        walked = Walked(
            held=chain.last_seq if chain.entries else 0,
            last=(chain.last.segment, chain.last.line) if chain.last else None,
            root=chain.witnessed_root,
            clean=len(problems) == chain.clean_problems,
            origin=scan.origin,
            noted_size=scan.noted_size,
        )
        check_witnessed(directory, *target, walked, problems)
    order = {name: i for i, name in enumerate([*segments, CHECKPOINTS])}
    problems.sort(key=lambda p: (order.get(p.segment, -1), p.line))
    return VerifyReport(
        ok=not problems,
        problems=problems,
        entries=chain.entries,
        segments=segments,
        first_seq=chain.first_seq,
        last_seq=chain.last_seq if chain.entries else None,
        head=chain.last.hash if chain.last else "",
        checkpoints=scan.count,
        last_checkpoint=scan.last,
        erased_through=scan.erasures.through,
        unanchored=max(0, chain.last_seq - max(chain.anchored_seq, scan.erasures.through))
        if chain.entries
        else 0,
        origin=scan.origin,
        tree_size=chain.tree_size if chain.tree is not None else 0,
        witnessed_size=target[0].size if target else None,
        first_unwitnessed_time=chain.first_unwitnessed_time,
    )


__all__ = [
    "CHAIN_BREAK",
    "CHECKPOINTS_MISSING",
    "CHECKPOINT_DELETED",
    "CHECKPOINT_MISMATCH",
    "CHECKPOINT_SIGNATURE",
    "DELETED",
    "EDITED",
    "INSERTED",
    "MERKLE_MISMATCH",
    "MISSING_SEGMENT",
    "REORDERED",
    "TORN_LINE",
    "TRUNCATED",
    "UNPARSEABLE",
    "UNWITNESSED",
    "WITNESS_CHECKPOINT_DELETED",
    "WITNESS_INVALID",
    "WITNESS_MISMATCH",
    "WITNESS_TRUNCATED",
    "Problem",
    "VerifyReport",
    "Witnessed",
    "verify",
]
