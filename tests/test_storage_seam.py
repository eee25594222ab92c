"""Issue 16: services, domain rules, audit, backup and the CLI reach LMDB only through server/storage/ —
no raw transaction, raw put or LMDB import anywhere else (the storage seam holds by construction)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
FORBIDDEN = {
    "an lmdb import": re.compile(r"^\s*(import lmdb|from lmdb\b)", re.M),
    "a raw write transaction": re.compile(r"\benv\.write\("),
    "a store bound to a raw transaction": re.compile(r"\.bind\("),
    "a raw put": re.compile(r"\bput_raw\b"),
}


def _sources() -> list[Path]:
    files = [*ROOT.joinpath("server").rglob("*.py"), *ROOT.joinpath("clients").rglob("*.py")]
    return sorted(p for p in files if "storage" not in p.relative_to(ROOT).parts[:2])


@pytest.mark.parametrize("what", sorted(FORBIDDEN))
def test_nothing_outside_storage_reaches_lmdb_directly(what: str) -> None:
    pattern = FORBIDDEN[what]
    found = [
        f"{path.relative_to(ROOT)}:{text[: m.start()].count(chr(10)) + 1}"
        for path in _sources()
        for text in [path.read_text(encoding="utf-8")]
        for m in pattern.finditer(text)
    ]
    assert not found, f"{what} outside server/storage/: {found}"


def test_the_check_sees_the_storage_package_itself() -> None:
    """The pattern would find what it looks for (the storage layer does import lmdb)."""
    storage = ROOT / "server" / "storage" / "lmdbenv.py"
    assert FORBIDDEN["an lmdb import"].search(storage.read_text(encoding="utf-8"))
