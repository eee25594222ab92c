"""The Merkle tree of a trail (RFC 9162 §2.1): hashing, the compact range, proofs and their verification.

Leaf i (from 0) is the entry of seq i + 1: leaf hash = SHA-256(0x00 || line without its `\\n`), interior
node = SHA-256(0x01 || left || right), the root of the empty tree = SHA-256(""). The prover needs only a
function giving MTH(D[lo:hi]) of aligned ranges (`Subtree`); the verifiers need only the proof, the
sizes and the hashes — no trail.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

_sha256 = hashlib.sha256
HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

Subtree = Callable[[int, int], bytes]  # MTH(D[lo:hi]) for 0 <= lo < hi <= size


class ProofError(ValueError):
    """A proof that does not verify, or that cannot be asked for (sizes out of range)."""


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class CompactRange:
    """The roots of the perfect subtrees of a tree of `size` leaves, largest first: O(log n) memory.

    `append` costs one leaf hash and, amortised, one node hash; `on_node(level, index, hash)` is told of
    every perfect subtree completed at a level of `levels` (for the files that serve proofs).
    """

    __slots__ = ("_levels", "_on_node", "nodes", "size")

    def __init__(
        self,
        size: int = 0,
        nodes: Sequence[bytes] = (),
        *,
        levels: frozenset[int] = frozenset(),
        on_node: Callable[[int, int, bytes], None] | None = None,
    ) -> None:
        if len(nodes) != size.bit_count():
            raise ValueError("a compact range holds one hash per set bit of its size")
        self.size = size
        self.nodes = list(nodes)
        self._levels = levels
        self._on_node = on_node

    @classmethod
    def of(cls, size: int, subtree: Subtree, **kwargs: object) -> CompactRange:
        """The compact range of the first `size` leaves of a tree, from its subtree hashes."""
        nodes, lo = [], 0
        for bit in reversed(range(size.bit_length())):
            if size >> bit & 1:
                nodes.append(subtree(lo, lo + (1 << bit)))
                lo += 1 << bit
        return cls(size, nodes, **kwargs)  # type: ignore[arg-type]

    def append(self, leaf: bytes) -> None:
        n = self.size
        nodes = self.nodes
        if n & 1:  # half the appends: merge with the equal-sized subtrees to the left (inlined: hot path)
            level = 0
            while n & 1:
                leaf = _sha256(b"\x01" + nodes.pop() + leaf).digest()
                level += 1
                n >>= 1
                if level in self._levels and self._on_node is not None:
                    self._on_node(level, self.size >> level, leaf)
        nodes.append(leaf)
        self.size += 1

    def root(self) -> bytes:
        if not self.nodes:
            return EMPTY_ROOT
        r = self.nodes[-1]
        for h in reversed(self.nodes[:-1]):
            r = node_hash(h, r)
        return r


def mth(subtree: Subtree, lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi]) of any range, split as RFC 9162 splits it (into aligned perfect subtrees)."""
    if hi - lo == 0:
        return EMPTY_ROOT
    n = hi - lo
    if n & (n - 1) == 0 and lo % n == 0:
        return subtree(lo, hi)
    k = split(n)
    return node_hash(mth(subtree, lo, lo + k), mth(subtree, lo + k, hi))


def inclusion_proof(subtree: Subtree, index: int, size: int) -> list[bytes]:
    """PATH(index, D[size]) of RFC 9162 §2.1.3.1."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of {size} leaves")
    proof: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = split(hi - lo)
        if index < lo + k:
            proof.append(mth(subtree, lo + k, hi))
            hi = lo + k
        else:
            proof.append(mth(subtree, lo, lo + k))
            lo += k
    proof.reverse()
    return proof


def consistency_proof(subtree: Subtree, first: int, second: int) -> list[bytes]:
    """PROOF(first, D[second]) of RFC 9162 §2.1.4.1 (empty when first is 0 or equal to second)."""
    if not 0 <= first <= second:
        raise ProofError(f"no consistency proof from {first} to {second} leaves")
    if first == 0 or first == second:
        return []
    proof: list[bytes] = []
    lo, hi, m, whole = 0, second, first, True
    while m != hi - lo:
        k = split(hi - lo)
        if m <= k:
            proof.append(mth(subtree, lo + k, hi))
            hi = lo + k
        else:
            proof.append(mth(subtree, lo, lo + k))
            lo += k
            m -= k
            whole = False
    if not whole:
        proof.append(mth(subtree, lo, hi))
    proof.reverse()
    return proof


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root an inclusion proof leads to (RFC 9162 §2.1.3.2); ProofError when it is malformed."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of {size} leaves")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if len(p) != HASH_SIZE or sn == 0:
            raise ProofError("inclusion proof too long or with a hash of the wrong size")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof too short")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """ProofError unless `proof` shows leaf `index` with hash `leaf` in the tree of `size` with `root`."""
    if root_from_inclusion(index, size, leaf, proof) != root:
        raise ProofError(f"inclusion proof of leaf {index} does not lead to the root of size {size}")


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """ProofError unless the tree of `second` leaves extends the tree of `first` (RFC 9162 §2.1.4.2)."""
    if not 0 <= first <= second:
        raise ProofError(f"a tree of {second} leaves cannot extend one of {first} (rolled back)")
    if first == 0:
        if proof:
            raise ProofError("a consistency proof from the empty tree must be empty")
        return
    if first == second:
        if proof:
            raise ProofError("a consistency proof between equal sizes must be empty")
        if first_root != second_root:
            raise ProofError(f"two different roots for the same size {first}")
        return
    if not proof or any(len(p) != HASH_SIZE for p in proof):
        raise ProofError("consistency proof empty or with a hash of the wrong size")
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0 or fr != first_root or sr != second_root:
        raise ProofError(f"the tree of {second} leaves is not consistent with the one of {first}")


def proof_hashes(size: int) -> int:
    """The most hashes an inclusion or consistency proof in a tree of `size` leaves can hold."""
    return (size - 1).bit_length() if size > 1 else 0
