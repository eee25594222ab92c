"""`python -m server.backup create OUT NAME=DIR…`, the key (32 bytes) on stdin, the manifest (JSON) on stdout.

What `backup_schedule` runs for each archive: py-lmdb opens an environment once per process and the server
already holds its own open, so the snapshot is taken by a child process of its own (LMDB lets a reader
process copy beside the writer). The key goes through a pipe, never through the command line.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType

from server.backup.archive import BackupError, create_backup
from server.hardening import disable_core_dumps

USAGE = "usage: python -m server.backup create OUT NAME=DIR [NAME=DIR …]  (key on stdin)"


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds: the half-written archive is removed


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] != "create" or not all("=" in a for a in argv[2:]):
        print(USAGE, file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    disable_core_dumps()  # it holds the key and the plaintext snapshot, chunk by chunk
    sources = {name: Path(directory) for name, _, directory in (a.partition("=") for a in argv[2:])}
    key = sys.stdin.buffer.read()
    try:
        manifest = create_backup(sources, Path(argv[1]), key)
    except BackupError as exc:
        print(exc, file=sys.stderr)
        return 1
    sys.stdout.buffer.write(manifest.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
