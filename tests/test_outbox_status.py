"""Issue 14: `juki outbox status` reads the store and never writes it (it runs beside a serving server)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Server, make_server


@pytest.fixture
def immutable_store(tmp_path: Path, pki_dir: Path) -> Iterator[Server]:
    """A seeded store whose data.mdb no process may open for writing, root included (chattr +i)."""
    srv = make_server(tmp_path / "srv", pki_dir, seeded=50, with_national=False)
    data = srv.settings.data_path / "data.mdb"
    if shutil.which("chattr") is None:
        pytest.skip("chattr (e2fsprogs) is not installed")
    if subprocess.run(["chattr", "+i", str(data)], capture_output=True).returncode != 0:
        pytest.skip("this filesystem does not support the immutable attribute")
    try:
        yield srv
    finally:
        subprocess.run(["chattr", "-i", str(data)], check=True)


def test_outbox_status_opens_the_store_read_only(immutable_store: Server) -> None:
    data = immutable_store.settings.data_path / "data.mdb"
    before = data.stat().st_mtime_ns
    result = subprocess.run(
        [sys.executable, "-m", "clients", "--config", str(immutable_store.config), "outbox", "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "outbox depth          0" in result.stdout
    assert "Traceback" not in result.stderr
    assert data.stat().st_mtime_ns == before


def test_outbox_status_without_a_store_says_so_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "clients", "--home", str(tmp_path), "outbox", "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "no prefectural store" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "var" / "data").exists(), "nothing is created"
