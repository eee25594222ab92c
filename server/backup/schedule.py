"""The daily backup inside the server: an archive every `every` seconds, the newest `keep` kept.

Each archive is made by a child process (`python -m server.backup`), awaited without blocking the event
loop: py-lmdb opens an environment only once per process and the server holds its own open, while a second
process may read beside the writer. The snapshot's reading and sealing thus take none of the server's CPU
or GIL either. A failed run is logged and tried again at the next interval; it never stops the server.
After a restart the schedule keeps its rhythm: the next archive is due `every` seconds after the newest one
already in the directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import server
from server.backup.archive import BackupError, Manifest

log = logging.getLogger(__name__)

_TIMESTAMP = "%Y%m%dT%H%M%SZ"
_ARCHIVE = re.compile(r"backup-(\d{8}T\d{6}Z)\.jkb")
_PARTIAL = re.compile(r"\.backup-\d{8}T\d{6}Z\.jkb\.[0-9a-f]+\.partial")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def archive_name(moment: datetime) -> str:
    """`backup-<UTC timestamp>.jkb`, e.g. backup-20250401T021500Z.jkb; names sort by time."""
    return f"backup-{moment.astimezone(UTC).strftime(_TIMESTAMP)}.jkb"


def scheduled_archives(out_dir: Path) -> list[Path]:
    """The schedule's archives in `out_dir`, oldest first (other files are not ours and are left alone)."""
    if not out_dir.is_dir():
        return []
    return sorted(p for p in out_dir.iterdir() if _ARCHIVE.fullmatch(p.name))


def prune_archives(out_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` scheduled archives; the ones deleted."""
    archives = scheduled_archives(out_dir)
    doomed = archives[: max(0, len(archives) - keep)]
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed


def _remove_partials(out_dir: Path) -> None:
    """Archives a killed server left half-written (create_backup removes its own on any error)."""
    if out_dir.is_dir():
        for path in out_dir.iterdir():
            if _PARTIAL.fullmatch(path.name):
                path.unlink(missing_ok=True)


def _first_delay(out_dir: Path, every: float, now: datetime) -> float:
    archives = scheduled_archives(out_dir)
    if not archives:
        return 0.0
    match = _ARCHIVE.fullmatch(archives[-1].name)
    assert match is not None
    newest = datetime.strptime(match.group(1), _TIMESTAMP).replace(tzinfo=UTC)
    due = newest + timedelta(seconds=every)
    return max(0.0, min(every, (due - now).total_seconds()))


async def create_backup_in_child(sources: Mapping[str, Path], out: Path, key: bytes) -> Manifest:
    """`create_backup` in a child process (see the module docstring); cancelled, the child is stopped and
    leaves no partial archive."""
    root = str(Path(server.__file__).resolve().parent.parent)  # where `server` is importable from
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    args = [f"{name}={directory.absolute()}" for name, directory in sources.items()]
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server.backup",
        "create",
        str(out.absolute()),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": path},
    )
    try:
        stdout, stderr = await child.communicate(key)
    except BaseException:
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.terminate()  # it removes its partial archive on SIGTERM
            await asyncio.shield(child.wait())
        raise
    if child.returncode != 0:
        lines = stderr.decode(errors="replace").strip().splitlines()
        raise BackupError(lines[-1] if lines else f"backup process exited with {child.returncode}")
    return Manifest.from_json(stdout)


async def _run_once(sources: Mapping[str, Path], target: Path, key: bytes, keep: int) -> None:
    manifest = await create_backup_in_child(sources, target, key)
    removed = await asyncio.to_thread(prune_archives, target.parent, keep)
    log.info(
        "backup written",
        extra={"archive": target.name, "bytes": manifest.total_size, "pruned": len(removed)},
    )


async def backup_schedule(
    sources: Mapping[str, Path],
    out_dir: Path,
    key: bytes,
    *,
    every: float,
    keep: int,
    stop: asyncio.Event,
    now: Callable[[], datetime] = _utc_now,
) -> None:
    """Until `stop` is set: every `every` seconds an archive `out_dir/backup-<UTC timestamp>.jkb` of
    `sources`, then all but the newest `keep` archives removed. A run under way when `stop` is set is
    finished first; cancelling the task instead stops it (an archive is whole or absent, never partial)."""
    if every <= 0:
        raise ValueError("every must be positive")
    if keep < 1:
        raise ValueError("keep must be at least 1")
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    await asyncio.to_thread(_remove_partials, out_dir)
    loop = asyncio.get_running_loop()
    delay = _first_delay(out_dir, every, now())
    while not await _stopped(stop, delay):
        started = loop.time()
        target = out_dir / archive_name(now())
        if target.exists():
            log.warning("backup skipped: an archive of this second exists", extra={"archive": target.name})
        else:
            try:
                await _run_once(sources, target, key, keep)
            except Exception:
                log.exception("backup failed", extra={"archive": target.name})
        delay = max(0.0, every - (loop.time() - started))


async def _stopped(stop: asyncio.Event, delay: float) -> bool:
    """Wait `delay` seconds; True as soon as `stop` is set."""
    if stop.is_set():
        return True
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=delay)
    return stop.is_set()
