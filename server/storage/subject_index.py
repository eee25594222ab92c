"""The subject index's file (`subjects.lmdb` in an audit trail's directory): keyed subject hash -> the seqs
of the entries concerning that subject, and `through`, the last seq indexed. What goes in it, and rebuilding
it from the trail, is the audit layer's (`server.audit.subjects`); this module only holds the LMDB part.

It holds keyed subject hashes and seqs only. Lookups read the seqs for one subject (a B-tree lookup).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import lmdb

INDEX_DIR = "subjects.lmdb"
_MAP_SIZE = 1 << 36  # address space only; the file grows with what is written
_THROUGH = b"through"
_ENVS: dict[str, Any] = {}  # one environment per path and process (LMDB allows no second opening)
_ENVS_LOCK = threading.Lock()


def _env(directory: Path, *, create: bool) -> Any | None:
    path = directory / INDEX_DIR
    key = os.path.realpath(path)
    with _ENVS_LOCK:
        env = _ENVS.get(key)
        if env is None:
            if not create and not path.exists():
                return None
            path.mkdir(mode=0o700, exist_ok=True)
            # no fsync per commit: a crash may lose the last commits, never consistency (`through` is in
            # the same commit as its seqs), and the trail rebuilds what is lost at its next open
            env = lmdb.open(str(path), map_size=_MAP_SIZE, max_dbs=2, subdir=True, lock=True, sync=False)
            _ENVS[key] = env
        return env


def _dbs(env: Any) -> tuple[Any, Any]:
    return (
        env.open_db(b"subjects", dupsort=True, dupfixed=True, create=True),
        env.open_db(b"meta", create=True),
    )


class SubjectIndexFile:
    """The writer's side (the trail's flush)."""

    def __init__(self, directory: Path) -> None:
        env = _env(directory, create=True)
        assert env is not None
        self._env = env
        self._subjects, self._meta = _dbs(self._env)

    @property
    def through(self) -> int:
        with self._env.begin() as txn:
            raw = txn.get(_THROUGH, db=self._meta)
        return int.from_bytes(raw, "big") if raw else 0

    def add(self, items: Sequence[tuple[int, Iterable[str]]], through: int) -> None:
        """Index (seq, subject hashes) pairs and record that every seq up to `through` is indexed. The pairs
        go in in key order, in one cursor call (about half the cost of one put each in arrival order)."""
        pairs = sorted((key, seq.to_bytes(8, "big")) for seq, subjects in items for key in _keys(subjects))
        with self._env.begin(write=True) as txn:
            if pairs:
                with txn.cursor(db=self._subjects) as cursor:
                    cursor.putmulti(pairs, dupdata=True)
            txn.put(_THROUGH, through.to_bytes(8, "big"), db=self._meta)


def _keys(subjects: Iterable[str]) -> list[bytes]:
    """Subject hashes as the trail writes them (hex) as keys; anything else cannot be a resident's key."""
    out = []
    for s in subjects:
        try:
            out.append(bytes.fromhex(s))
        except ValueError:
            continue
    return out


def seqs_of(directory: Path, subject: str) -> list[int] | None:
    """The seqs indexed for one subject, ascending; None when the trail has no index (yet)."""
    env = _env(directory, create=False)
    if env is None:
        return None
    subjects, _ = _dbs(env)
    with env.begin() as txn:
        cursor = txn.cursor(db=subjects)
        if not cursor.set_key(bytes.fromhex(subject)):
            return []
        return [int.from_bytes(v, "big") for v in cursor.iternext_dup()]
