"""Encrypted backup archives of LMDB environments (暗号化バックアップ, SPEC §4.3).

Whoever holds an archive but not the key learns nothing: every byte of every environment, and the manifest
describing them, is sealed with AES-256-GCM. In clear there is only the header below — no environment name,
no size per environment, nothing about a resident.

Layout (version 1), all integers big-endian:

  header    48 bytes   magic "JUKI-BKP", version u16, flags u16 (0), chunk size u32, manifest area u32,
                       backup id (16 random bytes), key id (SHA-256 of the key, first 8 bytes),
                       nonce prefix (4 random bytes)
  manifest  `manifest area` bytes: chunk 0, the manifest as JSON padded with spaces, sealed
  data      chunks 1…N: each environment's snapshot cut into `chunk size` pieces (its last one shorter),
            environment after environment, each piece sealed with its own tag (16 bytes)

Each backup seals with its own key, HKDF-SHA-256(backup key, salt = backup id). Chunk g is sealed with the
nonce `nonce prefix ‖ g` (u64) and the associated data `header ‖ g ‖ environment ordinal ‖ final flag`, the
final flag marking an environment's last chunk. So a chunk moved to another place, a chunk dropped, an
archive cut short or a header altered all fail authentication, and each is reported as what it is. The
manifest holds what is needed to check the rest: per environment its size, chunk count and the SHA-256 of
the plaintext snapshot.

A snapshot is taken while the server keeps writing: this process opens the environment read-only (LMDB
allows reader processes beside the writer) and LMDB's compacting copy writes one read transaction's
consistent view into a pipe, which is sealed chunk by chunk as it arrives — the plaintext never touches the
disk and never sits whole in memory.

The 附票 server's temporary area (一時保存領域, SPEC §5.3) is never backed up: a source directory named
`tempstore`, or holding a file named `TEMPSTORE` (see `mark_tempstore`), is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from server.backup.keys import KEY_BYTES, key_id
from server.storage.snapshot import Snapshot, SnapshotError
from server.storage.snapshot import read_exact as _read_exact

MAGIC = b"JUKI-BKP"
VERSION = 1
DEFAULT_CHUNK_SIZE = 1 << 20
MANIFEST_AREA = 16 << 10
TEMPSTORE_DIR = "tempstore"
TEMPSTORE_MARKER = "TEMPSTORE"

_HEADER = struct.Struct(">8sHHII16s8s4s")
HEADER_SIZE = _HEADER.size  # the archive's data chunks start at HEADER_SIZE + the manifest area
_CHUNK_AD = struct.Struct(">QIB")
_TAG = 16
_MANIFEST_SECTION = 0xFFFFFFFF
_MAX_CHUNK_SIZE = 64 << 20
_MAX_MANIFEST_AREA = 1 << 20
_REORDER_PROBES = 4096  # how many other chunk numbers to try when naming a misplaced chunk
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_FORMAT = "jukinet-backup"

Progress = Callable[[int], object]  # called with the plaintext bytes each chunk adds


class BackupError(Exception):
    """An archive cannot be made, or is not what it should be; the message says what is wrong."""


@dataclass(frozen=True)
class EnvironmentSnapshot:
    """One environment in an archive: its name and its plaintext snapshot's size, digest and chunks."""

    name: str
    size: int
    sha256: str
    chunks: int
    txn_id: int  # the LMDB transaction the snapshot shows: every change committed up to it, none after


