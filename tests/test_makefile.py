"""The Makefile: Python >= 3.11 checked before any venv is made; `make clean` keeps the venv, `make distclean`
drops it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-s", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=60)


def old_python(tmp_path: Path) -> Path:
    """An interpreter that says it is Python 3.9 (and fails the version check as that one would)."""
    fake = tmp_path / "python3.9"
    fake.write_text('#!/bin/sh\n[ "$1" = "--version" ] && echo "Python 3.9.18" && exit 0\nexit 1\n')
    fake.chmod(0o755)
    return fake


def test_a_python_older_than_3_11_is_refused_saying_what_is_needed(tmp_path: Path) -> None:
    fake = old_python(tmp_path)
    done = make("python-check", f"PYTHON={fake}", f"VENV={tmp_path / 'venv'}")
    assert done.returncode != 0
    assert f"jukinet needs Python >= 3.11; '{fake}' is Python 3.9.18." in done.stdout
    assert "make PYTHON=python3.12 run" in done.stdout
    assert not (tmp_path / "venv").exists()  # no venv made with it


def test_a_venv_made_by_an_old_python_is_refused(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    shutil.copy(old_python(tmp_path), venv / "bin" / "python")
    done = make("python-check", f"VENV={venv}")
    assert done.returncode != 0 and "make distclean, then make run" in done.stdout


def test_clean_keeps_the_venv_and_distclean_drops_it() -> None:
    clean = make("-n", "clean").stdout
    assert "rm -rf var certs/dev" in clean and ".venv" not in clean
    assert "rm -rf .venv" in make("-n", "distclean").stdout
