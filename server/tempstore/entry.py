"""One entry of the temporary area (一時保存領域): its own key, and its sealed form on disk.

Each entry is sealed with AES-256-GCM under a key made for it alone and used once. The key lives in a
`bytearray` so that it can be overwritten in place when the entry is erased; it is read from the kernel's
random source straight into that buffer, so no immutable copy of it is ever made by this module.

On disk (the LMDB value under the request id), all integers big-endian:

  format u8 (1), owner length u16, owner (UTF-8), nonce (12 bytes), ciphertext with its 16-byte tag

The owner is stored in clear beside the ciphertext so that it can be compared before anything is decrypted;
it is also bound into the associated data, with the request id, so that a sealed value moved to another
request id or relabelled with another owner fails authentication.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT = 1
KEY_BYTES = 32
NONCE_BYTES = 12
MAX_OWNER_BYTES = 2048

_HEAD = struct.Struct(">BH")
_AD_PREFIX = b"jukinet tempstore v1\x00"
_AD_PART = struct.Struct(">H")


class MalformedEntry(ValueError):
    """A stored value that is not a sealed entry of this format."""


def new_key() -> bytearray:
    """A fresh random 256-bit key, in a buffer that `wipe` can overwrite."""
    key = bytearray(KEY_BYTES)
    try:
        with open("/dev/urandom", "rb", buffering=0) as source:
            view = memoryview(key)
            filled = 0
            while filled < KEY_BYTES:
                got = source.readinto(view[filled:])
                if not got:
                    raise OSError("short read from /dev/urandom")
                filled += got
    except OSError:  # no /dev/urandom (not Linux or a BSD): one short-lived immutable copy, then the buffer
        key[:] = secrets.token_bytes(KEY_BYTES)
    return key


def wipe(key: bytearray) -> None:
    """Overwrite a key in place (same length, so the buffer is not reallocated)."""
    key[:] = bytes(len(key))


def associated_data(request_id: str, owner: str) -> bytes:
    """The request id and the owner, length-prefixed so that no two pairs give the same bytes."""
    rid = request_id.encode("ascii")
    own = owner.encode("utf-8")
    return _AD_PREFIX + _AD_PART.pack(len(rid)) + rid + _AD_PART.pack(len(own)) + own


@dataclass(frozen=True)
class SealedEntry:
    """What the disk holds for one request id: the owner in clear, the nonce and the ciphertext."""

    owner: str
    nonce: bytes
    ciphertext: bytes

    def encode(self) -> bytes:
        own = self.owner.encode("utf-8")
        return _HEAD.pack(FORMAT, len(own)) + own + self.nonce + self.ciphertext

    @classmethod
    def decode(cls, raw: bytes) -> SealedEntry:
        if len(raw) < _HEAD.size:
            raise MalformedEntry("stored entry too short")
        version, owner_length = _HEAD.unpack_from(raw)
        if version != FORMAT:
            raise MalformedEntry(f"stored entry of unknown format {version}")
        start = _HEAD.size + owner_length
        if len(raw) < start + NONCE_BYTES + 16:
            raise MalformedEntry("stored entry truncated")
        try:
            owner = raw[_HEAD.size : start].decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedEntry("stored entry's owner is not UTF-8") from None
        return cls(owner, raw[start : start + NONCE_BYTES], raw[start + NONCE_BYTES :])


def seal(key: bytearray, request_id: str, owner: str, payload: bytes) -> SealedEntry:
    """Seal `payload` for (`request_id`, `owner`) under `key`."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    ciphertext = AESGCM(key).encrypt(nonce, payload, associated_data(request_id, owner))
    return SealedEntry(owner, nonce, ciphertext)


def unseal(key: bytearray, request_id: str, entry: SealedEntry) -> bytes:
    """The payload; InvalidTag (cryptography) when `entry` was not sealed for this id, owner and key."""
    return AESGCM(key).decrypt(entry.nonce, entry.ciphertext, associated_data(request_id, entry.owner))


def valid_owner(owner: str) -> bool:
    """A caller identity that fits the format: 1–2048 bytes of UTF-8, no NUL."""
    return 0 < len(owner.encode("utf-8")) <= MAX_OWNER_BYTES and "\x00" not in owner