@dataclass(frozen=True)
class Manifest:
    """What an archive holds (sealed inside it)."""

    backup_id: str
    key_id: str
    created_at: datetime
    source_host: str
    chunk_size: int
    environments: tuple[EnvironmentSnapshot, ...]

    @property
    def total_size(self) -> int:
        return sum(env.size for env in self.environments)

    @property
    def total_chunks(self) -> int:
        return sum(env.chunks for env in self.environments)

    def to_json(self) -> bytes:
        body = {
            "format": _FORMAT,
            "version": VERSION,
            "backup_id": self.backup_id,
            "key_id": self.key_id,
            "created_at": self.created_at.isoformat(),
            "source_host": self.source_host,
            "chunk_size": self.chunk_size,
            "environments": [
                {"name": e.name, "size": e.size, "sha256": e.sha256, "chunks": e.chunks, "txn_id": e.txn_id}
                for e in self.environments
            ],
        }
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        try:
            body = json.loads(raw)
            if body["format"] != _FORMAT or body["version"] != VERSION:
                raise ValueError("not a version 1 manifest")
            environments = tuple(
                EnvironmentSnapshot(
                    name=str(e["name"]),
                    size=int(e["size"]),
                    sha256=str(e["sha256"]),
                    chunks=int(e["chunks"]),
                    txn_id=int(e["txn_id"]),
                )
                for e in body["environments"]
            )
            return cls(
                backup_id=str(body["backup_id"]),
                key_id=str(body["key_id"]),
                created_at=datetime.fromisoformat(body["created_at"]),
                source_host=str(body["source_host"]),
                chunk_size=int(body["chunk_size"]),
                environments=environments,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise BackupError(f"manifest malformed: {exc}") from None


# --- tempstore ---------------------------------------------------------------------------------------------


def is_tempstore(path: Path) -> bool:
    """True for the 附票 server's temporary area: a directory named `tempstore` or marked `TEMPSTORE`."""
    return TEMPSTORE_DIR in (path.name, path.resolve().name) or (path / TEMPSTORE_MARKER).exists()


def mark_tempstore(path: Path) -> None:
    """Mark a directory as a temporary area (一時保存領域) that no backup may ever include."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    marker = path / TEMPSTORE_MARKER
    if not marker.exists():
        marker.write_text("一時保存領域: never backed up (SPEC §5.3); see server/backup/archive.py\n")


# --- sealing -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Header:
    chunk_size: int
    manifest_area: int
    backup_id: bytes
    key_id: bytes
    nonce_prefix: bytes

    @property
    def raw(self) -> bytes:
        return _HEADER.pack(
            MAGIC,
            VERSION,
            0,
            self.chunk_size,
            self.manifest_area,
            self.backup_id,
            self.key_id,
            self.nonce_prefix,
        )

    @classmethod
    def parse(cls, raw: bytes) -> _Header:
        if not raw:
            raise BackupError("archive truncated: the file is empty")
        if raw[: len(MAGIC)] != MAGIC[: len(raw)]:
            raise BackupError("not a jukinet backup archive (no JUKI-BKP header)")
        if len(raw) < _HEADER.size:
            raise BackupError("archive truncated: it ends inside its header")
        _, version, flags, chunk_size, area, backup_id, kid, prefix = _HEADER.unpack(raw)
        if version != VERSION or flags != 0:
            raise BackupError(
                f"unsupported archive version {version} (flags {flags:#x}); this reads {VERSION}"
            )
        if not 0 < chunk_size <= _MAX_CHUNK_SIZE or not _TAG < area <= _MAX_MANIFEST_AREA:
            raise BackupError("archive header corrupted: impossible chunk size or manifest size")
        return cls(chunk_size, area, backup_id, kid, prefix)


class _Sealer:
    """AES-256-GCM with this backup's own key; nonces and associated data as in the module docstring."""

    def __init__(self, key: bytes, header: _Header) -> None:
        backup_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=header.backup_id, info=b"jukinet backup v1"
        ).derive(key)
        self._aead = AESGCM(backup_key)
        self._prefix = header.nonce_prefix
        self._header = header.raw

    def _nonce_ad(self, index: int, section: int, final: bool) -> tuple[bytes, bytes]:
        return self._prefix + index.to_bytes(8, "big"), self._header + _CHUNK_AD.pack(index, section, final)

    def seal(self, index: int, section: int, final: bool, data: bytes) -> bytes:
        nonce, ad = self._nonce_ad(index, section, final)
        return self._aead.encrypt(nonce, data, ad)

    def open(self, index: int, section: int, final: bool, data: bytes) -> bytes:
        """The plaintext; raises InvalidTag when `data` is not chunk `index` of this archive, unaltered."""
        nonce, ad = self._nonce_ad(index, section, final)
        return self._aead.decrypt(nonce, data, ad)


