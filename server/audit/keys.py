"""The audit trail's keys: an Ed25519 key that signs checkpoints and an HMAC key for subjects.

The server holds both in one key file (0600, outside the trail directory). An auditor gets the public key
(to verify) and the subject key (to find a resident's entries by resident code, SPEC §4.3) — never the
signing key, so whoever reads the trail cannot forge a checkpoint.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

log = logging.getLogger(__name__)

SUBJECT_HASH_HEX = 32  # 128 bits of HMAC-SHA-256: no collisions among a prefecture's residents


def subject_hash(subject_key: bytes, resident_code: str) -> str:
    """The keyed hash that stands for a resident in the trail (hex HMAC-SHA-256, first 32 digits)."""
    return hmac.digest(subject_key, resident_code.encode(), "sha256").hex()[:SUBJECT_HASH_HEX]


def _write_private(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())


def _warn_if_readable(path: Path) -> None:
    if path.stat().st_mode & 0o077:
        log.warning("audit key file is readable by others", extra={"path": str(path)})


def load_public_key(source: Path | bytes | Ed25519PublicKey) -> Ed25519PublicKey:
    """The checkpoint verification key from a PEM file, PEM bytes or the key itself."""
    if isinstance(source, Ed25519PublicKey):
        return source
    pem = source.read_bytes() if isinstance(source, Path) else source
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the audit public key must be an Ed25519 key")
    return key


def _public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class AuditKeys:
    """The server's audit keys (監査証跡の署名鍵と対象者ハッシュ鍵)."""

    signing_key: Ed25519PrivateKey
    subject_key: bytes  # 32 random bytes

    @classmethod
    def generate(cls) -> AuditKeys:
        return cls(Ed25519PrivateKey.generate(), secrets.token_bytes(32))

    @classmethod
    def load(cls, path: Path) -> AuditKeys:
        raw = json.loads(path.read_text())
        keys = cls(
            Ed25519PrivateKey.from_private_bytes(base64.b64decode(raw["signing_key"])),
            base64.b64decode(raw["subject_key"]),
        )
        if len(keys.subject_key) != 32:
            raise ValueError(f"audit key file {path} holds a subject key of the wrong length")
        _warn_if_readable(path)
        return keys

    def save(self, path: Path) -> None:
        """Write the key file, 0600, refusing to overwrite one."""
        private = self.signing_key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        body = {
            "signing_key": base64.b64encode(private).decode(),
            "subject_key": base64.b64encode(self.subject_key).decode(),
        }
        _write_private(path, json.dumps(body))

    @classmethod
    def load_or_create(cls, path: Path) -> AuditKeys:
        if path.exists():
            return cls.load(path)
        keys = cls.generate()
        try:
            keys.save(path)
        except FileExistsError:  # another process created it first: use theirs
            return cls.load(path)
        return keys

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.signing_key.public_key()

    def public_key_pem(self) -> bytes:
        return _public_pem(self.public_key)

    def write_public_key(self, path: Path) -> None:
        """The PEM public key an auditor verifies checkpoints with."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.public_key_pem())

    def subject_hash(self, resident_code: str) -> str:
        return subject_hash(self.subject_key, resident_code)

    def auditor_keys(self) -> AuditorKeys:
        return AuditorKeys(self.public_key, self.subject_key)

    def write_auditor_keys(self, path: Path) -> None:
        """The auditor's key file (0600): public key and subject key, no signing key."""
        self.auditor_keys().save(path)


@dataclass(frozen=True)
class AuditorKeys:
    """What the auditor (セキュリティ責任者) holds: verify checkpoints, hash resident codes to search."""

    public_key: Ed25519PublicKey
    subject_key: bytes

    @classmethod
    def load(cls, path: Path) -> AuditorKeys:
        raw = json.loads(path.read_text())
        _warn_if_readable(path)
        return cls(load_public_key(raw["public_key"].encode()), base64.b64decode(raw["subject_key"]))

    def save(self, path: Path) -> None:
        body = {
            "public_key": _public_pem(self.public_key).decode(),
            "subject_key": base64.b64encode(self.subject_key).decode(),
        }
        _write_private(path, json.dumps(body))

    def subject_hash(self, resident_code: str) -> str:
        return subject_hash(self.subject_key, resident_code)


@dataclass(frozen=True)
class WitnessKey:
    """A witness's Ed25519 cosigning key and its key name (e.g. `juki.mie/witness/national`)."""

    name: str
    signing_key: Ed25519PrivateKey

    @classmethod
    def load_or_create(cls, path: Path, name: str) -> WitnessKey:
        """The key in `path` (0600), created with `name` when there is none; its name is the file's."""
        if not path.exists():
            private = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
            body = {"name": name, "signing_key": base64.b64encode(private).decode()}
            with contextlib.suppress(FileExistsError):  # another process created it first: use theirs
                _write_private(path, json.dumps(body))
        raw = json.loads(path.read_text())
        _warn_if_readable(path)
        return cls(
            str(raw["name"]), Ed25519PrivateKey.from_private_bytes(base64.b64decode(raw["signing_key"]))
        )

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.signing_key.public_key()

    def write_public(self, path: Path) -> None:
        """What an auditor checks cosignatures with: the name and the PEM public key (no secret)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"name": self.name, "public_key": _public_pem(self.public_key).decode()}))


def load_witness_public(path: Path) -> tuple[str, Ed25519PublicKey]:
    """(name, public key) of a witness, from the file `WitnessKey.write_public` wrote."""
    raw = json.loads(path.read_text())
    return str(raw["name"]), load_public_key(str(raw["public_key"]).encode())
