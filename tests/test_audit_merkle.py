"""The trail's Merkle tree (SPEC §4.4, RFC 9162 §2.1), tested in the style of Trillian's merkle tests.

The tree under test is the real one: a real trail in tmp_path, its tree files read back by `TreeReader`.
The reference is a plain recursive MTH over the entry lines, written here from RFC 9162 and sharing no
code with `server.audit.merkle` but the two hash functions' definitions (re-stated below).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest

from server.audit import JST, AuditEvent, AuditKeys, AuditTrail
from server.audit.entries import list_segments
from server.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    ProofError,
    consistency_proof,
    inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from server.audit.tree import TreeReader, level_file

BATCH = 64  # leaves per flush in these tests: "every size up to twice a batch"


def ref_leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def ref_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def ref_root(leaves: list[bytes]) -> bytes:
    """MTH of RFC 9162 §2.1.1, as written there."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return ref_node(ref_root(leaves[:k]), ref_root(leaves[k:]))


# RFC 6962 / Certificate Transparency test vectors (the inputs and roots of CT's and Trillian's tests).
CT_INPUTS = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    bytes(range(0x50, 0x58)),
    bytes(range(0x60, 0x70)),
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = {  # (leaf, size): path
    (0, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
}
CT_CONSISTENCY = {  # (first, second): proof
    (1, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (6, 8): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (2, 5): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
}


def ct_subtree(lo: int, hi: int) -> bytes:
    return ref_root([ref_leaf(x) for x in CT_INPUTS[lo:hi]])


def test_rfc_6962_vectors() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    compact = CompactRange()
    for size, (data, root) in enumerate(zip(CT_INPUTS, CT_ROOTS, strict=True), start=1):
        compact.append(ref_leaf(data))
        assert compact.root().hex() == root, size
    for (index, size), path in CT_INCLUSION.items():
        assert [h.hex() for h in inclusion_proof(ct_subtree, index, size)] == path
        verify_inclusion(
            index,
            size,
            ref_leaf(CT_INPUTS[index]),
            [bytes.fromhex(h) for h in path],
            bytes.fromhex(CT_ROOTS[7]),
        )
    for (first, second), proof in CT_CONSISTENCY.items():
        assert [h.hex() for h in consistency_proof(ct_subtree, first, second)] == proof
        verify_consistency(
            first,
            second,
            bytes.fromhex(CT_ROOTS[first - 1]),
            bytes.fromhex(CT_ROOTS[second - 1]),
            [bytes.fromhex(h) for h in proof],
        )


# ---- the real tree: a trail's files ------------------------------------------------------------------


def event(i: int) -> AuditEvent:
    return AuditEvent(
        caller="spiffe://juki.mie/agency/police",
        role="agency",
        method="/juki.v1.Prefecture/Provide",
        purpose="bt6-police-driving-licence",
        outcome="OK" if i % 3 else "PERMISSION_DENIED",
        subjects=(f"{i:032x}",),
        request_id=f"req-{i}",
    )


def entry_lines(directory: Path) -> list[bytes]:
    out: list[bytes] = []
    for name in list_segments(directory):
        out += [line[:-1] for line in (directory / name).read_bytes().splitlines(keepends=True)]
    return out


def write(directory: Path, keys: AuditKeys, count: int, *, batch: int = BATCH) -> None:
    clock = [dt.datetime(2025, 4, 1, 9, 0, tzinfo=JST)]

    def now() -> dt.datetime:
        return clock[0]

    with AuditTrail.open(directory, keys, now=now) as trail:
        for i in range(count):
            trail.append(event(i))
            clock[0] += dt.timedelta(seconds=1)
            if (i + 1) % batch == 0:
                trail.flush()


@pytest.fixture(scope="module")
def keys() -> AuditKeys:
    return AuditKeys.generate()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory, keys: AuditKeys) -> tuple[TreeReader, list[bytes]]:
    directory = tmp_path_factory.mktemp("small") / "audit"
    write(directory, keys, 2 * BATCH + 2)
    return TreeReader(directory), [ref_leaf(line) for line in entry_lines(directory)]


def test_leaves_are_the_entry_lines_and_every_root_matches_the_reference(
    small: tuple[TreeReader, list[bytes]],
) -> None:
    reader, leaves = small
    assert reader.size == len(leaves) == 2 * BATCH + 2
    assert list(reader.leaves()) == leaves
    compact = CompactRange()
    for size in range(0, len(leaves) + 1):
        assert reader.root(size) == ref_root(leaves[:size]) == compact.root(), size
        if size < len(leaves):
            compact.append(leaves[size])


def test_inclusion_of_every_index_at_every_size(small: tuple[TreeReader, list[bytes]]) -> None:
    reader, leaves = small
    for size in range(1, len(leaves) + 1):
        root = ref_root(leaves[:size])
        for index in range(size):
            proof = inclusion_proof(reader.subtree, index, size)
            verify_inclusion(index, size, leaves[index], proof, root)
            with pytest.raises(ProofError):  # another leaf does not verify, nor the leaf at another index
                verify_inclusion(index, size, leaves[(index + 1) % len(leaves)], proof, root)
            if size > 1:
                with pytest.raises(ProofError):
                    verify_inclusion(
                        index ^ 1 if index ^ 1 < size else index - 1, size, leaves[index], proof, root
                    )


def test_consistency_of_every_pair_of_sizes(small: tuple[TreeReader, list[bytes]]) -> None:
    reader, leaves = small
    roots = [ref_root(leaves[:size]) for size in range(len(leaves) + 1)]
    for second in range(0, len(leaves) + 1):
        for first in range(0, second + 1):
            proof = consistency_proof(reader.subtree, first, second)
            verify_consistency(first, second, roots[first], roots[second], proof)
            if 0 < first < second:
                with pytest.raises(ProofError):  # a different older tree is not consistent
                    verify_consistency(first, second, roots[first - 1], roots[second], proof)
                with pytest.raises(ProofError):  # nor a different newer one
                    verify_consistency(first, second, roots[first], roots[second - 1], proof)
                with pytest.raises(ProofError):  # a truncated proof fails
                    verify_consistency(first, second, roots[first], roots[second], proof[:-1])
            if first < second:
                with pytest.raises(ProofError):  # the way back: a rollback
                    verify_consistency(second, first, roots[second], roots[first], proof)


def test_proofs_across_the_stored_levels(tmp_path: Path, keys: AuditKeys) -> None:
    """Past 256 leaves subtrees come from merkle-08.bin: proofs and roots still match the reference."""
    directory = tmp_path / "audit"
    write(directory, keys, 700, batch=97)
    assert level_file(directory, 8).stat().st_size == 2 * 32
    leaves = [ref_leaf(line) for line in entry_lines(directory)]
    with TreeReader(directory) as reader:
        for size in (255, 256, 257, 511, 512, 513, 700):
            root = ref_root(leaves[:size])
            assert reader.root(size) == root
            for index in (0, 1, 127, 255, 256, 300, 511, 512, size - 1):
                if index < size:
                    verify_inclusion(
                        index, size, leaves[index], inclusion_proof(reader.subtree, index, size), root
                    )
            for first in (1, 200, 256, 257, 512):
                if first <= size:
                    proof = consistency_proof(reader.subtree, first, size)
                    verify_consistency(first, size, ref_root(leaves[:first]), root, proof)


def test_reopened_and_crashed_trails_keep_one_tree(tmp_path: Path, keys: AuditKeys) -> None:
    """Reopening continues the compact range; a leaf file torn or cut by a crash is completed from the
    entries, and a trail written before the tree existed is given its tree at open (once)."""
    directory = tmp_path / "audit"
    write(directory, keys, 300)
    write(directory, keys, 10)  # reopened: the compact range comes back from the files
    leaves = [ref_leaf(line) for line in entry_lines(directory)]
    with TreeReader(directory) as reader:
        assert reader.size == 310 and reader.root(310) == ref_root(leaves)
    with level_file(directory, 0).open("r+b") as f:
        f.truncate(290 * 32 + 7)  # a crash lost the last flush's hashes and tore one
    level_file(directory, 8).unlink()
    write(directory, keys, 1)
    leaves = [ref_leaf(line) for line in entry_lines(directory)]
    with TreeReader(directory) as reader:
        assert reader.size == 311 and reader.root(311) == ref_root(leaves)
        assert level_file(directory, 8).stat().st_size == 32
    for level in (0, 8, 16, 24):  # an older trail: entries, no tree
        level_file(directory, level).unlink()
    write(directory, keys, 2)
    leaves = [ref_leaf(line) for line in entry_lines(directory)]
    with TreeReader(directory) as reader:
        assert reader.size == 313 and reader.root(313) == ref_root(leaves)


def test_an_entry_is_found_by_seq_in_any_segment(tmp_path: Path, keys: AuditKeys) -> None:
    """proofs.find_entry binary-searches a segment's offsets: every seq of a two-month trail is found, and
    a seq the trail does not hold is not."""
    from server.audit.proofs import NoProof, find_entry

    directory = tmp_path / "audit"
    clock = [dt.datetime(2025, 4, 30, 23, 0, tzinfo=JST)]
    with AuditTrail.open(directory, keys, now=lambda: clock[0]) as trail:
        for i in range(400):
            trail.append(event(i))
            clock[0] += dt.timedelta(seconds=20)  # the month changes after 180 entries
    assert len(list_segments(directory)) == 2
    lines = entry_lines(directory)
    for seq in range(1, 401):
        assert find_entry(directory, seq) == lines[seq - 1]
    with pytest.raises(NoProof):
        find_entry(directory, 401)