def _check_key(key: bytes) -> None:
    if len(key) != KEY_BYTES:
        raise BackupError(f"a backup key is {KEY_BYTES} bytes, not {len(key)}")


# --- snapshots ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _snapshot(path: Path) -> Iterator[Snapshot]:
    """A consistent copy of the environment at `path` (server.storage.snapshot), failures as BackupError."""
    try:
        with Snapshot(path) as snapshot:
            yield snapshot
    except SnapshotError as exc:
        raise BackupError(str(exc)) from exc


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_sources(sources: Mapping[str, Path]) -> None:
    if not sources:
        raise BackupError("nothing to back up: no environment named")
    for name, path in sources.items():
        if not _NAME.fullmatch(name):
            raise BackupError(f"environment name {name!r} must be lower-case letters, digits, '-' or '_'")
        if is_tempstore(path):
            raise BackupError(
                f"{path} is a temporary area (一時保存領域: named `{TEMPSTORE_DIR}` or marked "
                f"`{TEMPSTORE_MARKER}`); it is never backed up"
            )
        if not (path / "data.mdb").is_file():
            raise BackupError(f"no LMDB environment (data.mdb) in {path}")


# --- create ------------------------------------------------------------------------------------------------


def create_backup(
    sources: Mapping[str, Path],
    out: Path,
    key: bytes,
    *,
    progress: Progress | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Manifest:
    """Snapshot each named environment directory (e.g. {"prefecture": var/data/prefecture}) into one sealed
    archive at `out`, while the servers keep running; written to a temporary file beside it, fsynced, then
    renamed over `out`. `progress` is called with the snapshot bytes each chunk adds.

    Run it in a process that does not hold the environments open (py-lmdb opens one once per process): the
    CLI, or `create_backup_in_child` from inside a server."""
    _check_key(key)
    _check_sources(sources)
    if not 0 < chunk_size <= _MAX_CHUNK_SIZE:
        raise BackupError(f"chunk size must be between 1 and {_MAX_CHUNK_SIZE} bytes")
    header = _Header(chunk_size, MANIFEST_AREA, secrets.token_bytes(16), key_id(key), secrets.token_bytes(4))
    sealer = _Sealer(key, header)
    started = datetime.now(UTC)
    out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = out.with_name(f".{out.name}.{header.backup_id.hex()[:12]}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as archive:
            archive.write(header.raw)
            archive.seek(_HEADER.size + header.manifest_area)  # the manifest goes there at the end
            environments: list[EnvironmentSnapshot] = []
            index = 1
            for ordinal, (name, path) in enumerate(sources.items()):
                snapshot, index = _seal_environment(
                    archive, sealer, ordinal, index, name, path, chunk_size, progress
                )
                environments.append(snapshot)
            manifest = Manifest(
                backup_id=header.backup_id.hex(),
                key_id=header.key_id.hex(),
                created_at=started,
                source_host=socket.gethostname(),
                chunk_size=chunk_size,
                environments=tuple(environments),
            )
            body = manifest.to_json()
            room = header.manifest_area - _TAG
            if len(body) > room:
                raise BackupError(
                    f"manifest of {len(body)} bytes does not fit its {room}: too many environments"
                )
            archive.seek(_HEADER.size)
            archive.write(sealer.seal(0, _MANIFEST_SECTION, True, body.ljust(room, b" ")))
            archive.flush()
            os.fsync(archive.fileno())
        os.rename(partial, out)
        _fsync_dir(out.parent)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return manifest


def _seal_environment(
    archive: IO[bytes],
    sealer: _Sealer,
    ordinal: int,
    index: int,
    name: str,
    path: Path,
    chunk_size: int,
    progress: Progress | None,
) -> tuple[EnvironmentSnapshot, int]:
    """Seal one environment's snapshot as chunks `index`…; returns it and the next chunk number."""
    digest = hashlib.sha256()
    size = chunks = 0
    with _snapshot(path) as snapshot:
        pending = snapshot.read(chunk_size)
        while True:
            # Read one chunk ahead: only then is it known whether `pending` is the last.
            following = snapshot.read(chunk_size) if len(pending) == chunk_size else b""
            final = not following
            digest.update(pending)
            archive.write(sealer.seal(index, ordinal, final, pending))
            size += len(pending)
            chunks += 1
            index += 1
            if progress is not None:
                progress(len(pending))
            if final:
                break
            pending = following
    return EnvironmentSnapshot(name, size, digest.hexdigest(), chunks, snapshot.txn_id), index


# --- read, verify, restore ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Slot:
    """Where chunk `index` belongs: its environment, its place there and its plaintext length."""

    index: int
    ordinal: int
    number: int  # 1-based within the environment
    final: bool
    length: int


def _layout(manifest: Manifest) -> list[_Slot]:
    slots: list[_Slot] = []
    index = 1
    for ordinal, env in enumerate(manifest.environments):
        expected = max(1, -(-env.size // manifest.chunk_size))
        if env.chunks != expected or env.size < 0 or not _NAME.fullmatch(env.name):
            raise BackupError(f"manifest inconsistent for environment {env.name!r}")
        for i in range(env.chunks):
            final = i == env.chunks - 1
            length = env.size - i * manifest.chunk_size if final else manifest.chunk_size
            slots.append(_Slot(index, ordinal, i + 1, final, length))
            index += 1
    return slots


def _open_archive(archive: IO[bytes], key: bytes) -> tuple[_Sealer, Manifest]:
    """Read and check the header and the manifest."""
    _check_key(key)
    header = _Header.parse(_read_exact(archive, _HEADER.size))
    given = key_id(key)
    if header.key_id != given:
        raise BackupError(
            f"wrong key: the archive was sealed with key id {header.key_id.hex()}, "
            f"this key's id is {given.hex()} (or the header is corrupted)"
        )
    sealer = _Sealer(key, header)
    sealed = _read_exact(archive, header.manifest_area)
    if len(sealed) < header.manifest_area:
        raise BackupError("archive truncated: it ends inside its manifest")
    try:
        body = sealer.open(0, _MANIFEST_SECTION, True, sealed)
    except InvalidTag:
        raise BackupError(
            "manifest corrupted: it fails authentication (the header or manifest was altered)"
        ) from None
    manifest = Manifest.from_json(body)
    if manifest.backup_id != header.backup_id.hex() or manifest.chunk_size != header.chunk_size:
        raise BackupError("manifest does not belong to this archive's header")
    return sealer, manifest


def archive_key_id(path: Path) -> str:
    """The id of the key an archive was sealed with (from its clear header; no key needed)."""
    with path.open("rb") as archive:
        return _Header.parse(_read_exact(archive, _HEADER.size)).key_id.hex()


def read_manifest(path: Path, key: bytes) -> Manifest:
    """The manifest alone (header and manifest checked, data chunks not read)."""
    with path.open("rb") as archive:
        return _open_archive(archive, key)[1]


def _chunks(
    archive: IO[bytes], sealer: _Sealer, manifest: Manifest, progress: Progress | None
) -> Iterator[tuple[EnvironmentSnapshot, bytes, bool]]:
    """Every chunk opened and checked, in order: (environment, plaintext, last of its environment). An
    environment's checksum is checked before its last chunk is handed out."""
    slots = _layout(manifest)
    total = len(slots)
    digest = hashlib.sha256()
    for slot in slots:
        env = manifest.environments[slot.ordinal]
        where = f"chunk {slot.index} of {total} (environment {env.name!r}: {slot.number} of {env.chunks})"
        sealed = _read_exact(archive, slot.length + _TAG)
        if len(sealed) < slot.length + _TAG:
            raise BackupError(f"archive truncated: it ends in {where}")
        try:
            plain = sealer.open(slot.index, slot.ordinal, slot.final, sealed)
        except InvalidTag:
            raise BackupError(_misplaced(sealer, slots, slot, sealed) or f"{where} is corrupted") from None
        digest.update(plain)
        if progress is not None:
            progress(len(plain))
        if slot.final:
            if digest.hexdigest() != env.sha256:
                raise BackupError(
                    f"checksum mismatch for environment {env.name!r}: the snapshot is not the one sealed"
                )
            digest = hashlib.sha256()
        yield env, plain, slot.final
    if archive.read(1):
        raise BackupError(f"archive corrupted: data after its last chunk ({total})")


def _misplaced(sealer: _Sealer, slots: list[_Slot], slot: _Slot, sealed: bytes) -> str | None:
    """When a chunk fails where it stands, whether it is another chunk of this archive out of its place."""
    candidates = sorted(
        (s for s in slots if s.index != slot.index and s.length == slot.length),
        key=lambda s: abs(s.index - slot.index),
    )
    for other in candidates[:_REORDER_PROBES]:
        try:
            sealer.open(other.index, other.ordinal, other.final, sealed)
        except InvalidTag:
            continue
        return (
            f"chunks out of order (reordered or dropped): position {slot.index} of {len(slots)} "
            f"holds chunk {other.index}"
        )
    return None


def verify_backup(path: Path, key: bytes, *, progress: Progress | None = None) -> Manifest:
    """Open and check every chunk and every checksum, writing nothing; raises BackupError naming the fault."""
    with path.open("rb") as archive:
        sealer, manifest = _open_archive(archive, key)
        for _ in _chunks(archive, sealer, manifest, progress):
            pass
    return manifest


def restore_backup(path: Path, key: bytes, target_dir: Path, *, progress: Progress | None = None) -> Manifest:
    """Restore into a new directory `target_dir`, one sub-directory per environment holding `data.mdb`.

    Verified while written; the directory appears (by rename) only once every chunk and checksum passed. On
    any failure nothing written is left behind.
    """
    if target_dir.exists() and (not target_dir.is_dir() or any(target_dir.iterdir())):
        raise BackupError(f"{target_dir} exists and is not empty: restore only into a new directory")
    with path.open("rb") as archive:
        sealer, manifest = _open_archive(archive, key)
        made = _make_parents(target_dir.parent)
        staging = target_dir.parent / f".{target_dir.name}.restoring-{secrets.token_hex(6)}"
        out: IO[bytes] | None = None
        try:
            staging.mkdir(mode=0o700)
            for env, plain, final in _chunks(archive, sealer, manifest, progress):
                if out is None:
                    env_dir = staging / env.name
                    env_dir.mkdir(mode=0o700)
                    out = os.fdopen(
                        os.open(env_dir / "data.mdb", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb"
                    )
                out.write(plain)
                if final:
                    out.flush()
                    os.fsync(out.fileno())
                    out.close()
                    out = None
                    _fsync_dir(staging / env.name)
            _fsync_dir(staging)
            os.rename(staging, target_dir)  # onto nothing, or onto an empty directory
            _fsync_dir(target_dir.parent)
        except BaseException:
            if out is not None:
                out.close()
            shutil.rmtree(staging, ignore_errors=True)
            for directory in made:
                _remove_if_empty(directory)
            raise
    return manifest


def _make_parents(directory: Path) -> list[Path]:
    """Create `directory` and its missing parents; the ones created, deepest first."""
    missing: list[Path] = []
    current = directory.absolute()
    while not current.exists():
        missing.append(current)
        current = current.parent
    for made in reversed(missing):
        made.mkdir(mode=0o700)
    return missing


def _remove_if_empty(directory: Path) -> None:
    with contextlib.suppress(OSError):
        directory.rmdir()
