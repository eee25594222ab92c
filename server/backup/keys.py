"""Backup keys: 32 random bytes in a file of their own (0600), outside every data directory (SPEC §4.3).

One key per server (`server_key_file`: var/keys/<server>.backup.key), so that whoever holds one server's
archives and key learns nothing of another's. Archives made before there was one key per server were sealed
with the shared `var/keys/backup.key` (the settings' `backup_key_file`): it is never used to seal again, and
`juki backup verify|restore` still opens such archives with it.

Whoever makes or keeps the archives (the monitoring contractor) holds no key; whoever restores needs it. The
archive names its key only by a key id — the first bytes of SHA-256 of the key — so a wrong key is told
apart from a corrupted archive without the key ever leaving this file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

KEY_BYTES = 32  # AES-256
KEY_ID_BYTES = 8


SERVERS = ("prefecture", "fuhyo", "national")


def server_key_file(shared_key_file: Path, server: str) -> Path:
    """The backup key file of `server` (one of SERVERS): <server>.backup.key, in the directory of the
    shared key file of older archives."""
    if server not in SERVERS:
        raise ValueError(f"a server is one of {', '.join(SERVERS)}")
    return shared_key_file.with_name(f"{server}.backup.key")


def key_id(key: bytes) -> bytes:
    """The key id written in clear in every archive header: SHA-256 of the key, first 8 bytes."""
    return hashlib.sha256(key).digest()[:KEY_ID_BYTES]


@dataclass(frozen=True, repr=False)
class BackupKey:
    """The key that seals backup archives (バックアップ暗号鍵)."""

    secret: bytes

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_BYTES:
            raise ValueError(f"a backup key is {KEY_BYTES} bytes, not {len(self.secret)}")

    def __repr__(self) -> str:  # never print the key itself
        return f"BackupKey(id={self.id})"

    @property
    def id(self) -> str:
        return key_id(self.secret).hex()

    @classmethod
    def generate(cls) -> BackupKey:
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def load(cls, path: Path) -> BackupKey:
        raw = path.read_bytes()
        if len(raw) != KEY_BYTES:
            raise ValueError(f"backup key file {path} holds {len(raw)} bytes, not {KEY_BYTES}")
        if path.stat().st_mode & 0o077:
            log.warning("backup key file is readable by others", extra={"path": str(path)})
        return cls(raw)

    def save(self, path: Path) -> None:
        """Write the key to a new file (0600); refuses to overwrite one (O_EXCL)."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, self.secret)
            os.fsync(fd)
        finally:
            os.close(fd)

    @classmethod
    def load_or_create(cls, path: Path) -> BackupKey:
        """The key in `path`, made there first when there is none."""
        if path.exists():
            return cls.load(path)
        key = cls.generate()
        try:
            key.save(path)
        except FileExistsError:  # another process made it between our look and our write
            return cls.load(path)
        return key
