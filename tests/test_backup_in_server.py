"""The server's own daily backup (here: every second) writes archives that verify with the backup key."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import make_server


def test_the_running_server_writes_verifiable_encrypted_backups(tmp_path: Path, pki_dir: Path) -> None:
    srv = make_server(
        tmp_path / "srv", pki_dir, seeded=300, with_national=False, backup_enabled=True, backup_interval=1.0,
        backup_keep=2,
    )  # fmt: skip
    srv.start()
    try:
        out = srv.settings.path(srv.settings.backup_dir) / "prefecture"
        deadline = time.monotonic() + 30
        while len(list(out.glob("*.jkb"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2.5)  # two or three more runs
        archives = sorted(out.glob("*.jkb"))
        assert len(archives) == 2  # rotation keeps the newest two
    finally:
        srv.stop_all()
    done = subprocess.run(
        [sys.executable, "-m", "clients", "--config", str(srv.config), "backup", "verify", str(archives[-1])],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
