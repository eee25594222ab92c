"""What a server process does to itself before it holds any data (SPEC §4.3, §6.4).

- No core dumps: `RLIMIT_CORE` 0 (soft and hard, so no child can raise it) and, on Linux, not dumpable
  (`prctl(PR_SET_DUMPABLE, 0)`: no core even for a set-id change, no ptrace by other processes of the
  user). A core of the 附票 server would hold My Numbers already acknowledged or expired.
- Private files: umask 077, so that every file the process creates is at most 0600 and every directory
  0700 whatever the umask it was started with; and the directories the settings name (data, keys, audit,
  backups, logs, the temporary area), what is in them and their parents up to the home, made so now, for
  files made by an earlier version or another tool.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import resource
import stat
import sys
from collections.abc import Iterable
from pathlib import Path

from server.settings import Settings

log = logging.getLogger(__name__)

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3
PRIVATE_UMASK = 0o077
FILE_MODE = 0o600
DIR_MODE = 0o700
LOG_DIR = Path("var/log")


def disable_core_dumps() -> None:
    """Core size limit 0 (soft and hard) and, on Linux, the process not dumpable."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"prctl(PR_SET_DUMPABLE, 0): {os.strerror(errno)}")


def dumpable() -> bool | None:
    """Whether this process may dump core (Linux: prctl(PR_GET_DUMPABLE)); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    return bool(ctypes.CDLL(None, use_errno=True).prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))


def log_path(settings: Settings, server: str) -> Path:
    """Where a server's stdout and stderr go when `juki run` starts it: var/log/<server>.log."""
    return settings.path(LOG_DIR / f"{server}.log")


def private_directories(settings: Settings) -> list[Path]:
    """The directories the settings name for data, keys, audit trails, backups, logs, the temporary area."""
    s = settings
    directories = [
        s.data_path,
        s.path(s.national_data_dir),
        s.path(s.national_fuhyo_data_dir),
        s.path(s.fuhyo_data_dir),
        s.path(s.tempstore_dir),
        s.path(s.audit_dir),
        s.path(s.national_audit_dir),
        s.path(s.fuhyo_audit_dir),
        s.path(s.backup_dir),
        s.path(LOG_DIR),
        s.keys_path.parent,
        s.path(s.national_keys_file).parent,
        s.path(s.fuhyo_keys_file).parent,
        s.path(s.backup_key_file).parent,
    ]
    return list(dict.fromkeys(directories))


def restrict(paths: Iterable[Path], home: Path) -> int:
    """Each directory (made if missing), every file (0600) and directory (0700) below it, and its parents
    up to `home` (excluded) made private; how many modes were changed."""
    home = home.absolute()
    changed = 0
    for directory in paths:
        directory = directory.absolute()
        directory.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        parents = [p for p in directory.parents if p != home and p.is_relative_to(home)]
        for parent in parents:
            changed += _chmod(parent, DIR_MODE)
        changed += _chmod(directory, DIR_MODE)
        for root, dirs, files in os.walk(directory):
            for name in dirs:
                changed += _chmod(Path(root, name), DIR_MODE)
            for name in files:
                changed += _chmod(Path(root, name), FILE_MODE)
    return changed


def _chmod(path: Path, mode: int) -> int:
    """1 when the mode was changed; a file gone meanwhile or another user's is left (the latter logged)."""
    with contextlib.suppress(FileNotFoundError):
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode) or stat.S_IMODE(st.st_mode) == mode:
            return 0
        try:
            os.chmod(path, mode)
        except PermissionError:
            log.warning("cannot make a file private (not ours)", extra={"path": str(path)})
            return 0
        return 1
    return 0


def harden_process(settings: Settings) -> None:
    """At a server's start: no core dumps, umask 077, the settings' directories private."""
    disable_core_dumps()
    os.umask(PRIVATE_UMASK)
    changed = restrict(private_directories(settings), settings.home)
    if changed:
        log.info("file modes made private", extra={"paths": changed})
