"""Data-at-rest protection for My Number (SPEC §4.3).

My Number is sealed with AES-256-GCM (random 96-bit nonce, the resident code as associated data, so a
sealed value cannot be moved to another record) and found through an HMAC-SHA-256 index. The two keys live
in a key file outside the data directory, written 0600. Any other digest a store keeps over data that may
hold a My Number (an applied notice's, for idempotent replay) is keyed too (`keyed_digest`): a plain hash
of such data would give the number away to brute force, the other items being in clear beside it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_NONCE = 12
# The key of stored digests is derived from the index key (one key file, nothing new to keep), apart from
# it by this label.
_DIGEST_KEY_LABEL = b"jukinet stored-digest key v1"


@dataclass(frozen=True)
class DataKeys:
    """The prefectural server's data keys."""

    my_number_key: bytes  # AES-256-GCM
    my_number_index_key: bytes  # HMAC-SHA-256

    @classmethod
    def generate(cls) -> DataKeys:
        return cls(secrets.token_bytes(32), secrets.token_bytes(32))

    @classmethod
    def load(cls, path: Path) -> DataKeys:
        raw = json.loads(path.read_text())
        keys = cls(base64.b64decode(raw["my_number_key"]), base64.b64decode(raw["my_number_index_key"]))
        if len(keys.my_number_key) != 32 or len(keys.my_number_index_key) != 32:
            raise ValueError(f"key file {path} holds keys of the wrong length")
        return keys

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        body = json.dumps(
            {
                "my_number_key": base64.b64encode(self.my_number_key).decode(),
                "my_number_index_key": base64.b64encode(self.my_number_index_key).decode(),
            }
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(body)

    @classmethod
    def load_or_create(cls, path: Path) -> DataKeys:
        if path.exists():
            return cls.load(path)
        keys = cls.generate()
        keys.save(path)
        return keys


class MyNumberSealer:
    """Seals and opens My Numbers and computes their index keys."""

    def __init__(self, keys: DataKeys) -> None:
        self._aead = AESGCM(keys.my_number_key)
        # The HMAC with its key already absorbed; each index key starts from a copy (a third faster than
        # hmac.digest, which sets the key up again every time: it counts when 2 million are computed).
        self._index_hmac = hmac.new(keys.my_number_index_key, digestmod=hashlib.sha256)
        digest_key = hmac.digest(keys.my_number_index_key, _DIGEST_KEY_LABEL, "sha256")
        self._digest_hmac = hmac.new(digest_key, digestmod=hashlib.sha256)

    def seal(self, resident_code: str, my_number: str) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, my_number.encode(), resident_code.encode())

    def open(self, resident_code: str, sealed: bytes) -> str:
        return self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], resident_code.encode()).decode()

    def seal_blob(self, context: bytes, data: bytes) -> bytes:
        """Seal any bytes that may hold a My Number (e.g. an outbox entry), bound to `context`."""
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, data, b"blob:" + context)

    def open_blob(self, context: bytes, sealed: bytes) -> bytes:
        return self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], b"blob:" + context)

    def index_key(self, my_number: str) -> bytes:
        mac = self._index_hmac.copy()
        mac.update(my_number.encode())
        return mac.digest()

    def keyed_digest(self, digest: bytes) -> bytes:
        """HMAC-SHA-256 of a digest (e.g. SHA-256 of a notice) that may cover a My Number: what a store keeps
        in its place. Keying the digest rather than the data lets a store written with plain digests be
        migrated in place."""
        mac = self._digest_hmac.copy()
        mac.update(digest)
        return mac.digest()
